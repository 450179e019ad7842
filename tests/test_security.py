"""Partner hospitals (issue 17): API tokens, partner-scoped visibility, audit trail.

Most tests use the Flask test client with ``[security] loopback_trusted = false`` so that loopback
requests exercise authentication; one runs a real ``pacs-lite serve``.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from flask.testing import FlaskClient
from sqlalchemy import update

from pacs_lite.archive import Archive
from pacs_lite.catalog import Catalog, partners
from pacs_lite.catalog.models import ApiToken
from pacs_lite.cli import main
from tests.support.dicom import make_instance, part10
from tests.support.http import LiveServer, dicom_parts, encode_multipart, stow_content_type
from tests.support.pacs import make_config
from viewer.access import AccessPolicy
from viewer.app import create_app

REMOTE = {"REMOTE_ADDR": "192.0.2.10"}
BOUNDARY = "sec-boundary-1"


@dataclass
class Site:
    archive: Archive
    client: FlaskClient
    studies: list[tuple[str, str, str]]  # (study, series, sop) of each stored study

    def token(self, partner: str, scope: str = "read") -> dict[str, str]:
        return {"Authorization": "Bearer " + partners.create_token(self.archive.catalog, partner, scope)[1]}


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    config = make_config(tmp_path, compression={"transfer_syntax": "none"}, security={"loopback_trusted": False})
    archive = Archive(config)
    try:
        studies = []
        for i in range(5):
            ds = make_instance(patient_id=f"P{i}", patient_name=f"Secret^Name{i}", StudyDate=f"2024010{i + 1}")
            assert archive.ingest.ingest_part10(part10(ds)).ok
            studies.append((ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID))
        yield Site(archive, create_app(config, archive).test_client(), studies)
    finally:
        archive.close()


def study_routes(st: str, se: str, sop: str) -> list[str]:
    inst = f"/dicomweb/studies/{st}/series/{se}/instances/{sop}"
    return [
        f"/dicomweb/studies/{st}", f"/dicomweb/studies/{st}/series/{se}", inst,
        f"/dicomweb/studies/{st}/metadata", f"/dicomweb/studies/{st}/series/{se}/metadata", inst + "/metadata",
        inst + "/frames/1", inst + "/bulk/7FE00010", inst + "/rendered", inst + "/thumbnail",
        inst + "/frames/1/rendered", f"/dicomweb/studies/{st}/rendered", f"/dicomweb/studies/{st}/thumbnail",
        f"/dicomweb/studies/{st}/series/{se}/rendered", f"/dicomweb/studies/{st}/series/{se}/thumbnail",
        f"/ui/studies/{st}", f"/ui/studies/{st}/series/{se}", f"/ui/studies/{st}/download",
        f"/ui/studies/{st}/series/{se}/download",
    ]


SEARCHES = ["/dicomweb/studies", "/dicomweb/series", "/dicomweb/instances", "/ui/"]


def stow_body(*datasets: object) -> bytes:
    return encode_multipart(dicom_parts(part10(ds) for ds in datasets), BOUNDARY)  # type: ignore[arg-type]


def test_every_route_needs_a_valid_token(site: Site) -> None:
    st, se, sop = site.studies[0]
    partners.share(site.archive.catalog, st, "owner")
    expired = site.token("late")
    with site.archive.catalog.writer() as s:
        s.execute(update(ApiToken).where(ApiToken.partner == "late").values(expires_at=dt.datetime(2000, 1, 1)))
    revoked_id, revoked = partners.create_token(site.archive.catalog, "gone", "admin")
    partners.revoke_token(site.archive.catalog, revoked_id)
    bad = {
        "none": {},
        "garbage": {"Authorization": "Bearer pl_000000000000_" + "x" * 43},
        "not bearer": {"Authorization": "Basic dXNlcjpwYXNz"},
        "expired": expired,
        "revoked": {"Authorization": f"Bearer {revoked}"},
    }
    scoped_searches = [f"/dicomweb/studies/{st}/series", f"/dicomweb/studies/{st}/instances",
                       f"/dicomweb/studies/{st}/series/{se}/instances"]
    paths = SEARCHES + scoped_searches + study_routes(st, se, sop)
    for what, headers in bad.items():
        for path in paths:
            r = site.client.get(path, headers=headers)
            assert r.status_code == 401, (what, path)
            assert r.headers["WWW-Authenticate"].startswith("Bearer"), (what, path)
        assert site.client.post("/dicomweb/studies", headers=headers).status_code == 401
        assert site.client.delete(f"/dicomweb/studies/{st}", headers=headers).status_code == 401
        # from a remote address: garbage tokens are 401, no credentials 403 (as before tokens)
        r = site.client.get("/dicomweb/studies", headers=headers, environ_base=REMOTE)
        assert r.status_code == (403 if what == "none" else 401), what
    # another partner: exactly like an unknown UID
    other = site.token("other", "admin")
    unknown = study_routes("1.2.3.4", "1.2.3.5", "1.2.3.6")
    for path, unknown_path in zip(study_routes(st, se, sop), unknown, strict=True):
        r = site.client.get(path, headers=other, environ_base=REMOTE)
        u = site.client.get(unknown_path, headers=other, environ_base=REMOTE)
        assert r.status_code == u.status_code == 404, path
    for path in scoped_searches:
        assert site.client.get(path, headers=other).json == [], path
    assert site.client.delete(f"/dicomweb/studies/{st}", headers=other).status_code == 404
    assert site.client.delete(f"/dicomweb/studies/{st}/series/{se}/instances/{sop}", headers=other).status_code == 404
    assert site.archive.catalog.instances(st)
    # the owner sees it from anywhere
    owner = site.token("owner")
    for path in study_routes(st, se, sop):
        assert site.client.get(path, headers=owner, environ_base=REMOTE).status_code == 200, path
    # health checks need no token; metrics are the local operator's
    assert site.client.get("/healthz").status_code == 200
    assert site.client.get("/metrics", headers=owner).status_code == 403


def test_qido_shows_no_trace_of_other_studies(site: Site) -> None:
    mine = {site.studies[1][0], site.studies[3][0]}
    for uid in mine:
        partners.share(site.archive.catalog, uid, "hospA")
    headers = site.token("hospA")
    found = site.client.get("/dicomweb/studies", headers=headers, environ_base=REMOTE).json
    assert {r["0020000D"]["Value"][0] for r in found} == mine
    assert all(r["00201208"]["Value"] == [1] for r in found)  # NumberOfStudyRelatedInstances
    for level in ("series", "instances"):
        rows = site.client.get(f"/dicomweb/{level}", headers=headers).json
        assert {r["0020000D"]["Value"][0] for r in rows} == mine, level
    paged = [site.client.get(f"/dicomweb/studies?limit=1&offset={i}", headers=headers).json for i in range(4)]
    assert [len(p) for p in paged] == [1, 1, 0, 0]
    assert {p[0]["0020000D"]["Value"][0] for p in paged[:2]} == mine
    hidden = site.studies[0][0]
    assert site.client.get(f"/dicomweb/studies?StudyInstanceUID={hidden}", headers=headers).json == []
    assert site.client.get(f"/dicomweb/studies/{hidden}/series", headers=headers).json == []
    assert site.client.get("/dicomweb/studies?PatientID=P0", headers=headers).json == []
    page = site.client.get("/ui/", headers=headers).get_data(as_text=True)
    assert "Name1" in page and "Name0" not in page and "Name2" not in page
    # unsharing hides it again
    partners.unshare(site.archive.catalog, site.studies[1][0], "hospA")
    assert len(site.client.get("/dicomweb/studies", headers=headers).json) == 1
    # the local operator (a trusted loopback) sees everything
    local = create_app(site.archive.config, site.archive, access=AccessPolicy()).test_client()
    assert len(local.get("/dicomweb/studies").json) == 5


def test_partner_uploads_are_its_own(site: Site) -> None:
    writer_a, reader_a, writer_b = site.token("hospA", "write"), site.token("hospA"), site.token("hospB", "write")
    ds = make_instance(patient_id="UP1")
    ctype = stow_content_type(BOUNDARY)
    assert site.client.post("/dicomweb/studies", data=stow_body(ds), content_type=ctype,
                            headers=reader_a).status_code == 403
    r = site.client.post("/dicomweb/studies", data=stow_body(ds), content_type=ctype, headers=writer_a,
                         environ_base=REMOTE)
    assert r.status_code == 200, r.data
    assert [x["0020000D"]["Value"][0] for x in site.client.get("/dicomweb/studies", headers=reader_a).json] \
        == [ds.StudyInstanceUID]
    assert site.client.get("/dicomweb/studies", headers=writer_b).json == []
    assert site.client.get(f"/dicomweb/studies/{ds.StudyInstanceUID}/metadata", headers=writer_b).status_code == 404
    # B may not add instances to A's study, nor to a study of the archive it cannot see
    intruder = make_instance(study=ds.StudyInstanceUID, patient_id="UP1")
    foreign = make_instance(study=site.studies[0][0])
    r = site.client.post("/dicomweb/studies", data=stow_body(intruder, foreign), content_type=ctype, headers=writer_b)
    assert r.status_code == 409
    assert not site.archive.catalog.instances(sop_uid=intruder.SOPInstanceUID)
    assert not site.archive.catalog.instances(sop_uid=foreign.SOPInstanceUID)
    assert site.client.get("/dicomweb/studies", headers=writer_b).json == []
    # A adds to its own study; B's own upload is B's
    more = make_instance(study=ds.StudyInstanceUID, patient_id="UP1")
    assert site.client.post(f"/dicomweb/studies/{ds.StudyInstanceUID}", data=stow_body(more), content_type=ctype,
                            headers=writer_a).status_code == 200
    own_b = make_instance(patient_id="UP2")
    assert site.client.post("/dicomweb/studies", data=stow_body(own_b), content_type=ctype,
                            headers=writer_b).status_code == 200
    assert len(site.client.get("/dicomweb/instances", headers=reader_a).json) == 2
    assert len(site.client.get("/dicomweb/instances", headers=writer_b).json) == 1
    # delete: admin only, and only what the partner sees
    assert site.client.delete(f"/dicomweb/studies/{ds.StudyInstanceUID}", headers=writer_a).status_code == 403
    admin_a = site.token("hospA", "admin")
    assert site.client.delete(f"/dicomweb/studies/{own_b.StudyInstanceUID}", headers=admin_a).status_code == 404
    assert site.client.delete(f"/dicomweb/studies/{ds.StudyInstanceUID}", headers=admin_a).status_code == 204
    assert site.client.get("/dicomweb/studies", headers=reader_a).json == []


def test_twenty_operations_twenty_audit_rows(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    st, se, sop = site.studies[0]
    partners.share(site.archive.catalog, st, "hospA")
    a, b = site.token("hospA", "admin"), site.token("hospB")
    ds = make_instance()
    ctype = stow_content_type(BOUNDARY)
    ops = [
        ("GET", "/dicomweb/studies", a, "query", "success", ""),
        ("GET", f"/dicomweb/studies/{st}/metadata", a, "retrieve", "success", st),
        ("GET", f"/dicomweb/studies/{st}", a, "retrieve", "success", st),
        ("GET", f"/dicomweb/studies/{st}/series/{se}/instances/{sop}/frames/1", a, "retrieve", "success", st),
        ("GET", f"/dicomweb/studies/{st}/thumbnail", a, "retrieve", "success", st),
        ("GET", f"/dicomweb/studies/{st}/series", a, "query", "success", st),
        ("GET", f"/dicomweb/studies/{st}", b, "retrieve", "not-found", st),
        ("GET", "/dicomweb/studies", b, "query", "success", ""),
        ("GET", "/dicomweb/studies", {}, "access", "refused", ""),  # remote, no token: 403
        ("GET", "/dicomweb/studies", {"Authorization": "Bearer nonsense"}, "authenticate", "refused", ""),
        ("POST", "/dicomweb/studies", b, "store", "refused", ""),
        ("POST", "/dicomweb/studies", a, "store", "success", ds.StudyInstanceUID),
        ("GET", f"/ui/studies/{st}", a, "view", "success", st),
        ("GET", "/ui/", a, "view", "success", ""),
        ("DELETE", f"/dicomweb/studies/{st}", b, "delete", "refused", st),
        ("DELETE", f"/dicomweb/studies/{site.studies[1][0]}", a, "delete", "not-found", site.studies[1][0]),
        ("GET", f"/dicomweb/studies/{st}/series/{se}/instances/{sop}/metadata", a, "retrieve", "success", st),
        ("GET", "/dicomweb/instances", a, "query", "success", ""),
        ("GET", "/metrics", a, "metrics", "refused", ""),
        ("DELETE", f"/dicomweb/studies/{st}", a, "delete", "success", st),
    ]
    assert len(ops) == 20
    assert partners.audit_events(site.archive.catalog) == []
    for method, path, headers, *_ in ops:
        kwargs = {"data": stow_body(ds), "content_type": ctype} if method == "POST" else {}
        site.client.open(path, method=method, headers=headers, environ_base=REMOTE, **kwargs)
    assert site.client.get("/healthz").status_code == 200  # not audited: no patient data
    events = partners.audit_events(site.archive.catalog)
    assert len(events) == 20
    for event, (_, path, headers, action, outcome, study) in zip(events, ops, strict=True):
        who = "-" if not headers or "nonsense" in headers.get("Authorization", "") else \
            ("token:1:hospA" if headers is a else "token:2:hospB")
        assert (event.action, event.outcome, event.study, event.who, event.address) == \
            (action, outcome, study, who, "192.0.2.10"), path
    config_file = site.archive.config.base_dir / "pacs-lite.toml"
    config_file.write_text(f'[index]\nurl = "{site.archive.config.index_url}"\n')
    capsys.readouterr()
    assert main(["--config", str(config_file), "audit", "--json", "--study", st]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == sum(1 for op in ops if op[5] == st)
    assert {"time", "who", "address", "action", "study", "outcome"} <= set(lines[0])
    assert main(["--config", str(config_file), "audit", "--since", "2000-01-01"]) == 0
    text = capsys.readouterr().out
    assert len(text.splitlines()) == 20 and "Secret" not in text and "P0" not in text


def test_token_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_file = tmp_path / "pacs-lite.toml"
    config_file.write_text(f'[index]\nurl = "sqlite:///{tmp_path}/index.db"\n')
    cfg = ["--config", str(config_file)]
    assert main([*cfg, "token", "create", "--partner", "hospA", "--scope", "read", "--expires", "30d"]) == 0
    token = capsys.readouterr().out.splitlines()[-1]
    assert token.startswith("pl_") and " " not in token
    assert main([*cfg, "token", "create", "--partner", "bad name", "--scope", "read"]) == 1
    assert main([*cfg, "token", "list"]) == 0
    listing = capsys.readouterr().out
    assert "hospA" in listing and token not in listing and token.split("_")[2] not in listing
    assert main([*cfg, "token", "revoke", "1"]) == 0
    assert main([*cfg, "token", "revoke", "99"]) == 1
    assert main([*cfg, "share", "1.2.3", "--partner", "hospA"]) == 1  # no such study
    catalog = Catalog(f"sqlite:///{tmp_path}/index.db")
    try:
        assert partners.verify_token(catalog, token) is None  # revoked
    finally:
        catalog.close()


def test_dicomweb_client_with_a_bearer_token(site: Site) -> None:
    st, se, sop = site.studies[2]
    partners.share(site.archive.catalog, st, "hospA")
    token = partners.create_token(site.archive.catalog, "hospA", "write")[1]
    with LiveServer(site.client.application) as server:
        client = DICOMwebClient(server.base, headers={"Authorization": f"Bearer {token}"})
        assert [s["0020000D"]["Value"][0] for s in client.search_for_studies()] == [st]
        assert client.retrieve_instance(st, se, sop).SOPInstanceUID == sop
        new = pydicom.dcmread(io.BytesIO(part10(make_instance())))
        client.store_instances([new])
        assert len(client.search_for_studies()) == 2
        anonymous = DICOMwebClient(server.base)
        with pytest.raises(requests.HTTPError) as refused:
            anonymous.search_for_studies()
        assert refused.value.response.status_code == 401


@pytest.mark.peers
def test_serve_with_partner_tokens(tmp_path: Path) -> None:
    from tests.support.pacs import pacs_lite
    from tests.support.server import PacsServer

    server = PacsServer(tmp_path, {"HTTP_HOST": "0.0.0.0", "COMPRESSION_TRANSFER_SYNTAX": "none"})
    env = server.environment()
    refused = pacs_lite("serve", cwd=tmp_path, env=env, timeout=120)
    assert refused.returncode == 3
    message = refused.stderr.strip().splitlines()[-1]  # one line naming what to configure (after the log)
    assert message.startswith("pacs-lite: cannot start:") and "http.allow_from" in message
    assert "token create" in message
    created = pacs_lite("token", "create", "--partner", "hospA", "--scope", "write", cwd=tmp_path, env=env)
    assert created.returncode == 0, created.stderr
    token = created.stdout.splitlines()[-1]
    server.start()
    try:
        headers = {"Authorization": f"Bearer {token}"}
        ds = make_instance(patient_name="Hidden^Person", patient_id="HID42")
        body = stow_body(ds)
        r = requests.post(f"{server.dicomweb}/studies", data=body, headers={**headers,
                          "Content-Type": stow_content_type(BOUNDARY)}, timeout=30)
        assert r.status_code == 200, r.text
        r = requests.get(f"{server.dicomweb}/studies", headers=headers, timeout=30)
        assert [x["0020000D"]["Value"][0] for x in r.json()] == [ds.StudyInstanceUID]
        bad = requests.get(f"{server.dicomweb}/studies", headers={"Authorization": "Bearer x"}, timeout=30)
        assert bad.status_code == 401 and bad.headers["WWW-Authenticate"].startswith("Bearer")
    finally:
        server.stop()
    audit = pacs_lite("audit", "--json", cwd=tmp_path, env=env)
    rows = [json.loads(line) for line in audit.stdout.splitlines()]
    assert [(r["action"], r["outcome"]) for r in rows] == [("store", "success"), ("query", "success"),
                                                           ("authenticate", "refused")]
    logs = "".join(p.read_text(errors="replace") for p in tmp_path.glob("serve-*.log"))
    assert "HID42" not in logs and "Hidden" not in logs and token not in logs


def test_partners_in_the_index(index_url: str) -> None:
    """Tokens, shares (idempotent, upload records) and the EXISTS condition on SQLite and PostgreSQL."""
    catalog = Catalog(index_url)
    catalog.migrate()
    try:
        token_id, token = partners.create_token(catalog, "hospA", "write", dt.timedelta(days=1))
        info = partners.verify_token(catalog, token)
        assert info is not None and (info.id, info.partner, info.scope) == (token_id, "hospA", "write")
        assert partners.verify_token(catalog, token[:-1] + ("A" if token[-1] != "A" else "B")) is None
        assert partners.any_token(catalog)
        partners.record_uploads(catalog, ["1.2.3", "1.2.4"], "hospA")
        partners.record_uploads(catalog, ["1.2.3"], "hospA")  # again: nothing new
        assert partners.unshare(catalog, "1.2.4", "hospA") and not partners.unshare(catalog, "1.2.4", "hospA")
        assert catalog.find("STUDY", {}, visibility=partners.PartnerVisibility("hospA")) == []
        partners.revoke_token(catalog, token_id)
        assert partners.verify_token(catalog, token) is None and not partners.any_token(catalog)
        partners.write_audit(catalog, who="local", address="127.0.0.1", action="query", study="", outcome="success")
        assert [e.action for e in partners.audit_events(catalog, study="")] == ["query"]
    finally:
        catalog.close()
