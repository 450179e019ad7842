"""OHIF v3 under ``/ohif/`` (viewer/ohif.py): the generated app-config.js, the served dist (prefixes, MIME
types, CSP), the page shown when OHIF is not installed, the access check, and OHIF itself in headless
Chromium opening a CT series and compressed MR studies from this server, with no request to another origin.

OHIF's dist is installed by ``scripts/fetch-ohif`` (run by ``scripts/setup-python``). Screenshots go to the
pytest temporary folder (``.../pytest-current/ohif-screenshots0``).
"""

from __future__ import annotations

import gzip
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from pacs_lite.archive import Archive
from tests.support.http import serve_archive, stow
from viewer import ohif

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--enable-unsafe-swiftshader", "--use-gl=angle", "--use-angle=swiftshader"]
VIEWPORT = {"width": 1280, "height": 860}
OUTSIDE_URL = re.compile(r"(?i)\b(?:https?|wss?|ftp):/*[a-z0-9]")


def require_dist() -> ohif.OhifDist:
    dist = ohif.OhifDist(ohif.default_dist_dir())
    if not dist.installed:
        pytest.fail(f"OHIF is not installed in {dist.root}: run scripts/fetch-ohif (scripts/setup-python does)")
    return dist


@pytest.fixture
def app(archive: Archive) -> Flask:
    from viewer.app import create_app

    return create_app(archive.config, archive)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    require_dist()
    return app.test_client()


# -- app-config.js -------------------------------------------------------------------------------


def test_app_config_points_at_our_own_dicomweb_only(client: FlaskClient) -> None:
    response = client.get("/ohif/app-config.js")
    assert response.status_code == 200
    assert response.mimetype == "text/javascript"
    js = response.get_data(as_text=True)
    assert "window.location.origin + '/dicomweb'" in js
    for root in ("qidoRoot", "wadoRoot", "wadoUriRoot"):
        assert f"{root}: dicomweb," in js
    for setting in ("routerBasename: '/ohif'", "enableStudyLazyLoad: true", "omitQuotationForMultipartRequest: true",
                    "supportsFuzzyMatching: true", "supportsWildcard: true", "bulkDataURI: { enabled: true }",
                    "imageRendering: 'wadors'", "thumbnailRendering: 'wadors'",
                    "investigationalUseDialog: { option: 'never' }"):
        assert setting in js
    assert not OUTSIDE_URL.search(js), OUTSIDE_URL.search(js)
    assert not re.search(r"(?i)analytics|gtag|googletagmanager|cloudfront|ohif\.org", js)
    # the dist's own configuration (a public demo server) is never what is served
    dist_config = (ohif.default_dist_dir() / "app-config.js").read_text()
    assert "cloudfront" in dist_config and js != dist_config


# -- the dist ----------------------------------------------------------------------------------


def test_app_routes_get_the_rewritten_index_with_its_own_csp(client: FlaskClient) -> None:
    for path in ("/ohif/", "/ohif", "/ohif/viewer?StudyInstanceUIDs=1.2.3.4", "/ohif/viewer/dicomweb?x=1"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.mimetype == "text/html"
        html = response.get_data(as_text=True)
        assert 'window.PUBLIC_URL="/ohif/"' in html
        assert 'src="/ohif/app-config.js"' in html
        assert not re.search(r'(?:src|href)="/(?!ohif/)', html), re.findall(r'(?:src|href)="/(?!ohif/)[^"]*', html)
        csp = response.headers["Content-Security-Policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["default-src"] == "'self'"
        assert "'wasm-unsafe-eval'" in directives["script-src"] and "blob:" in directives["worker-src"]
        # scripts: this origin and the index's own inline scripts (by hash), nothing else
        assert "'unsafe-inline'" not in directives["script-src"] and "'unsafe-eval'" not in directives["script-src"]
        assert len(re.findall(r"'sha256-[A-Za-z0-9+/=]+'", directives["script-src"])) == 2
        assert directives["object-src"] == "'none'" and directives["frame-ancestors"] == "'none'"
        assert not OUTSIDE_URL.search(csp) and "*" not in csp
        assert response.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
        assert response.headers["Cross-Origin-Opener-Policy"] == "same-origin"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Cache-Control"] == "no-cache"


def test_static_files_have_their_mime_types_and_the_ohif_prefix(client: FlaskClient) -> None:
    dist = ohif.default_dist_dir()
    [bundle] = dist.glob("app.bundle.*.js")
    response = client.get(f"/ohif/{bundle.name}")
    assert response.status_code == 200 and response.mimetype == "text/javascript"
    body = response.get_data()
    assert b'__webpack_require__.p = "/ohif/"' in body and b'__webpack_require__.p = "/"' not in body
    assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert response.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
    again = client.get(f"/ohif/{bundle.name}", headers={"If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304
    # gzip for clients that accept it: the same bytes, a fifth of the size
    packed = client.get(f"/ohif/{bundle.name}", headers={"Accept-Encoding": "gzip, deflate, br"})
    assert packed.headers["Content-Encoding"] == "gzip" and "Accept-Encoding" in packed.headers["Vary"]
    assert len(packed.get_data()) < len(body) / 3 and gzip.decompress(packed.get_data()) == body
    assert packed.headers["ETag"] != response.headers["ETag"]
    assert client.get(f"/ohif/{bundle.name}", headers={"Accept-Encoding": "gzip",
                                                       "If-None-Match": packed.headers["ETag"]}).status_code == 304
    css = client.get("/ohif/app.bundle.css")
    assert css.mimetype == "text/css" and b"url(/ohif/" in css.get_data() and b"url(/a" not in css.get_data()
    wasm = next(dist.glob("*.wasm"))
    response = client.get(f"/ohif/{wasm.name}")
    assert response.mimetype == "application/wasm" and response.get_data() == wasm.read_bytes()
    font = next(dist.glob("*.woff2"))
    assert client.get(f"/ohif/{font.name}").mimetype == "font/woff2"
    assert client.get("/ohif/assets/favicon.ico").mimetype == "image/vnd.microsoft.icon"
    manifest = client.get("/ohif/manifest.json")
    assert manifest.mimetype == "application/json" and b'"/ohif/assets/' in manifest.get_data()


def test_missing_files_and_escapes_are_404_and_build_files_are_not_served(client: FlaskClient) -> None:
    for path in ("/ohif/no-such-chunk.js", "/ohif/assets/nothing.png", "/ohif/serve.json", f"/ohif/{ohif.STAMP}",
                 "/ohif/..%2f..%2fsetup.cfg", "/ohif/%2e%2e/index.html", "/ohif/assets/../../../../setup.cfg"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.mimetype == "application/json", path
    # names without a dot are app routes: index.html, never the build host's files
    dist = ohif.default_dist_dir()
    for name in ("_headers", "_redirects"):
        response = client.get(f"/ohif/{name}")
        assert response.mimetype == "text/html" and response.get_data() != (dist / name).read_bytes()


def test_not_installed_page_says_how_to_install_and_the_rest_works(app: Flask, tmp_path: Path) -> None:
    missing = tmp_path / "<b>no-ohif</b>"
    app.config[ohif.CONFIG_KEY] = str(missing)
    client = app.test_client()
    for path in ("/ohif/", "/ohif/viewer?StudyInstanceUIDs=1.2.3", "/ohif/app-config.js", "/ohif/app.bundle.css"):
        response = client.get(path)
        assert response.status_code == 503, path
        assert response.mimetype == "text/html"
        html = response.get_data(as_text=True)
        assert "scripts/fetch-ohif" in html and "scripts/setup-python" in html and ohif.DIST_ENV in html
        assert "&lt;b&gt;no-ohif&lt;/b&gt;" in html and "<b>no-ohif" not in html
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]  # the strict page policy
    assert client.get("/ui/").status_code == 200
    assert client.get("/healthz").status_code == 200
    assert client.get("/dicomweb/studies").status_code == 200


def test_ohif_goes_through_the_access_check(client: FlaskClient) -> None:
    remote = {"REMOTE_ADDR": "192.0.2.10"}
    for path in ("/ohif/", "/ohif/viewer?StudyInstanceUIDs=1.2.3", "/ohif/app-config.js", "/ohif/app.bundle.css"):
        assert client.get(path, environ_base=remote).status_code == 403, path
        assert client.get(path).status_code == 200, path


# -- OHIF in Chromium -----------------------------------------------------------------------------


@dataclass
class Studies:
    url: str
    uids: dict[str, str]  # "ct", "mr_j2k", "mr_jls" -> StudyInstanceUID


def ct_series(slices: int = 5) -> tuple[str, list[bytes]]:
    """A small axial CT series made from pydicom's CT_small.dcm (regular 5 mm spacing, new UIDs)."""
    src = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    x, y, z = (float(v) for v in src.ImagePositionPatient)
    study, series = generate_uid(), generate_uid()
    blobs = []
    for k in range(slices):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [x, y, round(z + 5.0 * k, 3)]
        ds.SliceLocation = round(z + 5.0 * k, 3)
        ds.SliceThickness = 5.0
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        blobs.append(buf.getvalue())
    return study, blobs


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studies]:
    require_dist()
    with serve_archive(tmp_path_factory.mktemp("ohif")) as (server, _archive, _config):
        uids = {}
        study, blobs = ct_series()
        assert stow(server.base, blobs).status_code == 200
        uids["ct"] = study
        for key, name in (("mr_j2k", "MR_small_jp2klossless.dcm"), ("mr_jls", "emri_small_jpeg_ls_lossless.dcm")):
            blob = Path(get_testdata_file(name)).read_bytes()
            assert stow(server.base, [blob]).status_code == 200
            uids[key] = pydicom.dcmread(io.BytesIO(blob), stop_before_pixels=True).StudyInstanceUID
        yield Studies(server.url, uids)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ohif-screenshots")


#: true once OHIF's (first) viewport holds a decoded image (OHIF exposes cornerstone as window.cornerstone)
IMAGE_SHOWN = """() => {
  const cs = window.cornerstone;
  if (!cs || !cs.getRenderingEngines) return false;
  return cs.getRenderingEngines().some(e => e.getViewports().some(v => Boolean(v.csImage)));
}"""


def viewport_pixels(page: object, path: Path) -> np.ndarray:
    """A screenshot of OHIF's first viewport canvas, as a grey-level array."""
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")  # type: ignore[attr-defined]
    png = page.locator("canvas.cornerstone-canvas").first.screenshot()  # type: ignore[attr-defined]
    path.write_bytes(png)
    return np.asarray(Image.open(io.BytesIO(png)).convert("L")).astype(np.float64)


@pytest.mark.peers
@pytest.mark.parametrize("key", ["ct", "mr_j2k", "mr_jls"])
def test_ohif_opens_the_study_and_shows_its_pixels(studies: Studies, browser: object, shots: Path, key: str) -> None:
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[attr-defined]
    try:
        page = context.new_page()
        requests: list[object] = []
        problems: list[str] = []
        page.on("request", lambda r: requests.append(r))
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        page.on("console", lambda msg: problems.append(f"console: {msg.text}")
                if "Content Security Policy" in msg.text or "Cross-Origin" in msg.text else None)
        page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        response = page.goto(f"{studies.url}/ohif/viewer?StudyInstanceUIDs={studies.uids[key]}")
        assert response.status == 200
        page.wait_for_function(IMAGE_SHOWN, timeout=120_000, polling=250)
        pixels = viewport_pixels(page, shots / f"ohif-{key}.png")
        page.screenshot(path=shots / f"ohif-{key}-page.png")
        assert pixels.std() > 10, f"the viewport looks blank (std {pixels.std():.1f})"
        assert (pixels > 60).mean() > 0.02, "hardly anything bright in the viewport"
        assert not page.get_by_text("Investigational", exact=False).count()
        assert problems == [], problems
        urls = [r.url for r in requests]  # type: ignore[attr-defined]
        outside = [u for u in urls if not u.startswith(studies.url + "/") and not u.startswith(("data:", "blob:"))]
        assert outside == [], outside
        frames = [r for r in requests if "/frames/" in r.url]  # type: ignore[attr-defined]
        assert frames, "no WADO-RS frame request"
        for r in frames:
            assert r.url.startswith(f"{studies.url}/dicomweb/studies/{studies.uids[key]}/")  # type: ignore[attr-defined]
            assert "transfer-syntax=*" in r.headers["accept"]  # type: ignore[attr-defined]
        assert any(u.endswith("/metadata") and "/series/" in u for u in urls)  # lazy (per-series) metadata
    finally:
        context.close()
