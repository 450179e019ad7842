"""The OHIF v3 viewer, prebuilt, under ``/ohif/``, reading this server's own DICOMweb.

Routes::

    GET /ohif/app-config.js   OHIF's configuration, generated here (the dist's own is never served)
    GET /ohif/<file>          a file of the dist, with its MIME type
    GET /ohif/<route>         index.html for the app's routes (``/ohif/``, ``/ohif/viewer?StudyInstanceUIDs=...``)

The dist (``@ohif/app``'s ``dist/``, pinned and checked by ``scripts/fetch-ohif``) lives outside the
package, in ``$PACSLITE_OHIF_DIR`` or ``<sys.prefix>/share/pacs-lite/ohif`` (``.venv/share/pacs-lite/ohif``
in a checkout). Without it ``/ohif/`` answers 503 with a page that says how to install it; nothing else
depends on it.

The dist is built for the root of a site (``PUBLIC_URL=/``): its index.html, its style sheet and the
webpack runtime of its bundles name their files as ``/...``. Those prefixes are rewritten to ``/ohif/``
as the files are served (once per file and process, kept in memory, as is the gzip form of text and
WebAssembly files for clients that accept it). ``app-config.js`` points OHIF at
``window.location.origin + '/dicomweb'``: same origin, whatever host the browser used, so no CORS and
no outside URL. Every request passes the application's access check like any other route.

OHIF's pages get their own Content-Security-Policy (:func:`ohif_csp`): the strict page policy plus what
OHIF needs from this origin only (WebAssembly codecs, ``blob:`` workers, inline styles, the hashes of
the index's two inline scripts), and COOP/COEP so that SharedArrayBuffer is available to its volume
viewports (COEP on every file: a worker started by a COEP page loads only if its script has it too).
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import sys
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from flask import Blueprint, Flask, Response, current_app, render_template, request, send_file
from werkzeug.security import safe_join

from .errors import ApiError

PREFIX = "/ohif"
#: Environment variable naming the folder of OHIF's dist (default: :func:`default_dist_dir`).
DIST_ENV = "PACSLITE_OHIF_DIR"
#: ``app.config`` key that overrides the environment (tests).
CONFIG_KEY = "OHIF_DIR"
STAMP = ".pacs-lite-ohif"

bp = Blueprint("ohif", __name__, url_prefix=PREFIX, template_folder="templates")

MIME_TYPES = {
    ".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css",
    ".json": "application/json", ".jsonc": "application/json", ".map": "application/json",
    ".wasm": "application/wasm", ".woff2": "font/woff2", ".woff": "font/woff", ".ttf": "font/ttf",
    ".svg": "image/svg+xml", ".png": "image/png", ".jpg": "image/jpeg", ".gif": "image/gif",
    ".ico": "image/vnd.microsoft.icon", ".xml": "application/xml", ".txt": "text/plain",
    ".webapp": "application/x-web-app-manifest+json",
}
TEXT_TYPES = frozenset({".html", ".js", ".mjs", ".css", ".json", ".webapp"})
#: Sent gzip-compressed to clients that accept it (compressed once per file and process, kept in memory):
#: OHIF's main bundle is 17 MB, 3.4 MB compressed.
GZIP_TYPES = TEXT_TYPES | {".wasm", ".svg", ".map", ".jsonc", ".xml", ".txt"}
GZIP_MIN_BYTES = 1024
GZIP_LEVEL = 5
#: Larger files are sent as they are (the dist's largest is 17 MB).
MAX_REWRITE_BYTES = 64 * 1024**2
#: Files whose name carries a content hash never change under that name.
_HASHED = re.compile(r"(^|\.)[0-9a-f]{16}\.(js|wasm|woff2?|css)$")
#: Dist files that are never served: ours replaces the first, the others are the build host's.
_NOT_SERVED = frozenset({"app-config.js", "_headers", "_redirects", "serve.json", STAMP})

_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.S)
_ROOT_ATTR = re.compile(rb'(\s(?:href|src|content)=")/(?!/)')
_ROOT_JSON = re.compile(rb'("(?:src|start_url|scope)"\s*:\s*")/(?!/)')
_CSS_URL = re.compile(rb"url\((['\"]?)/(?!/)")
_WEBPACK_PUBLIC_PATH = re.compile(rb'(__webpack_require__\.p\s*=\s*)"/"')


def default_dist_dir() -> Path:
    """``$PACSLITE_OHIF_DIR``, else ``<sys.prefix>/share/pacs-lite/ohif`` (where scripts/fetch-ohif puts it)."""
    configured = os.environ.get(DIST_ENV)
    return Path(configured) if configured else Path(sys.prefix) / "share" / "pacs-lite" / "ohif"


def ohif_csp(script_hashes: tuple[str, ...] = ()) -> str:
    """The Content-Security-Policy of OHIF's pages: this origin only, never another.

    Beyond the strict page policy: the hashes of index.html's inline scripts (no ``'unsafe-inline'``
    script), ``'wasm-unsafe-eval'`` (its codecs and tools compile WebAssembly in the page; no
    ``'unsafe-eval'``), ``blob:`` workers and scripts (workers built in the page), inline styles (React
    style attributes), ``blob:``/``data:`` images, fonts, fetches and media.
    """
    hashes = "".join(f" '{h}'" for h in script_hashes)
    return (
        f"default-src 'self'; script-src 'self' 'wasm-unsafe-eval' blob:{hashes}; worker-src 'self' blob:; "
        "style-src 'self' 'unsafe-inline'; img-src 'self' blob: data:; font-src 'self' data:; "
        "connect-src 'self' blob: data:; media-src 'self' blob: data:; manifest-src 'self'; object-src 'none'; "
        "base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
    )


def app_config_js() -> str:
    """OHIF's ``window.config``: one DICOMweb data source, this origin's ``/dicomweb``, no outside URL."""
    return """/* Generated by PACS-lite (viewer/ohif.py); replaces the dist's app-config.js. */
(function () {
  var dicomweb = window.location.origin + '/dicomweb';
  window.config = {
    name: 'pacs-lite',
    routerBasename: '@PREFIX@',
    extensions: [],
    modes: [],
    // no guided tour over the first image
    customizationService: [{ 'ohif.tours': { $set: [] } }],
    showStudyList: true,
    investigationalUseDialog: { option: 'never' },
    showWarningMessageForCrossOrigin: false,
    showCPUFallbackMessage: true,
    showLoadingIndicator: true,
    strictZSpacingForVolumeViewport: true,
    maxNumberOfWebWorkers: 3,
    maxNumRequests: { interaction: 100, thumbnail: 75, prefetch: 25 },
    showErrorDetails: 'production',
    defaultDataSourceName: 'pacs-lite',
    dataSources: [
      {
        namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
        sourceName: 'pacs-lite',
        configuration: {
          friendlyName: 'PACS-lite',
          name: 'pacs-lite',
          wadoUriRoot: dicomweb,
          qidoRoot: dicomweb,
          wadoRoot: dicomweb,
          qidoSupportsIncludeField: true,
          supportsReject: false,
          dicomUploadEnabled: false,
          imageRendering: 'wadors',
          thumbnailRendering: 'wadors',
          enableStudyLazyLoad: true,
          supportsFuzzyMatching: true,
          supportsWildcard: true,
          staticWado: false,
          singlepart: 'bulkdata,video,pdf',
          bulkDataURI: { enabled: true },
          omitQuotationForMultipartRequest: true
        }
      }
    ],
    httpErrorHandler: function (error) {
      console.warn('DICOMweb request failed', error && error.status);
    }
  };
})();
""".replace("@PREFIX@", PREFIX)


# -- the dist --------------------------------------------------------------------------------------


@dataclass
class _Served:
    """A dist file as it is sent: rewritten bytes (``None``: the file as it is), gzip, and its identity."""

    mtime_ns: int
    size: int
    data: bytes | None
    gzip: bytes | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def etag(self) -> str:
        return f"{self.mtime_ns:x}-{self.size:x}-{PREFIX.strip('/')}"

    def gzipped(self, file: Path) -> bytes:
        """The bytes to send, gzip-compressed (computed on first use)."""
        with self.lock:
            if self.gzip is None:
                raw = self.data if self.data is not None else file.read_bytes()
                compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # 31: gzip container
                self.gzip = compressor.compress(raw) + compressor.flush()
            return self.gzip


class OhifDist:
    """One dist folder: finds files, rewrites root-relative prefixes once per file, keeps the results."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[Path, _Served] = {}
        self._lock = threading.Lock()

    @property
    def installed(self) -> bool:
        return (self.root / "index.html").is_file()

    def version(self) -> str:
        try:
            return (self.root / STAMP).read_text().split()[0]
        except (OSError, IndexError):
            return "unknown version"

    def find(self, path: str) -> Path | None:
        """The file at ``path`` inside the dist, or ``None`` (no escape from the folder)."""
        if not path or path.rsplit("/", 1)[-1] in _NOT_SERVED:
            return None
        joined = safe_join(str(self.root), path)
        if joined is None:
            return None
        file = Path(joined)
        return file if file.is_file() else None

    def served(self, file: Path) -> _Served:
        """The bytes to send for ``file``: rewritten when it names files under ``/``."""
        st = file.stat()
        cached = self._cache.get(file)
        if cached is not None and cached.mtime_ns == st.st_mtime_ns and cached.size == st.st_size:
            return cached
        data = None
        if file.suffix in TEXT_TYPES and st.st_size <= MAX_REWRITE_BYTES:
            raw = file.read_bytes()
            rewritten = rewrite(file.suffix, raw)
            data = rewritten if rewritten != raw else None
        entry = _Served(st.st_mtime_ns, st.st_size, data)
        with self._lock:
            self._cache[file] = entry
        return entry


def rewrite(suffix: str, data: bytes) -> bytes:
    """``data`` with the dist's root-relative references moved under :data:`PREFIX`."""
    prefix = PREFIX.encode() + b"/"
    if suffix == ".html":
        data = data.replace(b'window.PUBLIC_URL="/"', b'window.PUBLIC_URL="' + prefix + b'"')
        return _ROOT_ATTR.sub(rb"\1" + prefix, data)
    if suffix in (".js", ".mjs"):
        return _WEBPACK_PUBLIC_PATH.sub(rb'\1"' + prefix + b'"', data)
    if suffix == ".css":
        return _CSS_URL.sub(rb"url(\1" + prefix, data)
    return _ROOT_JSON.sub(rb"\1" + prefix, data)


def script_hashes(html: bytes) -> tuple[str, ...]:
    """CSP hashes (``sha256-...``) of the inline scripts of ``html``."""
    return tuple("sha256-" + base64.b64encode(hashlib.sha256(m.group(1)).digest()).decode()
                 for m in _INLINE_SCRIPT.finditer(html))


def dist() -> OhifDist:
    """The dist of the current application (a new one when its folder was changed)."""
    root = Path(current_app.config.get(CONFIG_KEY) or default_dist_dir())
    current = current_app.extensions.get("pacs_lite.ohif")
    if current is None or current.root != root:
        current = OhifDist(root)
        current_app.extensions["pacs_lite.ohif"] = current
    return current


# -- views -----------------------------------------------------------------------------------------


def _not_installed(d: OhifDist) -> tuple[str, int, dict[str, str]]:
    return render_template("ohif/not_installed.html", folder=str(d.root), env=DIST_ENV), 503, {
        "Cache-Control": "no-store", "Retry-After": "3600"}


@bp.get("/app-config.js")
def app_config() -> Response | tuple[str, int, dict[str, str]]:
    """OHIF's configuration (generated; the dist's own file is never served)."""
    d = dist()
    if not d.installed:
        return _not_installed(d)
    return Response(app_config_js(), mimetype="text/javascript", headers={"Cache-Control": "no-cache"})


@bp.get("/", defaults={"path": ""})
@bp.get("/<path:path>")
def serve(path: str) -> Response | tuple[str, int, dict[str, str]]:
    """A file of the dist, or index.html for the app's routes."""
    d = dist()
    if not d.installed:
        return _not_installed(d)
    file = d.find(path)
    if file is None:
        if "." in path.rsplit("/", 1)[-1]:
            raise ApiError(404, "no such file in the OHIF viewer")
        file = d.root / "index.html"
    return _send(d, file)


def _send(d: OhifDist, file: Path) -> Response:
    served = d.served(file)
    mimetype = MIME_TYPES.get(file.suffix.lower(), "application/octet-stream")
    gzip = (file.suffix.lower() in GZIP_TYPES and served.size >= GZIP_MIN_BYTES
            and "gzip" in request.accept_encodings)
    if gzip:
        response = send_file(io.BytesIO(served.gzipped(file)), mimetype=mimetype, conditional=True,
                             etag=served.etag + "-gz", last_modified=served.mtime_ns / 1e9)
        if response.status_code == 200:
            response.headers["Content-Encoding"] = "gzip"
    elif served.data is None:
        response = send_file(file, mimetype=mimetype, conditional=True, etag=True)
    else:
        response = send_file(io.BytesIO(served.data), mimetype=mimetype, conditional=True, etag=served.etag,
                             last_modified=served.mtime_ns / 1e9)
    if file.suffix.lower() in GZIP_TYPES:
        response.vary.add("Accept-Encoding")
    if _HASHED.search(file.name):
        response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
    else:
        response.headers["Cache-Control"] = "no-cache"
    if mimetype == "text/html":
        response.headers["Content-Security-Policy"] = ohif_csp(script_hashes(served.data or file.read_bytes()))
        response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    # on every file: a dedicated worker started by a COEP page loads only when its own script has COEP too
    response.headers["Cross-Origin-Embedder-Policy"] = "require-corp"
    return response


def init_ohif(app: Flask) -> None:
    """Serve OHIF under ``/ohif/`` on ``app``."""
    app.register_blueprint(bp)
