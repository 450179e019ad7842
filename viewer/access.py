"""The one place where access to every route is decided.

:func:`init_access` installs a ``before_request`` hook that calls :func:`check_access`
for every request (DICOMweb, pages, health checks, static files). The hook stores the
caller's :class:`~pacs_lite.catalog.Visibility` on ``flask.g``; every catalog query a
view makes takes that visibility (:func:`viewer.context.visibility`), so a view cannot
forget to filter.

Today, without the security feature, :class:`AccessPolicy` admits loopback clients and the
networks of ``[http] allow_from`` only (403 otherwise) and everyone admitted sees everything. The security feature plugs in
here, and only here:

* :meth:`AccessPolicy.authenticate` validates ``Authorization: Bearer`` tokens and
  returns a :class:`Principal` (401 on failure);
* :meth:`AccessPolicy.visibility_for` returns a partner-scoped ``Visibility``;
* :meth:`AccessPolicy.authorize` checks roles for sensitive actions (``"delete"``);
* :func:`audit` sends events to the audit sink instead of the log.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from flask import Flask, Request, g, request

from pacs_lite.catalog import EVERYTHING, Visibility

from .context import state
from .errors import ApiError

log = logging.getLogger(__name__)
audit_log = logging.getLogger("pacs_lite.audit")


@dataclass(frozen=True)
class Principal:
    """Who is calling: a name for the audit trail and the roles granted."""

    name: str
    roles: frozenset[str] = field(default_factory=frozenset)


#: A caller that has not authenticated (CORS preflight requests).
ANONYMOUS = Principal("anonymous")

#: The caller on a loopback connection while there is no authentication.
LOCAL_OPERATOR = Principal("local", frozenset({"read", "write", "admin"}))


def client_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client's IP address (IPv4-mapped IPv6 as IPv4, zone dropped), or ``None`` if it is none."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_loopback(address: str | None) -> bool:
    """Whether ``address`` is a loopback client (an empty address is a Unix socket: local)."""
    if not address:
        return True
    ip = client_ip(address)
    return ip is not None and ip.is_loopback


class AccessPolicy:
    """Decides whether a request may proceed, who makes it, and what it may see.

    Parameters
    ----------
    allow_remote
        Admit clients that are not on a loopback address. Only safe once
        authentication is in place (or behind a trusted proxy that enforces it).
    allow_from
        Addresses or networks (``"192.0.2.0/24"``) admitted besides loopback: ``[http] allow_from``,
        for a trusted network, or the container network a published port is reached through.
    """

    def __init__(self, *, allow_remote: bool = False, allow_from: Sequence[str] = ()) -> None:
        self.allow_remote = allow_remote
        self.allow_from = tuple(ipaddress.ip_network(n, strict=False) for n in allow_from)

    def admitted_network(self, address: str | None) -> bool:
        """Whether ``address`` is in one of the :attr:`allow_from` networks."""
        if not self.allow_from or not address:
            return False
        ip = client_ip(address)
        return ip is not None and any(ip.version == net.version and ip in net for net in self.allow_from)

    def check(self, req: Request) -> Visibility:
        """Admit or refuse ``req``; return the visibility its catalog queries must use."""
        self.check_network(req)
        # CORS preflights carry no credentials by design; they reach no data either
        principal = ANONYMOUS if req.method == "OPTIONS" else self.authenticate(req)
        g.principal = principal
        return self.visibility_for(principal)

    def check_network(self, req: Request) -> None:
        """Refuse clients that are neither loopback nor in ``allow_from`` unless remote access is allowed (403)."""
        if self.allow_remote or self.admitted_network(req.remote_addr):
            return
        if not is_loopback(req.remote_addr):
            audit("access", "refused", reason="non-loopback client")
            raise ApiError(403, "access from this address is not allowed (loopback only)")
        if req.headers.get("Forwarded") or req.headers.get("X-Forwarded-For"):
            # a reverse proxy on this host would make every remote client look local
            audit("access", "refused", reason="proxied request")
            raise ApiError(403, "proxied requests are not allowed without authentication (loopback only)")

    def authenticate(self, req: Request) -> Principal:
        """Who makes the request. Seam for bearer tokens (401 when invalid)."""
        return LOCAL_OPERATOR

    def visibility_for(self, principal: Principal) -> Visibility:
        """Which studies ``principal`` may see. Seam for partner scoping."""
        return EVERYTHING

    def authorize(self, principal: Principal, action: str) -> None:
        """Refuse (403) unless ``principal`` may perform ``action`` (e.g. ``"delete"``)."""
        needed = {"delete": "admin", "store": "write"}.get(action, "read")
        if needed not in principal.roles:
            audit(action, "refused", principal=principal.name)
            raise ApiError(403, f"the {action!r} action needs the {needed!r} role")


def check_access(req: Request) -> Visibility:
    """Check ``req`` against the application's :class:`AccessPolicy`; return its visibility."""
    return state().access.check(req)


def authorize(action: str) -> None:
    """Check that the current caller may perform ``action`` (403 otherwise)."""
    principal = g.get("principal")
    if principal is None:
        raise ApiError(403, "request did not pass the access check")
    state().access.authorize(principal, action)


def audit(action: str, outcome: str, **details: str) -> None:
    """Record an auditable event. Seam for the audit sink; never pass patient data here."""
    principal = g.get("principal")
    who = principal.name if principal is not None else "-"
    extra = " ".join(f"{k}={v}" for k, v in sorted(details.items()))
    audit_log.info("%s %s by %s from %s %s", action, outcome, who, request.remote_addr, extra)


def _before_request() -> None:
    g.visibility = check_access(request)


def init_access(app: Flask) -> None:
    """Check every request of ``app`` before any view runs."""
    app.before_request(_before_request)
