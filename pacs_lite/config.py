"""Configuration: one TOML file, overridable key by key from the environment.

Every key is declared once in :data:`SCHEMA` with its type and default; parsing,
validation, environment overrides (``PACS_LITE_<SECTION>_<KEY>``) and ``pacs-lite
config`` all read that one table, so a key cannot exist in one place and not another.
Unknown keys and bad values raise :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "PACS_LITE_"
AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # printable ASCII without backslash


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the key."""


@dataclass(frozen=True)
class Key:
    """One configuration key: its type, default and an optional check."""

    type: type
    default: Any
    secret: bool = False
    choices: tuple[str, ...] | None = None
    minimum: int | None = None
    maximum: int | None = None


SCHEMA: dict[str, dict[str, Key]] = {
    "dicom": {
        "ae_title": Key(str, "PACSLITE"),
        "host": Key(str, "127.0.0.1"),
        "port": Key(int, 11112, minimum=0, maximum=65535),
        "allow_any_caller": Key(str, "auto", choices=("auto", "true", "false")),
        "max_pdu_length": Key(int, 262144, minimum=4096, maximum=16 * 1024 * 1024),
        "max_associations": Key(int, 16, minimum=1, maximum=1000),
        "acse_timeout": Key(int, 30, minimum=1),
        "dimse_timeout": Key(int, 60, minimum=1),
        "network_timeout": Key(int, 60, minimum=1),
        "tls_cert": Key(str, ""),
        "tls_key": Key(str, "", secret=True),
        "tls_ca": Key(str, ""),
    },
    "http": {
        "host": Key(str, "127.0.0.1"),
        "port": Key(int, 8080, minimum=0, maximum=65535),
        "workers": Key(int, 2, minimum=1, maximum=64),
        "threads": Key(int, 8, minimum=1, maximum=256),
        "timeout": Key(int, 120, minimum=1),
        "cors_origins": Key(list, []),
        "max_request_bytes": Key(int, 4 * 1024**3, minimum=1024),
        "max_parts": Key(int, 5000, minimum=1),
        "qido_max_limit": Key(int, 1000, minimum=1),
        "allow_from": Key(list, []),
        "allow_delete": Key(bool, True),
    },
    "security": {
        # loopback callers without a token are the local operator (full rights); false: they need a token too
        "loopback_trusted": Key(bool, True),
    },
    "index": {
        "url": Key(str, "sqlite:///pacs-data/index.db", secret=True),
    },
    "storage": {
        "backend": Key(str, "filesystem", choices=("filesystem", "s3")),
        "path": Key(str, "pacs-data/objects"),
        "endpoint": Key(str, ""),
        "bucket": Key(str, "pacs-lite"),
        "access_key": Key(str, "", secret=True),
        "secret_key": Key(str, "", secret=True),
        "secure": Key(bool, False),
        "region": Key(str, ""),
        "orphan_grace_seconds": Key(int, 3600, minimum=0),
    },
    "ingest": {
        "duplicates": Key(str, "revision", choices=("revision", "reject")),
        "max_object_bytes": Key(int, 4 * 1024**3, minimum=1024),
    },
    "compression": {
        "transfer_syntax": Key(str, "1.2.840.10008.1.2.4.80"),
        "workers": Key(int, 0, minimum=0, maximum=64),
        "max_memory_mb": Key(int, 4096, minimum=64),
        "timeout_seconds": Key(int, 300, minimum=1),
        "yield_to_receiving_seconds": Key(int, 10, minimum=0, maximum=3600),
    },
    "log": {
        "level": Key(str, "INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR")),
    },
    "startup": {
        "wait_seconds": Key(int, 120, minimum=0, maximum=86400),
    },
}

PEER_KEYS = {"ae_title": str, "host": str, "port": int}
COMPRESSION_TARGETS = {
    "none",
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.5",  # RLE Lossless
}


def mask_url(url: str) -> str:
    """``url`` with the password of its ``user:password@`` part replaced by ``***``."""
    return re.sub(r"//([^:@/]+):[^@/]*@", r"//\1:***@", url)


@dataclass(frozen=True)
class Peer:
    """A remote application entity we know: a C-MOVE destination and an allowed caller."""

    ae_title: str
    host: str
    port: int


@dataclass(frozen=True)
class Config:
    """The effective configuration: ``values[section][key]`` plus the peer list."""

    values: Mapping[str, Mapping[str, Any]]
    peers: tuple[Peer, ...] = ()
    source: str | None = None
    base_dir: Path = field(default_factory=Path.cwd)

    def __getitem__(self, section: str) -> Mapping[str, Any]:
        return self.values[section]

    def get(self, section: str, key: str) -> Any:
        return self.values[section][key]

    def path(self, section: str, key: str) -> Path:
        """A path-valued key resolved against the directory the server runs in."""
        p = Path(self.values[section][key])
        return p if p.is_absolute() else self.base_dir / p

    @property
    def index_url(self) -> str:
        """The index URL with a relative SQLite path made absolute."""
        url = self.values["index"]["url"]
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite:///:memory:":
            return prefix + str(self.base_dir / url[len(prefix):])
        return url

    @property
    def masked_index_url(self) -> str:
        """:attr:`index_url` with its password replaced by ``***`` (for logs and messages)."""
        return mask_url(self.index_url)

    def with_overrides(self, **sections: Mapping[str, Any]) -> Config:
        """A copy with some keys replaced (validated like everything else)."""
        merged = {s: dict(v) for s, v in self.values.items()}
        for section, keys in sections.items():
            for key, value in keys.items():
                merged[section][key] = _coerce(section, key, value)
        _check(merged)
        return Config(merged, self.peers, self.source, self.base_dir)

    def any_caller_allowed(self) -> bool:
        """Whether callers need not be known peers: "auto" allows anyone only on a loopback bind."""
        setting = self.values["dicom"]["allow_any_caller"]
        if setting == "auto":
            host = self.values["dicom"]["host"]
            return host == "localhost" or ipaddress.ip_address(host).is_loopback
        return setting == "true"

    def find_peer(self, ae_title: str) -> Peer | None:
        for peer in self.peers:
            if peer.ae_title == ae_title:
                return peer
        return None

    def masked(self) -> dict[str, Any]:
        """The configuration as nested dicts with secrets replaced by ``***``."""
        out: dict[str, Any] = {}
        for section, keys in SCHEMA.items():
            out[section] = {}
            for key, spec in keys.items():
                value = self.values[section][key]
                if section == "index" and key == "url":
                    value = mask_url(value)
                elif spec.secret and value:
                    value = "***"
                out[section][key] = value
        out["dicom"]["peers"] = [p.__dict__ for p in self.peers]
        return out


def _coerce(section: str, key: str, value: Any, *, from_env: bool = False) -> Any:
    name = f"{section}.{key}"
    spec = SCHEMA[section][key]
    if spec.choices is not None and isinstance(value, bool):
        value = "true" if value else "false"  # allow_any_caller = false (TOML boolean) means "false"
    try:
        if spec.type is bool:
            if isinstance(value, str) and from_env:
                lowered = value.strip().lower()
                if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(value)
                value = lowered in ("1", "true", "yes", "on")
            if not isinstance(value, bool):
                raise ValueError(value)
        elif spec.type is int:
            if isinstance(value, str) and from_env:
                value = int(value.strip())
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(value)
        elif spec.type is list:
            if isinstance(value, str) and from_env:
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(value)
        elif not isinstance(value, str):
            raise ValueError(value)
    except ValueError:
        raise ConfigError(f"{name}: expected {spec.type.__name__}, got {value!r}") from None
    if spec.choices is not None and value not in spec.choices:
        raise ConfigError(f"{name}: must be one of {', '.join(spec.choices)}, got {value!r}")
    if spec.minimum is not None and value < spec.minimum:
        raise ConfigError(f"{name}: must be at least {spec.minimum}, got {value}")
    if spec.maximum is not None and value > spec.maximum:
        raise ConfigError(f"{name}: must be at most {spec.maximum}, got {value}")
    return value


def _check(values: Mapping[str, Mapping[str, Any]]) -> None:
    """Checks across keys and of formats a type cannot express."""
    if not AE_TITLE.match(values["dicom"]["ae_title"]) or not values["dicom"]["ae_title"].strip():
        raise ConfigError("dicom.ae_title: 1 to 16 printable ASCII characters, no backslash")
    for section in ("dicom", "http"):
        host = values[section]["host"]
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if host != "localhost":
                raise ConfigError(f"{section}.host: an IP address to bind, got {host!r}") from None
    for network in values["http"]["allow_from"]:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ConfigError(f"http.allow_from: an address or network such as 192.0.2.0/24, got {network!r}") from None
    url = values["index"]["url"]
    if not url.startswith(("sqlite://", "postgresql://", "postgresql+psycopg://")):
        raise ConfigError(f"index.url: sqlite:/// or postgresql:// URL expected, got {url.split(':')[0]!r}")
    if values["compression"]["transfer_syntax"] not in COMPRESSION_TARGETS:
        raise ConfigError(
            "compression.transfer_syntax: one of " + ", ".join(sorted(COMPRESSION_TARGETS))
            + f", got {values['compression']['transfer_syntax']!r}"
        )
    if values["storage"]["backend"] == "s3" and not values["storage"]["endpoint"]:
        raise ConfigError("storage.endpoint: required when storage.backend is 's3'")
    tls = values["dicom"]
    if bool(tls["tls_cert"]) != bool(tls["tls_key"]):
        raise ConfigError("dicom.tls_cert and dicom.tls_key: set both or neither")


def _parse_peers(raw: Any) -> tuple[Peer, ...]:
    if not isinstance(raw, list):
        raise ConfigError("dicom.peers: expected an array of tables [[dicom.peers]]")
    peers = []
    for i, item in enumerate(raw):
        where = f"dicom.peers[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: expected a table")
        unknown = set(item) - set(PEER_KEYS)
        if unknown:
            raise ConfigError(f"{where}.{sorted(unknown)[0]}: unknown key")
        missing = set(PEER_KEYS) - set(item)
        if missing:
            raise ConfigError(f"{where}.{sorted(missing)[0]}: required")
        for key, typ in PEER_KEYS.items():
            if isinstance(item[key], bool) or not isinstance(item[key], typ):
                raise ConfigError(f"{where}.{key}: expected {typ.__name__}, got {item[key]!r}")
        if not AE_TITLE.match(item["ae_title"]):
            raise ConfigError(f"{where}.ae_title: 1 to 16 printable ASCII characters, no backslash")
        if not 0 < item["port"] < 65536:
            raise ConfigError(f"{where}.port: must be 1 to 65535, got {item['port']}")
        peers.append(Peer(item["ae_title"], item["host"], item["port"]))
    return tuple(peers)


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> Config:
    """Read ``path`` (optional), apply environment overrides, validate and return.

    Parameters
    ----------
    path
        A TOML file; ``None`` means embedded defaults only.
    environ
        The environment to read ``PACS_LITE_<SECTION>_<KEY>`` from (default ``os.environ``).
    base_dir
        Directory that relative paths are resolved against (default: the current one).
    """
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                raw = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"configuration file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None

    values: dict[str, dict[str, Any]] = {s: {k: spec.default for k, spec in keys.items()} for s, keys in SCHEMA.items()}
    peers: tuple[Peer, ...] = ()
    for section, table in raw.items():
        if section not in SCHEMA:
            raise ConfigError(f"{section}: unknown section")
        if not isinstance(table, dict):
            raise ConfigError(f"{section}: expected a table")
        for key, value in table.items():
            if section == "dicom" and key == "peers":
                peers = _parse_peers(value)
                continue
            if key not in SCHEMA[section]:
                raise ConfigError(f"{section}.{key}: unknown key")
            values[section][key] = _coerce(section, key, value)

    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX):].lower()
        section, _, key = rest.partition("_")
        if section not in SCHEMA or key not in SCHEMA[section]:
            raise ConfigError(f"{name}: unknown configuration key {section}.{key}")
        values[section][key] = _coerce(section, key, value, from_env=True)

    _check(values)
    return Config(values, peers, str(path) if path else None, Path(base_dir) if base_dir else Path.cwd())
