"""The ``pacs-lite`` command as a user runs it: config, import, verify, serve."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.net import free_port, wait_for_port
from harness.processes import ManagedProcess
from tests.support.dicom import make_instance, part10
from tests.support.pacs import pacs_lite, pydicom_test_files

ROOT = Path(__file__).resolve().parent.parent


def test_config_prints_effective_values_with_secrets_masked(tmp_path: Path) -> None:
    out = pacs_lite("config", cwd=tmp_path, env={"PACS_LITE_STORAGE_SECRET_KEY": "hunter2",
                                                 "PACS_LITE_DICOM_PORT": "11999"})
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["dicom"]["port"] == 11999
    assert doc["storage"]["secret_key"] == "***"
    assert "hunter2" not in out.stdout


def test_bad_configuration_stops_with_the_key_named(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("[http]\nportt = 1\n")
    out = pacs_lite("--config", "bad.toml", "config", cwd=tmp_path)
    assert out.returncode == 2
    assert "http.portt" in out.stderr
    out = pacs_lite("serve", cwd=tmp_path, env={"PACS_LITE_DICOM_PORT": "x"})
    assert out.returncode == 2 and "dicom.port" in out.stderr


@pytest.mark.slow
def test_import_summarises_and_fails_on_rejects(tmp_path: Path) -> None:
    src = tmp_path / "in" / "nested"
    src.mkdir(parents=True)
    for i in range(3):
        (src / f"img{i}.dcm").write_bytes(part10(make_instance(patient_id=f"IMP{i}")))
    (src.parent / "notes.txt").write_text("not a DICOM file")
    broken = make_instance(patient_id="IMPX")
    del broken.SOPInstanceUID
    (src.parent / "broken.dcm").write_bytes(part10(broken))
    env = {"PACS_LITE_COMPRESSION_TRANSFER_SYNTAX": "none"}
    out = pacs_lite("import", "in", cwd=tmp_path, env=env)
    assert out.returncode == 1  # the broken DICOM file; a file that is not DICOM is skipped, not a rejection
    assert "5 files: 3 stored, 0 duplicates, 1 rejected, 0 failed, 1 skipped" in out.stdout
    assert "notes.txt: not DICOM" in out.stderr and "rejected in/broken.dcm: " in out.stderr
    out = pacs_lite("import", "in/nested", cwd=tmp_path, env=env)
    assert out.returncode == 0
    assert "3 files: 0 stored, 3 duplicates, 0 rejected" in out.stdout
    assert "IMP" not in out.stdout + out.stderr, "no patient data in the output"


@pytest.mark.slow
def test_import_real_files(tmp_path: Path) -> None:
    files = [p for p in pydicom_test_files() if p.suffix == ".dcm"][:30]
    for p in files:
        shutil.copy(p, tmp_path / p.name)
    out = pacs_lite("import", str(tmp_path), cwd=tmp_path, env={"PACS_LITE_COMPRESSION_TRANSFER_SYNTAX": "none"})
    summary = out.stdout.strip().splitlines()[-1]
    stored = int(summary.split(": ")[1].split()[0])
    assert stored > 15, out.stdout + out.stderr
    assert out.returncode in (0, 1)


@pytest.mark.slow
def test_verify_reports_corruption_and_orphans_and_repairs(tmp_path: Path) -> None:
    env = {"PACS_LITE_COMPRESSION_TRANSFER_SYNTAX": "none"}
    (tmp_path / "a.dcm").write_bytes(part10(make_instance()))
    (tmp_path / "b.dcm").write_bytes(part10(make_instance()))
    assert pacs_lite("import", "a.dcm", "b.dcm", cwd=tmp_path, env=env).returncode == 0
    out = pacs_lite("verify", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stdout
    assert "checked 2 objects: 0 missing, 0 corrupt, 0 orphans" in out.stdout

    objects = sorted((tmp_path / "pacs-data" / "objects" / "instances").rglob("*.dcm"))
    data = bytearray(objects[0].read_bytes())
    data[-1] ^= 0xFF
    objects[0].write_bytes(bytes(data))
    orphan = objects[1].parent / "0123456789abcdef0123456789abcdef.dcm"
    orphan.write_bytes(b"left behind by a crash")
    out = pacs_lite("verify", "--grace", "0", cwd=tmp_path, env=env)
    assert out.returncode == 1
    assert "1 corrupt" in out.stdout and "1 orphans" in out.stdout
    out = pacs_lite("verify", "--repair", "--grace", "0", cwd=tmp_path, env=env)
    assert "1 orphans removed" in out.stdout
    assert not orphan.exists()


@pytest.mark.peers
def test_serve_runs_on_defaults_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    dicom_port, http_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACS_LITE_")}
    env.update(PACS_LITE_DICOM_PORT=str(dicom_port), PACS_LITE_HTTP_PORT=str(http_port))
    server = ManagedProcess([sys.executable, "-m", "pacs_lite", "serve"], tmp_path / "serve.log",
                            env=env, cwd=tmp_path, name="pacs-lite serve").start()
    try:
        wait_for_port("127.0.0.1", dicom_port, timeout=60)
        wait_for_port("127.0.0.1", http_port, timeout=60)
        echo = subprocess.run(["echoscu", "-aec", "PACSLITE", "127.0.0.1", str(dicom_port)],
                              capture_output=True, timeout=30)
        assert echo.returncode == 0, echo.stderr
        import requests

        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{http_port}/healthz", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "HTTP server not ready"
            time.sleep(0.3)
        assert (tmp_path / "pacs-data" / "index.db").exists()
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=60) == 0
    finally:
        server.stop()
    log = (tmp_path / "serve.log").read_text()
    assert "stopped" in log
    if shutil.which("ss"):
        listening = subprocess.run(["ss", "-ltn"], capture_output=True, text=True).stdout
        assert f":{dicom_port} " not in listening and f":{http_port} " not in listening


@pytest.mark.slow
@pytest.mark.parametrize("command", ["import", "verify"])
def test_commands_work_with_a_config_file(tmp_path: Path, command: str) -> None:
    (tmp_path / "pacs.toml").write_text('[storage]\npath = "store"\n[index]\nurl = "sqlite:///idx.db"\n')
    (tmp_path / "x.dcm").write_bytes(part10(make_instance()))
    args = ["--config", "pacs.toml", command] + (["x.dcm"] if command == "import" else [])
    out = pacs_lite(*args, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "idx.db").exists()


@pytest.mark.peers
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_stops_when_the_whole_process_group_is_signalled(tmp_path: Path, sig: signal.Signals) -> None:
    """Ctrl-C in a terminal, `timeout` or systemd signal every process of the group at once."""
    dicom_port, http_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACS_LITE_")}
    env.update(PACS_LITE_DICOM_PORT=str(dicom_port), PACS_LITE_HTTP_PORT=str(http_port),
               PACS_LITE_COMPRESSION_WORKERS="2")
    server = ManagedProcess([sys.executable, "-m", "pacs_lite", "serve"], tmp_path / "serve.log",
                            env=env, cwd=tmp_path, name="pacs-lite serve").start()
    try:
        wait_for_port("127.0.0.1", dicom_port, timeout=60)
        wait_for_port("127.0.0.1", http_port, timeout=60)
        time.sleep(2)  # the compression workers are idle, waiting for jobs
        os.killpg(server.proc.pid, sig)
        assert server.proc.wait(timeout=60) in (0, 1), "serve must exit, not hang"
    finally:
        server.stop()
    assert "stopped" in (tmp_path / "serve.log").read_text()
