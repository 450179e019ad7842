"""The container image, built and run with podman: the Dockerfile as a hospital's IT team would use it.

Skipped, with the reason, where podman cannot run containers here (``podman info`` fails) or where
no ``debian:bookworm-slim`` base can be had (none stored, no registry, no ``debootstrap`` to make one).
The image is built from the checkout (what ``.dockerignore`` lets in), run as its user ``pacs`` with
its ports published on 127.0.0.1 only, and checked from outside the container network: C-ECHO and
C-STORE from a configured peer, a caller that is not one refused, QIDO-RS, its HEALTHCHECK, and a
clean exit on ``podman stop``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from harness import dcmtk
from harness.net import free_port, http_url
from tests.support.dicom import make_instance, part10

pytestmark = [pytest.mark.peers, pytest.mark.podman, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parent.parent
BASE = "docker.io/library/debian:bookworm-slim"
IMAGE = "localhost/pacs-lite:test"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
#: rlimits a container may keep when the host's root lacks CAP_SYS_RESOURCE (crun raises them otherwise)
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]


def podman(*args: str, timeout: float = 120, check: bool = True, runtime: list[str] | None = None
           ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["podman", *(runtime or []), *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args[:3])}... exited {proc.returncode}:\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def _base_image() -> None:
    """Make sure the Dockerfile's base exists: stored, pulled, or made with debootstrap."""
    if podman("image", "exists", BASE, check=False).returncode == 0:
        return
    if podman("pull", BASE, timeout=300, check=False).returncode == 0:
        return
    if not shutil.which("debootstrap"):
        pytest.skip(f"no {BASE} image: no registry reachable and no debootstrap to make one")
    root = Path(tempfile.mkdtemp(prefix="bookworm-root-"))
    try:
        made = subprocess.run(["debootstrap", "--variant=minbase", "bookworm", root, "http://deb.debian.org/debian"],
                              capture_output=True, text=True, timeout=900)
        if made.returncode != 0:
            pytest.skip(f"debootstrap bookworm failed: {made.stderr[-500:]}")
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(["podman", "import", "-", BASE], stdin=tar.stdout, capture_output=True,
                                  text=True, timeout=600)
        tar.wait()
        assert imported.returncode == 0, imported.stderr
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def runtime() -> list[str]:
    """Global podman options under which a container runs here, or skip saying why none does."""
    if not shutil.which("podman"):
        pytest.skip("podman is not installed (apt-get install podman)")
    info = podman("info", check=False)
    if info.returncode != 0:
        pytest.skip(f"podman info fails: {info.stderr.strip()[-500:]}")
    _base_image()
    errors = []
    candidates = [[], *([["--runtime", "runc"]] if shutil.which("runc") else [])]
    for candidate in candidates:
        tried = podman("run", "--rm", *ULIMITS, BASE, "true", check=False, runtime=candidate)
        if tried.returncode == 0:
            return candidate
        errors.append(f"{candidate or 'default runtime'}: {tried.stderr.strip()[-300:]}")
    pytest.skip("podman cannot run a container here: " + " | ".join(errors))


@pytest.fixture(scope="module")
def image(runtime: list[str]) -> str:
    args = ["build", "--format", "docker", *ULIMITS, "-t", IMAGE]
    if HOST_CA.exists():  # this machine's CA bundle (a TLS-inspecting proxy may sign PyPI's certificate)
        args += ["-v", f"{HOST_CA}:/host-ca.pem:ro", "--build-arg", "PIP_CERT=/host-ca.pem"]
    podman(*args, str(ROOT), timeout=1500, runtime=runtime)
    return IMAGE


def gateway() -> str:
    """The address a client on this host appears from inside a container (the default network's gateway)."""
    [network] = json.loads(podman("network", "inspect", "podman").stdout)
    return str(network["subnets"][0]["gateway"])


@pytest.fixture
def container(runtime: list[str], image: str, tmp_path: Path) -> Iterator[tuple[str, int, int]]:
    name = f"pacs-lite-test-{os.getpid()}-{int(time.time())}"
    dicom_port, http_port = free_port(), free_port()
    config = tmp_path / "pacs-lite.toml"
    config.write_text(f'[[dicom.peers]]\nae_title = "ECHOSCU"\nhost = "{gateway()}"\nport = 104\n')
    config.chmod(0o644)
    podman("run", "-d", "--name", name, *ULIMITS, "-p", f"127.0.0.1:{dicom_port}:11112",
           "-p", f"127.0.0.1:{http_port}:8080", "-e", f"PACS_LITE_HTTP_ALLOW_FROM={gateway()}",
           "-v", f"{config}:/etc/pacs-lite/pacs-lite.toml:ro,Z", image,
           "--config", "/etc/pacs-lite/pacs-lite.toml", "serve", runtime=runtime)
    try:
        yield name, dicom_port, http_port
    finally:
        podman("rm", "-f", "-t", "5", name, check=False, runtime=runtime)


def test_image_serves_dicom_and_dicomweb_from_outside(runtime: list[str], container: tuple[str, int, int],
                                                       tmp_path: Path) -> None:
    name, dicom_port, http_port = container
    deadline = time.monotonic() + 180
    while True:
        try:
            if requests.get(http_url(http_port, "/readyz"), timeout=5).status_code == 200:
                break
        except requests.RequestException:
            pass
        state = podman("inspect", name, "--format", "{{.State.Status}}", runtime=runtime).stdout.strip()
        assert state == "running", podman("logs", name, check=False, runtime=runtime).stderr[-3000:]
        assert time.monotonic() < deadline, podman("logs", name, check=False, runtime=runtime).stderr[-3000:]
        time.sleep(1)
    assert podman("exec", name, "id", "-un", runtime=runtime).stdout.strip() == "pacs"
    assert podman("healthcheck", "run", name, check=False, runtime=runtime).returncode == 0
    assert dcmtk.echoscu(dicom_port, aec="PACSLITE", aet="ECHOSCU").returncode == 0
    refused = dcmtk.echoscu(dicom_port, aec="PACSLITE", aet="STRANGER")
    assert refused.returncode != 0 and "Calling AE Title Not Recognized" in refused.stdout + refused.stderr
    ds = make_instance()
    (tmp_path / "one.dcm").write_bytes(part10(ds))
    outcomes, _ = dcmtk.storescu(dicom_port, [tmp_path / "one.dcm"], aec="PACSLITE", aet="ECHOSCU")
    assert [o.outcome for o in outcomes.values()] == ["stored"], outcomes
    studies = requests.get(http_url(http_port, "/dicomweb/studies"), timeout=30)
    assert studies.status_code == 200
    assert [s["0020000D"]["Value"][0] for s in studies.json()] == [ds.StudyInstanceUID]
    podman("stop", "-t", "90", name, timeout=150, runtime=runtime)
    assert podman("inspect", name, "--format", "{{.State.ExitCode}}", runtime=runtime).stdout.strip() == "0"
    logs = podman("logs", name, runtime=runtime)
    text = logs.stdout + logs.stderr
    assert "calling AE 'STRANGER'" in text and "is not a configured peer" in text
    assert "INFO pacs_lite: stopped" in text and "Traceback" not in text
