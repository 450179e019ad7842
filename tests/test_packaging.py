"""Installing PACS-lite the way a hospital's IT team does: from the wheel, into a clean virtualenv.

The session builds the wheel from a copy of the checkout (what ``.dockerignore`` lets into an image
build) and a wheelhouse of its dependencies (``pip download``: PyPI or pip's cache), then installs it
into a plain virtualenv outside the checkout (no system site-packages, no index) with Debian's
``/usr/bin/python3`` where there is one (the interpreter of the container image). The tests start
``pacs-lite serve`` from there, as root and as an unprivileged user, run the image's HEALTHCHECK
command against it, and check that ``scripts/serve`` installs only when the packaging changed.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from harness import dcmtk
from harness.net import free_port, http_url, wait_for_port
from harness.processes import ManagedProcess

pytestmark = [pytest.mark.peers, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pacs_lite", "dicom_scp", "viewer", "storage")
#: what never goes into a build (the same as .dockerignore)
IGNORED = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.pyc", "*.egg-info", "build", "dist", "pacs-data",
                                 "node_modules", ".pytest_cache", ".ruff_cache", ".import_linter_cache", "results")
DEBIAN_PYTHON = Path("/usr/bin/python3")


def run(cmd: list[str | os.PathLike[str]], *, timeout: float = 600, **kwargs: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([os.fspath(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, **kwargs)  # type: ignore[call-overload]
    assert proc.returncode == 0, f"{' '.join(map(str, cmd[:4]))}... exited {proc.returncode}:\n" \
                                 f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without PACS-lite settings, Python paths or the virtualenv of the tests."""
    venv_bin = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PACS_LITE_", "PACSLITE_", "PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env.update(extra)
    return env


@dataclass(frozen=True)
class Wheelhouse:
    source: Path  # the copy of the checkout the wheel was built from
    wheel: Path
    folder: Path  # the wheel, its dependencies, pip, setuptools and wheel


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Wheelhouse:
    root = tmp_path_factory.mktemp("packaging")
    source = root / "src"
    shutil.copytree(ROOT, source, ignore=IGNORED, symlinks=True)
    folder, dist = root / "wheelhouse", root / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    run([*pip, "download", "-q", "-d", folder, "setuptools>=68", "wheel", "pip"])
    # the build backend comes from the wheelhouse: the build needs no index
    run([*pip, "wheel", "-q", "--no-deps", "--no-index", "--find-links", folder, "-w", dist, source])
    [wheel] = dist.glob("pacs_lite-*.whl")
    run([*pip, "download", "-q", "-d", folder, wheel])  # the wheel and every dependency
    return Wheelhouse(source, folder / wheel.name, folder)


@pytest.fixture(scope="session")
def installed(wheelhouse: Wheelhouse) -> Iterator[Path]:
    """A plain virtualenv with PACS-lite installed from the wheelhouse only; readable by every user."""
    base = Path(tempfile.mkdtemp(prefix="pacs-lite-venv-"))
    base.chmod(0o755)
    venv = base / "venv"
    python = DEBIAN_PYTHON if DEBIAN_PYTHON.exists() else Path(sys.executable)
    try:
        run([python, "-m", "venv", venv], env=clean_env())
        run([venv / "bin" / "pip", "install", "-q", "--disable-pip-version-check", "--no-index",
             "--find-links", wheelhouse.folder, "pacs-lite"], env=clean_env(), cwd=base)
        yield venv
    finally:
        shutil.rmtree(base, ignore_errors=True)


def package_files(source: Path) -> set[str]:
    """Every file of the packages in ``source`` that an installation needs (not bytecode)."""
    found = set()
    for package in PACKAGES:
        for path in (source / package).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                found.add(path.relative_to(source).as_posix())
    return found


def test_wheel_holds_every_file_of_the_packages(wheelhouse: Wheelhouse) -> None:
    with zipfile.ZipFile(wheelhouse.wheel) as wheel:
        names = set(wheel.namelist())
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        requires = [line for line in wheel.read(metadata).decode().splitlines() if line.startswith("Requires-Dist:")]
    expected = package_files(wheelhouse.source)
    assert "pacs_lite/migrations/env.py" in expected and "pacs_lite/migrations/versions/0001_initial_schema.py" in expected
    assert any(name.startswith("viewer/templates/") for name in expected)
    missing = sorted(expected - names)
    assert not missing, f"files of the packages missing from the wheel (setup.cfg [options.package_data]): {missing}"
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    # PostgreSQL support comes with a plain install
    assert any(re.match(r"Requires-Dist: psycopg\[binary\]", r) and "extra ==" not in r for r in requires), requires


class Served:
    """``pacs-lite serve`` of an installed virtualenv, configured by a TOML file in a folder of its own."""

    def __init__(self, venv: Path, folder: Path, *, prefix: list[str] | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.folder = folder
        self.dicom_port, self.http_port = free_port(), free_port()
        data = folder / "data"
        self.config = folder / "pacs-lite.toml"
        self.config.write_text(
            f'[dicom]\nport = {self.dicom_port}\n[http]\nport = {self.http_port}\nworkers = 1\nthreads = 4\n'
            f'[index]\nurl = "sqlite:///{data}/index.db"\n[storage]\npath = "{data}/objects"\n'
            f'[compression]\nworkers = 1\n')
        self.process = ManagedProcess([*(prefix or []), venv / "bin" / "pacs-lite", "--config", self.config, "serve"],
                                      folder / "serve.log", env=clean_env(**(env or {})), cwd=folder,
                                      name="pacs-lite serve (installed)")

    def ready(self) -> bool:
        try:
            return requests.get(http_url(self.http_port, "/readyz"), timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def start(self) -> Served:
        self.process.start()
        self.process.wait_until(self.ready, timeout=120, what="ready (/readyz 200)")
        wait_for_port("127.0.0.1", self.dicom_port, timeout=30)
        return self

    def terminate(self) -> int:
        """SIGTERM to the server (not its group: it stops its own children); its exit status."""
        return self.process.terminate_leader()

    def log(self) -> str:
        return self.process.log_path.read_text(errors="replace")


def test_installed_wheel_serves_outside_the_checkout(installed: Path, tmp_path: Path) -> None:
    where = run([installed / "bin" / "python", "-c",
                 "import pacs_lite, viewer, pathlib; print(pacs_lite.__file__); "
                 "print((pathlib.Path(pacs_lite.__file__).parent / 'migrations' / 'env.py').is_file())"],
                env=clean_env(), cwd=tmp_path).stdout.split()
    assert where[0].startswith(str(installed)) and where[1] == "True", where
    server = Served(installed, tmp_path)
    try:
        server.start()
        echo = dcmtk.echoscu(server.dicom_port, aec="PACSLITE")
        assert echo.returncode == 0, echo.stdout + echo.stderr
        assert server.terminate() == 0, server.log()[-3000:]
    finally:
        server.process.stop()
    log = server.log()
    assert "Traceback" not in log, log[-3000:]
    assert log.count("DICOM server PACSLITE listening") == 1, log
    assert len(re.findall(r"Listening at: http://", log)) == 1, log
    assert "INFO pacs_lite: stopped" in log
    assert (tmp_path / "data" / "index.db").is_file()


def dockerfile_healthcheck() -> list[str]:
    """The image's HEALTHCHECK command (exec form), as the Dockerfile has it."""
    text = (ROOT / "Dockerfile").read_text()
    match = re.search(r"^HEALTHCHECK .*?CMD (\[.*?\])$", text.replace("\\\n", " "), re.MULTILINE)
    assert match, "the Dockerfile has no HEALTHCHECK ... CMD [...]"
    return list(json.loads(match.group(1)))


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv to switch user")
def test_image_steps_as_an_unprivileged_user(installed: Path) -> None:
    """What the image does: serve as a non-root user from the wheel install, answer its HEALTHCHECK."""
    probe = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                            installed / "bin" / "python", "-c", "import pacs_lite"],
                           capture_output=True, text=True, env=clean_env(), cwd="/")
    if probe.returncode != 0:
        pytest.skip(f"the virtualenv's interpreter is not usable by nobody: {probe.stderr.strip()[-300:]}")
    as_nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    base = Path(tempfile.mkdtemp(prefix="pacs-lite-nonroot-"))
    try:
        base.chmod(0o755)
        # a data folder that belongs to root: one line naming the key, no traceback
        locked = base / "locked"
        locked.mkdir()
        server = Served(installed, locked, prefix=as_nobody)
        (locked / "data").mkdir(mode=0o755)
        refused = subprocess.run([*as_nobody, installed / "bin" / "pacs-lite", "--config", server.config, "serve"],
                                 capture_output=True, text=True, env=clean_env(), cwd=locked, timeout=120)
        assert refused.returncode == 3, refused.stderr
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and "not writable" in lines[0] and "index.url" in lines[0], refused.stderr
        assert "Traceback" not in refused.stderr
        # its own folder: it serves, and the HEALTHCHECK command says so
        home = base / "home"
        home.mkdir()
        shutil.chown(home, "nobody", "nogroup")
        server = Served(installed, home, prefix=as_nobody)
        command = dockerfile_healthcheck()
        health_env = clean_env(PACS_LITE_HTTP_PORT=str(server.http_port))
        before = subprocess.run(command, capture_output=True, env=health_env, timeout=30)
        assert before.returncode != 0, "the HEALTHCHECK passes with no server"
        try:
            server.start()
            owners = {p.stat().st_uid for p in (home / "data").rglob("*")}
            assert owners == {65534}, owners  # everything it wrote belongs to nobody
            assert subprocess.run(command, capture_output=True, env=health_env, timeout=30).returncode == 0
            echo = dcmtk.echoscu(server.dicom_port, aec="PACSLITE")
            assert echo.returncode == 0, echo.stdout + echo.stderr
            assert server.terminate() == 0, server.log()[-3000:]
        finally:
            server.process.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_serve_script_installs_only_when_the_packaging_changed(wheelhouse: Wheelhouse, tmp_path: Path) -> None:
    if not shutil.which("python3", path=clean_env()["PATH"]):
        pytest.skip("no python3 on PATH for scripts/setup-python")
    checkout = tmp_path / "checkout"
    shutil.copytree(wheelhouse.source, checkout, symlinks=True)
    dicom_port, http_port = free_port(), free_port()
    settings = {"PACS_LITE_DICOM_PORT": str(dicom_port), "PACS_LITE_HTTP_PORT": str(http_port),
                "PACS_LITE_HTTP_WORKERS": "1", "PACS_LITE_COMPRESSION_WORKERS": "1"}
    offline = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse.folder), "PIP_CONFIG_FILE": os.devnull}

    def serve(round_: int, pip_env: dict[str, str]) -> tuple[str, int]:
        """Run scripts/serve until ready, stop it with SIGTERM; its output and exit status."""
        process = ManagedProcess([checkout / "scripts" / "serve"], tmp_path / f"serve-{round_}.log",
                                 env=clean_env(**settings, **pip_env), cwd=checkout, name="scripts/serve")
        process.start()
        try:
            process.wait_until(lambda: _ready(http_port), timeout=600, what="ready")
            assert process.proc is not None
            process.proc.send_signal(signal.SIGTERM)
            code = process.proc.wait(timeout=90)
        finally:
            process.stop()
        return process.log_path.read_text(errors="replace"), code

    stamp = checkout / ".venv" / ".installed-serve"
    _, code = serve(1, offline)
    assert code == 0 and stamp.is_file()
    first = stamp.read_text()
    stamp_mtime = stamp.stat().st_mtime_ns
    # second start: no index, no wheelhouse, nothing of pip in the output
    nothing = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(tmp_path / "empty"), "PIP_CONFIG_FILE": os.devnull}
    output, code = serve(2, nothing)
    assert code == 0, output[-3000:]
    assert not re.search(r"(?i)\bpip\b|Requirement already|Collecting|Installing|Successfully", output), output[:3000]
    assert stamp.stat().st_mtime_ns == stamp_mtime
    # the packaging changes: the next start installs again and records the new state
    with (checkout / "setup.cfg").open("a") as fh:
        fh.write("\n# changed by the test\n")
    _, code = serve(3, offline)
    assert code == 0 and stamp.read_text() != first
    # and without the wheelhouse that install fails: the second start really did not install
    with (checkout / "setup.cfg").open("a") as fh:
        fh.write("# changed again\n")
    failed = subprocess.run([checkout / "scripts" / "serve"], capture_output=True, text=True, timeout=300,
                            env=clean_env(**settings, **nothing), cwd=checkout)
    assert failed.returncode != 0


def _ready(port: int) -> bool:
    with contextlib.suppress(requests.RequestException):
        return requests.get(http_url(port, "/readyz"), timeout=5).status_code == 200
    return False


def test_dockerfile_installs_the_wheel_as_the_readme_says() -> None:
    """The image runs the README's production install steps, as a non-root user, with a volume and a health check."""
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert len(stages) == 2, stages
    assert re.search(r"pip wheel .*--wheel-dir /wheels \.", text)
    assert re.search(r"python3 -m venv /opt/pacs-lite", text)
    assert re.search(r"/opt/pacs-lite/bin/pip install .*--no-index --find-links /wheels pacs-lite", text)
    assert re.search(r"^USER pacs$", text, re.MULTILINE) and "VOLUME /var/lib/pacs-lite" in text
    readme = (ROOT / "README.md").read_text()
    assert "python3 -m venv /opt/pacs-lite" in readme and "pip install" in readme
    ignored = (ROOT / ".dockerignore").read_text().split()
    for name in (".venv", ".git", "pacs-data", "node_modules", "**/__pycache__"):
        assert name in ignored, name
    ast.parse((ROOT / "pacs_lite" / "migrations" / "env.py").read_text())  # the file the wheel lacked


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_systemd_unit_verifies(installed: Path, tmp_path: Path) -> None:
    """deploy/pacs-lite.service passes systemd-analyze verify (pointed at a real installation)."""
    unit = (ROOT / "deploy" / "pacs-lite.service").read_text()
    assert "ExecStart=/opt/pacs-lite/bin/pacs-lite --config /etc/pacs-lite/pacs-lite.toml serve" in unit
    for line in ("User=pacs", "Restart=on-failure", "ProtectSystem=strict", "ReadWritePaths=/var/lib/pacs-lite",
                 "NoNewPrivileges=yes", "PrivateTmp=yes", "ProtectHome=yes", "CapabilityBoundingSet=\n",
                 "RestartPreventExitStatus=2"):
        assert line in unit, line
    copy = tmp_path / "pacs-lite.service"
    copy.write_text(unit.replace("/opt/pacs-lite/bin/pacs-lite", str(installed / "bin" / "pacs-lite")))
    checked = subprocess.run(["systemd-analyze", "verify", copy], capture_output=True, text=True, timeout=60)
    problems = [line for line in (checked.stdout + checked.stderr).splitlines() if line.strip()]
    assert checked.returncode == 0 and not problems, problems


def test_compose_pins_images_checks_health_and_keeps_secrets_out() -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    images = re.findall(r"^\s+image: (\S+)$", compose, re.MULTILINE)
    assert "postgres:15.10" in images and any(re.fullmatch(r"chrislusf/seaweedfs:\d+\.\d+", i) for i in images)
    assert all(":" in i and not i.endswith(":latest") for i in images), images
    services = re.findall(r"^  ([a-z-]+):$", compose, re.MULTILINE)
    assert {"postgres", "seaweedfs", "pacs-a", "pacs-b"} <= set(services), services
    assert compose.count("healthcheck:") == 3  # postgres, seaweedfs, and the node template both nodes use
    assert "<<: *node" in compose and compose.count("condition: service_healthy") == 2
    assert compose.count("restart: unless-stopped") == 3
    assert "${POSTGRES_PASSWORD:?set it in .env}" in compose and "${S3_SECRET_KEY:?set it in .env}" in compose
    literal = re.findall(r"^\s*\w*(?:PASSWORD|SECRET)\w*:\s*(?!\$\{)\S.*$", compose, re.MULTILINE | re.IGNORECASE)
    assert not literal, f"a literal secret in compose: {literal}"
    assert "change-me" not in compose
    example = (ROOT / ".env.example").read_text()
    for key in ("POSTGRES_PASSWORD=", "S3_ACCESS_KEY=", "S3_SECRET_KEY=", "HTTP_ALLOW_FROM="):
        assert key in example
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    peers = (ROOT / "deploy" / "compose-pacs-lite.toml").read_text()
    import tomllib

    assert tomllib.loads(peers)["dicom"]["allow_any_caller"] == "auto"
    assert "[[dicom.peers]]" in peers
