"""Partner hospitals: API tokens, study shares, the partner-scoped :class:`Visibility`, the audit trail.

A token is ``pl_<prefix>_<secret>``: the prefix (public, 12 hex digits) finds the row, the
secret (32 random bytes, URL-safe base64) is kept only as its SHA-256 and compared in
constant time. Tokens are high-entropy, so a plain SHA-256 is enough (no slow KDF).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import ColumnElement, delete, exists, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from .catalog import Catalog, Visibility
from .models import ApiToken, AuditEvent, Study, StudyShare, utcnow

SCOPES = ("read", "write", "admin")
#: roles a scope grants (the access policy checks roles)
SCOPE_ROLES = {"read": frozenset({"read"}), "write": frozenset({"read", "write"}),
               "admin": frozenset({"read", "write", "admin"})}
_TOKEN = re.compile(r"^pl_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_PARTNER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_DURATION = re.compile(r"^(\d+)([dhm])$")


class PartnerError(ValueError):
    """A bad partner name, scope, duration or unknown token/study."""


@dataclass(frozen=True)
class TokenInfo:
    """A token as listed (never the secret)."""

    id: int
    partner: str
    scope: str
    created: dt.datetime
    expires: dt.datetime | None
    revoked: dt.datetime | None


def check_partner(name: str) -> str:
    if not _PARTNER.match(name):
        raise PartnerError(f"partner name: letters, digits, '.', '_', '-' (at most 64), got {name!r}")
    return name


def parse_duration(text: str) -> dt.timedelta:
    """``30d``, ``12h`` or ``45m``."""
    m = _DURATION.match(text.strip())
    if not m or int(m.group(1)) == 0:
        raise PartnerError(f"duration: a number followed by d, h or m (e.g. 30d), got {text!r}")
    n, unit = int(m.group(1)), m.group(2)
    return {"d": dt.timedelta(days=n), "h": dt.timedelta(hours=n), "m": dt.timedelta(minutes=n)}[unit]


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def create_token(catalog: Catalog, partner: str, scope: str, expires_in: dt.timedelta | None = None) -> tuple[int, str]:
    """A new token for ``partner``: (its id, the token). The token is shown once and never stored."""
    check_partner(partner)
    if scope not in SCOPES:
        raise PartnerError(f"scope: one of {', '.join(SCOPES)}, got {scope!r}")
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    now = utcnow()
    with catalog.writer() as s:
        row = ApiToken(prefix=prefix, secret_sha256=_digest(secret), partner=partner, scope=scope, created_at=now,
                       expires_at=now + expires_in if expires_in else None)
        s.add(row)
        s.flush()
        token_id = row.id
    return token_id, f"pl_{prefix}_{secret}"


def verify_token(catalog: Catalog, token: str) -> TokenInfo | None:
    """The valid (known, unexpired, unrevoked) token ``token`` is, or ``None``."""
    m = _TOKEN.match(token)
    if not m:
        return None
    with catalog.reader() as s:
        row = s.scalars(select(ApiToken).where(ApiToken.prefix == m.group(1))).first()
        if row is None:
            hmac.compare_digest(_digest(m.group(2)), "0" * 64)  # same work whether the prefix exists or not
            return None
        if not hmac.compare_digest(_digest(m.group(2)), row.secret_sha256):
            return None
        if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= utcnow()):
            return None
        return _info(row)


def _info(row: ApiToken) -> TokenInfo:
    return TokenInfo(row.id, row.partner, row.scope, row.created_at, row.expires_at, row.revoked_at)


def any_token(catalog: Catalog) -> bool:
    """Whether any usable token exists (unrevoked, unexpired)."""
    now = utcnow()
    with catalog.reader() as s:
        return s.scalar(select(ApiToken.id).where(ApiToken.revoked_at.is_(None))
                        .where((ApiToken.expires_at.is_(None)) | (ApiToken.expires_at > now)).limit(1)) is not None


def list_tokens(catalog: Catalog) -> list[TokenInfo]:
    with catalog.reader() as s:
        return [_info(r) for r in s.scalars(select(ApiToken).order_by(ApiToken.id))]


def revoke_token(catalog: Catalog, token_id: int) -> None:
    with catalog.writer() as s:
        row = s.get(ApiToken, token_id)
        if row is None:
            raise PartnerError(f"no token with id {token_id}")
        if row.revoked_at is None:
            row.revoked_at = utcnow()


# -- shares -------------------------------------------------------------------------------------


def _add_shares(s: Session, study_uids: Iterable[str], partner: str, origin: str, postgres: bool) -> None:
    rows = [{"study_instance_uid": uid, "partner": partner, "origin": origin, "created_at": utcnow()}
            for uid in sorted(set(study_uids)) if uid]
    if not rows:
        return
    insert = (postgresql.insert if postgres else sqlite.insert)(StudyShare)
    s.execute(insert.on_conflict_do_nothing(index_elements=["study_instance_uid", "partner"]), rows)


def share(catalog: Catalog, study_uid: str, partner: str, *, origin: str = "shared") -> None:
    """Let ``partner`` see ``study_uid`` (idempotent). An operator share needs the study to exist."""
    check_partner(partner)
    with catalog.writer() as s:
        if origin == "shared" and s.scalar(select(Study.id).where(Study.study_instance_uid == study_uid)) is None:
            raise PartnerError(f"no study with UID {study_uid}")
        _add_shares(s, [study_uid], partner, origin, not catalog.is_sqlite)


def record_uploads(catalog: Catalog, study_uids: Iterable[str], partner: str) -> None:
    """Studies ``partner`` stored over STOW-RS become visible to it."""
    with catalog.writer() as s:
        _add_shares(s, study_uids, partner, "uploaded", not catalog.is_sqlite)


def unshare(catalog: Catalog, study_uid: str, partner: str) -> bool:
    """Stop sharing; ``False`` when it was not shared."""
    with catalog.writer() as s:
        result = s.execute(delete(StudyShare).where(StudyShare.study_instance_uid == study_uid,
                                                    StudyShare.partner == partner))
        return bool(result.rowcount)


def owner_conflicts(catalog: Catalog, study_uids: Iterable[str], partner: str) -> set[str]:
    """Of ``study_uids``, those that exist and ``partner`` may not see (it must not add to them)."""
    uids = set(study_uids)
    if not uids:
        return set()
    vis = PartnerVisibility(partner)
    with catalog.reader() as s:
        existing = set(s.scalars(select(Study.study_instance_uid).where(Study.study_instance_uid.in_(uids))))
        visible = set(s.scalars(select(Study.study_instance_uid).where(Study.study_instance_uid.in_(uids))
                                .where(vis.study_condition())))
    return existing - visible


class PartnerVisibility(Visibility):
    """A partner sees the studies shared with it or uploaded by it: an EXISTS on ``study_shares``."""

    def __init__(self, partner: str) -> None:
        self.partner = partner

    def study_condition(self) -> ColumnElement[bool]:
        return exists().where(StudyShare.study_instance_uid == Study.study_instance_uid,
                              StudyShare.partner == self.partner)

    def __repr__(self) -> str:
        return f"PartnerVisibility({self.partner!r})"


# -- audit ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Audited:
    time: dt.datetime
    who: str
    address: str
    action: str
    study: str
    outcome: str
    status: int
    detail: str

    def as_json(self) -> dict[str, object]:
        return {"time": self.time.replace(tzinfo=dt.UTC).isoformat(), "who": self.who, "address": self.address,
                "action": self.action, "study": self.study, "outcome": self.outcome, "status": self.status,
                "detail": self.detail}


def write_audit(catalog: Catalog, *, who: str, address: str, action: str, study: str, outcome: str,
                status: int = 0, detail: str = "") -> None:
    """Append one audit event (its own transaction).

    On SQLite the commit skips its fsync (``synchronous=NORMAL`` for this one transaction):
    in WAL mode the row becomes durable with the next ingest commit or checkpoint, and a
    query does not pay a flush (about 6 ms) for its audit row.
    """
    row = {"time": utcnow(), "who": who[:128], "address": address[:64], "action": action[:32],
           "study_instance_uid": study[:64], "outcome": outcome[:32], "status": status, "detail": detail[:255]}
    if not catalog.is_sqlite:
        with catalog.writer() as s:
            s.execute(insert(AuditEvent), [row])
        return
    with catalog.write_engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        raw.execute("PRAGMA synchronous=NORMAL")
        try:
            with conn.begin():
                conn.execute(insert(AuditEvent), [row])
        finally:
            try:
                raw.execute("PRAGMA synchronous=FULL")  # the pooled connection serves ingest next
            except Exception:
                conn.invalidate()
                raise


def audit_events(catalog: Catalog, *, since: dt.datetime | None = None, study: str | None = None) -> list[Audited]:
    stmt = select(AuditEvent).order_by(AuditEvent.time, AuditEvent.id)
    if since is not None:
        stmt = stmt.where(AuditEvent.time >= since)
    if study:
        stmt = stmt.where(AuditEvent.study_instance_uid == study)
    with catalog.reader() as s:
        return [Audited(e.time, e.who, e.address, e.action, e.study_instance_uid, e.outcome, e.status, e.detail)
                for e in s.scalars(stmt)]
