"""DICOM TLS: mutual authentication with dcmtk; plaintext, anonymous, untrusted and old-TLS
clients are refused before anything reaches the DICOM parser.
"""

from __future__ import annotations

import logging
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from dicom_scp import DicomServer
from harness import dcmtk
from pacs_lite.archive import Archive
from tests.support.dimse import SCP_AET, running_scp

CT_SMALL = get_testdata_file("CT_small.dcm")


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


#: Elliptic-curve keys: generated in milliseconds, unlike RSA.
NEW_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def make_ca(directory: Path, name: str) -> None:
    subject = ["-subj", f"/CN={name}", "-days", "2"]
    openssl("req", "-x509", *NEW_KEY, "-keyout", f"{name}.key", "-out", f"{name}.crt", *subject, cwd=directory)


def make_cert(directory: Path, name: str, ca: str, san: str) -> None:
    (directory / f"{name}.ext").write_text(f"subjectAltName={san}\n")
    openssl("req", *NEW_KEY, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=directory)
    signing = ["-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial", "-extfile", f"{name}.ext"]
    openssl("x509", "-req", "-in", f"{name}.csr", *signing, "-out", f"{name}.crt", "-days", "2", cwd=directory)


@dataclass
class TlsServer:
    server: DicomServer
    archive: Archive
    certs: Path

    def storescu(self, *tls_args: str) -> tuple[str, subprocess.CompletedProcess[str]]:
        outcomes, proc = dcmtk.storescu(self.server.port, [CT_SMALL], aec=SCP_AET, extra=list(tls_args), timeout=60)
        return outcomes[CT_SMALL].outcome, proc


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    certs = tmp_path_factory.mktemp("certs")
    make_ca(certs, "ca")
    make_ca(certs, "rogue-ca")
    make_cert(certs, "server", "ca", "IP:127.0.0.1")
    make_cert(certs, "client", "ca", "DNS:client")
    make_cert(certs, "rogue", "rogue-ca", "DNS:rogue")
    dicom = {
        "tls_cert": str(certs / "server.crt"),
        "tls_key": str(certs / "server.key"),
        "tls_ca": str(certs / "ca.crt"),
        "acse_timeout": 5,
    }
    with running_scp(tmp_path_factory.mktemp("dimse-tls"), dicom=dicom) as (server, archive):
        yield TlsServer(server, archive, certs)


def client_args(certs: Path, name: str) -> list[str]:
    return ["+tls", str(certs / f"{name}.key"), str(certs / f"{name}.crt"), "-pw", "+cf", str(certs / "ca.crt")]


@pytest.mark.peers
def test_mutual_tls_store(tls: TlsServer) -> None:
    outcome, proc = tls.storescu(*client_args(tls.certs, "client"))
    assert outcome == "stored", proc.stdout[-2000:] + proc.stderr[-2000:]


@pytest.mark.peers
def test_plaintext_to_tls_port_is_refused(tls: TlsServer, caplog: pytest.LogCaptureFixture) -> None:
    before = tls.archive.catalog.counts()["instances"]
    with caplog.at_level(logging.WARNING):
        outcome, _ = tls.storescu()
    assert outcome != "stored"
    assert tls.archive.catalog.counts()["instances"] == before
    assert "TLS handshake with 127.0.0.1 failed" in caplog.text


@pytest.mark.peers
def test_anonymous_tls_is_refused(tls: TlsServer) -> None:
    outcome, _ = tls.storescu("+tla", "+cf", str(tls.certs / "ca.crt"))
    assert outcome != "stored"


@pytest.mark.peers
def test_untrusted_client_certificate_is_refused(tls: TlsServer) -> None:
    outcome, _ = tls.storescu(*client_args(tls.certs, "rogue"))
    assert outcome != "stored"


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_tls_1_1_is_refused(tls: TlsServer) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.load_cert_chain(tls.certs / "client.crt", tls.certs / "client.key")
    with socket.create_connection(("127.0.0.1", tls.server.port), timeout=10) as raw:
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            with context.wrap_socket(raw) as sock:
                sock.sendall(b"\x01\x00\x00\x00\x00\x04abcd")
                sock.recv(10)


@pytest.mark.peers
def test_silent_client_does_not_block_others(tls: TlsServer) -> None:
    """A client that connects and never starts the handshake must not stall the accept loop."""
    with socket.create_connection(("127.0.0.1", tls.server.port), timeout=10):
        outcome, proc = tls.storescu(*client_args(tls.certs, "client"))
    assert outcome == "stored", proc.stdout[-2000:] + proc.stderr[-2000:]
