"""Configuration: the documented file, environment overrides, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from pacs_lite.config import SCHEMA, ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FILE = ROOT / "config" / "pacs-lite.toml"


def test_defaults_work_without_a_file(tmp_path: Path) -> None:
    cfg = load_config(None, environ={}, base_dir=tmp_path)
    assert cfg["dicom"]["ae_title"] == "PACSLITE"
    assert (cfg["dicom"]["host"], cfg["dicom"]["port"]) == ("127.0.0.1", 11112)
    assert (cfg["http"]["host"], cfg["http"]["port"]) == ("127.0.0.1", 8080)
    assert cfg.index_url == f"sqlite:///{tmp_path}/pacs-data/index.db"
    assert cfg.path("storage", "path") == tmp_path / "pacs-data" / "objects"
    assert cfg["storage"]["backend"] == "filesystem"
    assert cfg["compression"]["transfer_syntax"] == "1.2.840.10008.1.2.4.80"


def test_default_file_documents_every_key_with_its_default() -> None:
    text = DEFAULT_FILE.read_text()
    for section, keys in SCHEMA.items():
        assert f"[{section}]" in text
        for key in keys:
            assert f"\n{key} = " in text, f"{section}.{key} is not documented in config/pacs-lite.toml"
    assert load_config(DEFAULT_FILE, environ={}).values == load_config(None, environ={}).values


def test_file_values_and_peers(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[dicom]\nae_title = "MYPACS"\nport = 104\nallow_any_caller = false\n'
        '[[dicom.peers]]\nae_title = "CT1"\nhost = "10.0.0.5"\nport = 104\n'
        '[index]\nurl = "postgresql://pacs:s3cret@db/pacs"\n'
        '[storage]\nbackend = "s3"\nendpoint = "s3.local:8333"\nsecret_key = "abc"\n'
    )
    cfg = load_config(path, environ={})
    assert cfg["dicom"]["port"] == 104
    assert cfg["dicom"]["allow_any_caller"] == "false"
    assert not cfg.any_caller_allowed()
    assert cfg.find_peer("CT1").host == "10.0.0.5"
    assert cfg.find_peer("CT2") is None
    masked = cfg.masked()
    assert masked["storage"]["secret_key"] == "***"
    assert "s3cret" not in str(masked)
    assert masked["index"]["url"] == "postgresql://pacs:***@db/pacs"


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[dicom]\nport = 104\n")
    cfg = load_config(path, environ={
        "PACS_LITE_DICOM_PORT": "11113",
        "PACS_LITE_STORAGE_SECURE": "true",
        "PACS_LITE_HTTP_CORS_ORIGINS": "https://a.example, https://b.example",
        "PACS_LITE_COMPRESSION_TRANSFER_SYNTAX": "none",
        "UNRELATED": "x",
    })
    assert cfg["dicom"]["port"] == 11113
    assert cfg["storage"]["secure"] is True
    assert cfg["http"]["cors_origins"] == ["https://a.example", "https://b.example"]
    assert cfg["compression"]["transfer_syntax"] == "none"


@pytest.mark.parametrize(("toml", "env", "names"), [
    ("[dicom]\nprot = 104\n", {}, "dicom.prot"),
    ("[dicom]\nport = \"abc\"\n", {}, "dicom.port"),
    ("[dicom]\nport = 70000\n", {}, "dicom.port"),
    ("[dicomm]\nport = 1\n", {}, "dicomm"),
    ("[storage]\nbackend = \"ftp\"\n", {}, "storage.backend"),
    ("[storage]\nbackend = \"s3\"\n", {}, "storage.endpoint"),
    ("[compression]\ntransfer_syntax = \"1.2.840.10008.1.2.4.50\"\n", {}, "compression.transfer_syntax"),
    ("[dicom]\nae_title = \"MUCH_TOO_LONG_AE_TITLE\"\n", {}, "dicom.ae_title"),
    ("[[dicom.peers]]\nae_title = \"X\"\nhost = \"h\"\n", {}, "dicom.peers[0].port"),
    ("", {"PACS_LITE_DICOM_PORTT": "1"}, "PACS_LITE_DICOM_PORTT"),
    ("", {"PACS_LITE_DICOM_PORT": "eleven"}, "dicom.port"),
    ("", {"PACS_LITE_STORAGE_SECURE": "maybe"}, "storage.secure"),
    ("[http]\nhost = \"not an address\"\n", {}, "http.host"),
    ("[index]\nurl = \"mysql://x\"\n", {}, "index.url"),
    ("not toml [", {}, "not valid TOML"),
])
def test_bad_configuration_names_the_key(tmp_path: Path, toml: str, env: dict[str, str], names: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_config(path, environ=env)
    assert names in str(err.value)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml", environ={})
