"""The one place where access to every route is decided.

:func:`init_access` installs a ``before_request`` hook that calls :func:`check_access`
for every request (DICOMweb, pages, health checks, static files). The hook stores the
caller's :class:`~pacs_lite.catalog.Visibility` on ``flask.g``; every catalog query a
view makes takes that visibility (:func:`viewer.context.visibility`), so a view cannot
forget to filter.

Who is admitted:

* a request with ``Authorization: Bearer <token>`` from any address, when the token is valid
  (:mod:`pacs_lite.catalog.partners`); a garbage, expired or revoked token is 401 with
  ``WWW-Authenticate: Bearer``. A partner's token sees only the partner's studies
  (:class:`~pacs_lite.catalog.partners.PartnerVisibility`, an SQL condition every catalog query takes);
* without a token, loopback clients (unless ``[security] loopback_trusted = false``: 401) and the
  networks of ``[http] allow_from``, as the local operator with every right; other addresses get 403.

:meth:`AccessPolicy.authorize` checks roles for sensitive actions (``"store"``, ``"delete"``).
Every DICOMweb request, every page under ``/ui/`` and every refused request leaves one row in
the ``audit_events`` table (:func:`audit` adds the action and outcome a view knows best).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from flask import Flask, Request, Response, g, request
from sqlalchemy import ColumnElement, false

from pacs_lite.catalog import EVERYTHING, Visibility
from pacs_lite.catalog.partners import SCOPE_ROLES, PartnerVisibility, verify_token, write_audit

from .context import state
from .errors import ApiError

log = logging.getLogger(__name__)
audit_log = logging.getLogger("pacs_lite.audit")


@dataclass(frozen=True)
class Principal:
    """Who is calling: a name for the audit trail and the roles granted."""

    name: str
    roles: frozenset[str] = field(default_factory=frozenset)
    #: the partner hospital a token belongs to (``None``: the local operator)
    partner: str | None = None


#: A caller that has not authenticated (CORS preflight requests).
ANONYMOUS = Principal("anonymous")

#: The caller without a token on a trusted address (loopback, ``[http] allow_from``).
LOCAL_OPERATOR = Principal("local", frozenset({"read", "write", "admin", "operator"}))

#: Paths that reveal no patient data: reachable without a token from admitted addresses.
PUBLIC_PATHS = ("/healthz", "/readyz", "/static/")

BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="pacs-lite"'}


class _Nothing(Visibility):
    """Sees no study (callers that are not identified)."""

    def study_condition(self) -> ColumnElement[bool]:
        return false()


NOTHING = _Nothing()


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

    def __init__(self, *, allow_remote: bool = False, allow_from: Sequence[str] = (),
                 loopback_trusted: bool = True) -> None:
        self.allow_remote = allow_remote
        self.allow_from = tuple(ipaddress.ip_network(n, strict=False) for n in allow_from)
        self.loopback_trusted = loopback_trusted

    def admitted_network(self, address: str | None) -> bool:
        """Whether ``address`` is in one of the :attr:`allow_from` networks."""
        if not self.allow_from or not address:
            return False
        ip = client_ip(address)
        return ip is not None and any(ip.version == net.version and ip in net for net in self.allow_from)

    def check(self, req: Request) -> Visibility:
        """Admit or refuse ``req``; return the visibility its catalog queries must use."""
        if req.headers.get("Authorization") is None:
            self.check_network(req)  # token holders are authenticated from anywhere
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
        """Who makes the request: a token's partner, or the local operator (401 when neither)."""
        header = req.headers.get("Authorization")
        if header is not None:
            scheme, _, token = header.strip().partition(" ")
            info = verify_token(state().archive.catalog, token.strip()) if scheme.lower() == "bearer" else None
            if info is None:
                audit("authenticate", "refused", reason="invalid token")
                raise ApiError(401, "invalid, expired or revoked token",
                               headers={"WWW-Authenticate": 'Bearer realm="pacs-lite", error="invalid_token"'})
            return Principal(f"token:{info.id}:{info.partner}", SCOPE_ROLES[info.scope], partner=info.partner)
        if self.allow_remote or self.admitted_network(req.remote_addr) or self.loopback_trusted:
            return LOCAL_OPERATOR  # check_network admitted the address
        if req.path.startswith(PUBLIC_PATHS):
            return ANONYMOUS
        audit("authenticate", "refused", reason="no token")
        raise ApiError(401, "a token is needed (Authorization: Bearer ...)", headers=BEARER_CHALLENGE)

    def visibility_for(self, principal: Principal) -> Visibility:
        """Which studies ``principal`` may see: a partner its own, the local operator everything."""
        if principal.partner is not None:
            return PartnerVisibility(principal.partner)
        return EVERYTHING if "read" in principal.roles else NOTHING

    def authorize(self, principal: Principal, action: str) -> None:
        """Refuse (403) unless ``principal`` may perform ``action`` (e.g. ``"delete"``)."""
        needed = {"delete": "admin", "store": "write", "metrics": "operator"}.get(action, "read")
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
    """Name the action and outcome of this request for its audit row (the last call wins).

    ``study`` is the study UID; other details (counts, reasons) go to the row's ``detail``.
    Never pass patient names or IDs, nor tokens.
    """
    g.audit = (action, outcome, details)


def _default_action() -> str:
    if request.path.startswith("/dicomweb"):
        if request.method == "POST":
            return "store"
        if request.method == "DELETE":
            return "delete"
        endpoint = request.endpoint or ""
        return "query" if endpoint.startswith("dicomweb.search_") else "retrieve"
    if request.path.startswith("/ui"):
        return "view"
    return "access"


def _default_outcome(status: int) -> str:
    if status < 400:
        return "success"
    return {401: "refused", 403: "refused", 404: "not-found", 405: "refused"}.get(status, "failure")


def _audited(response: Response) -> Response:
    """One audit row for each DICOMweb request, each page under /ui/ and each refused request."""
    explicit = g.get("audit")
    path = request.path
    patient_data = (path.startswith("/dicomweb") or path.startswith("/ui")) and request.method != "OPTIONS"
    if explicit is None and not patient_data and response.status_code not in (401, 403):
        return response
    action, outcome, details = explicit or (_default_action(), _default_outcome(response.status_code), {})
    if response.status_code >= 400 and outcome in ("success", "started"):
        outcome = _default_outcome(response.status_code)
    details = dict(details)
    study = details.pop("study", None) or (request.view_args or {}).get("study") or ""
    principal = g.get("principal")
    who = principal.name if principal is not None else "-"
    detail = " ".join(f"{k}={v}" for k, v in sorted(details.items()))
    audit_log.info("%s %s by %s from %s (%s)", action, outcome, who, request.remote_addr, response.status_code)
    try:
        write_audit(state().archive.catalog, who=who, address=request.remote_addr or "", action=action,
                    study=study, outcome=outcome, status=response.status_code, detail=detail)
    except Exception as exc:  # noqa: BLE001 - the response stands; the failure is logged loudly
        log.error("audit event not written (%s %s by %s): %s", action, outcome, who, type(exc).__name__)
    return response


def _before_request() -> None:
    g.visibility = check_access(request)


def init_access(app: Flask) -> None:
    """Check every request of ``app`` before any view runs; audit it after."""
    app.before_request(_before_request)
    app.after_request(_audited)
