"""The built-in pages in headless Chromium (Playwright): searching the study list, the series viewer
(slices by wheel, keys and slider; window/level, presets, zoom; Hounsfield units under the cursor; a
length in mm; orientation labels; cine; colour), hostile patient data shown as text, Vietnamese, and
no Content-Security-Policy violation anywhere.

Screenshots go to the pytest temporary folder (``.../pytest-current/ui-screenshots0``)."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.uid import JPEGLSLossless

from tests.support.http import serve_archive
from tests.test_ui_pages import NGUYEN_SHOWN, XSS, XSS_SERIES, XSS_STUDY, Hospital, build_hospital

playwright_api = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.peers

CHROMIUM = "/usr/bin/chromium"
VIEWPORT = {"width": 1280, "height": 860}
XSS_NAME_SHOWN = "<img src"


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hospital]:
    with serve_archive(tmp_path_factory.mktemp("ui-browser"), compression={"transfer_syntax": JPEGLSLossless}) as (
            server, archive, _config):
        yield build_hospital(server, archive)


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ui-screenshots")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--enable-unsafe-swiftshader"])
        try:
            yield b
        finally:
            b.close()


@dataclass
class Watched:
    """A page and what went wrong on it: dialogs, script errors, CSP violations, failed requests."""

    page: object
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def _watch(page: object) -> Watched:
    w = Watched(page)

    def on_dialog(dialog: object) -> None:
        w.dialogs.append(dialog.message)  # type: ignore[attr-defined]
        dialog.dismiss()  # type: ignore[attr-defined]

    page.on("dialog", on_dialog)  # type: ignore[attr-defined]
    page.on("pageerror", lambda exc: w.errors.append(f"page error: {exc}"))  # type: ignore[attr-defined]
    page.on("console", lambda msg: w.errors.append(f"console {msg.type}: {msg.text}")  # type: ignore[attr-defined]
            if msg.type == "error" or "Content Security Policy" in msg.text else None)
    page.on("response", lambda r: w.failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)  # type: ignore[attr-defined]
    return w


def _context(browser: object, **options: object) -> Iterator[Watched]:
    context = browser.new_context(viewport=VIEWPORT, **options)  # type: ignore[attr-defined]
    try:
        w = _watch(context.new_page())
        yield w
        assert w.dialogs == [], w.dialogs
        assert w.errors == [], w.errors
        assert w.failed == [], w.failed
        styled = w.page.evaluate(  # type: ignore[attr-defined]
            "[...document.querySelectorAll('[style]:not([style=\"\"])')].map(e => e.outerHTML.slice(0, 300))")
        assert styled == [], styled
    finally:
        context.close()


@pytest.fixture
def watched(browser: object) -> Iterator[Watched]:
    yield from _context(browser, locale="en-GB")


@pytest.fixture
def watched_vi(browser: object) -> Iterator[Watched]:
    yield from _context(browser, locale="vi-VN")


# -- helpers ------------------------------------------------------------------------------------------


def open_viewer(w: Watched, url: str, *, prefetched: bool = True) -> object:
    page = w.page
    response = page.goto(url)  # type: ignore[attr-defined]
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page.wait_for_selector("#viewer[data-state=ready]", timeout=30_000)  # type: ignore[attr-defined]
    if prefetched:
        page.wait_for_selector("#viewer[data-prefetched=true]", timeout=60_000)  # type: ignore[attr-defined]
    return page


def canvas_pixels(page: object, path: Path | None = None) -> np.ndarray:
    """What the viewer's canvas shows now, as an RGB array (after the next animation frame)."""
    settle(page)
    png = page.locator("#vp-canvas").screenshot()  # type: ignore[attr-defined]
    if path is not None:
        path.write_bytes(png)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def differs(a: np.ndarray, b: np.ndarray, threshold: float = 1.0) -> bool:
    return a.shape == b.shape and float(np.abs(a - b).mean()) > threshold


def index(page: object) -> int:
    return int(page.get_attribute("#viewer", "data-index"))  # type: ignore[attr-defined]


def wait_index(page: object, n: int) -> None:
    page.wait_for_function("n => document.getElementById('viewer').dataset.index === String(n)", arg=n,  # type: ignore[attr-defined]
                           timeout=10_000)


def settle(page: object) -> None:
    """Wait until the viewer has drawn what the last input asked for (it draws on animation frames)."""
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")  # type: ignore[attr-defined]


def text(page: object, selector: str) -> str:
    settle(page)
    return (page.text_content(selector) or "").strip()  # type: ignore[attr-defined]


def percent(label: str) -> int:
    return int(re.sub(r"\D", "", label))


def canvas_box(page: object) -> dict[str, float]:
    return page.locator("#vp-canvas").bounding_box()  # type: ignore[attr-defined]


def drag(page: object, x0: float, y0: float, x1: float, y1: float, button: str = "left") -> None:
    page.mouse.move(x0, y0)  # type: ignore[attr-defined]
    page.mouse.down(button=button)  # type: ignore[attr-defined]
    page.mouse.move(x1, y1, steps=8)  # type: ignore[attr-defined]
    page.mouse.up(button=button)  # type: ignore[attr-defined]


def ct_slice_hu(h: Hospital, n: int) -> np.ndarray:
    """Hounsfield units of CT slice ``n`` (0-based) as sent."""
    slices = sorted((ds for ds in h.sent.values() if ds.SeriesInstanceUID == h.ct_series),
                    key=lambda ds: int(ds.InstanceNumber))
    ds = slices[n]
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


# -- study list ---------------------------------------------------------------------------------------


def test_typing_nguyen_finds_the_study_and_leads_to_the_viewer(hospital: Hospital, watched: Watched,
                                                               shots: Path) -> None:
    page = watched.page
    page.goto(hospital.page("/ui/"))  # type: ignore[attr-defined]
    assert page.locator("table.studies tbody tr").count() == 25  # type: ignore[attr-defined]
    page.fill("#search-name", "nguyen")  # type: ignore[attr-defined]
    page.press("#search-name", "Enter")  # type: ignore[attr-defined]
    page.wait_for_url(re.compile(r".*/ui/\?name=nguyen.*"))  # type: ignore[attr-defined]
    rows = page.locator("table.studies tbody tr")  # type: ignore[attr-defined]
    assert rows.count() == 1
    row = rows.first.inner_text()
    assert NGUYEN_SHOWN in row and "13 Sep 2020" in row and "VN-0001" in row
    page.screenshot(path=str(shots / "study-list-nguyen.png"), full_page=True)  # type: ignore[attr-defined]
    page.click(f"text={NGUYEN_SHOWN}")  # type: ignore[attr-defined]
    page.wait_for_selector("h1.patient-name")  # type: ignore[attr-defined]
    assert text(page, "h1.patient-name") == NGUYEN_SHOWN
    page.wait_for_function("() => [...document.images].every(i => i.complete && i.naturalWidth > 0)")  # type: ignore[attr-defined]
    assert page.locator(".series-card img").count() == 3  # type: ignore[attr-defined]
    page.screenshot(path=str(shots / "study-page.png"), full_page=True)  # type: ignore[attr-defined]
    page.locator(".series-card", has_text="Ngực 2.5 mm").locator("a.open-series").click()  # type: ignore[attr-defined]
    page.wait_for_selector("#viewer[data-state=ready]", timeout=30_000)  # type: ignore[attr-defined]
    assert text(page, "#vp-position") == "Image 1 / 24"


# -- the series viewer --------------------------------------------------------------------------------


def test_ct_viewer_scrolls_windows_zooms_and_reads_hounsfield_units(hospital: Hospital, watched: Watched,
                                                                   shots: Path) -> None:
    h = hospital
    page = open_viewer(watched, h.viewer(h.nguyen_study, h.ct_series))
    box = canvas_box(page)
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    first = canvas_pixels(page, shots / "ct-slice-1.png")
    assert first.std() > 20 and (first > 200).any() and (first < 20).any(), "blank image"
    assert text(page, "#vp-position") == "Image 1 / 24"
    assert [text(page, f"#vp-orient-{side}") for side in ("left", "right", "top", "bottom")] == ["R", "L", "A", "P"]

    # the wheel, the arrow keys and the slider change the slice
    page.mouse.move(cx, cy)  # type: ignore[attr-defined]
    page.mouse.wheel(0, 100)  # type: ignore[attr-defined]
    wait_index(page, 1)
    second = canvas_pixels(page)
    assert differs(first, second)
    page.mouse.wheel(0, -100)  # type: ignore[attr-defined]
    wait_index(page, 0)
    for key, expected in (("ArrowDown", 1), ("ArrowDown", 2), ("ArrowUp", 1), ("ArrowRight", 2), ("ArrowLeft", 1),
                          ("End", 23), ("Home", 0)):
        page.keyboard.press(key)  # type: ignore[attr-defined]
        wait_index(page, expected)
    page.fill("#vp-slider", "12")  # type: ignore[attr-defined]
    wait_index(page, 11)
    assert text(page, "#vp-position") == "Image 12 / 24"
    page.click("#vp-canvas", position={"x": 5, "y": 5})  # focus back on the image  # type: ignore[attr-defined]

    # the value under the cursor is the Hounsfield unit of that pixel as sent
    hu = ct_slice_hu(h, 11)
    for dx, dy in ((0, 0), (40, -60), (-90, 30)):
        page.mouse.move(cx + dx, cy + dy)  # type: ignore[attr-defined]
        m = re.fullmatch(r"\((\d+), (\d+)\) (-?\d+) HU", text(page, "#vp-pixel"))
        assert m, text(page, "#vp-pixel")
        x, y, value = int(m[1]), int(m[2]), int(m[3])
        assert value == round(hu[y, x]), (x, y, value, hu[y, x])

    # window/level by dragging, and presets
    before = canvas_pixels(page)
    window_before = text(page, "#vp-window")
    drag(page, cx, cy, cx + 150, cy + 80)
    after = canvas_pixels(page, shots / "ct-window-dragged.png")
    assert text(page, "#vp-window") != window_before and differs(before, after)
    page.click("button[data-preset=lung]")  # type: ignore[attr-defined]
    assert text(page, "#vp-window") == "W 1500 L -600"
    lung = canvas_pixels(page, shots / "ct-lung-window.png")
    assert differs(after, lung)
    page.keyboard.press("4")  # brain  # type: ignore[attr-defined]
    assert text(page, "#vp-window") == "W 80 L 40"

    # zoom by dragging with the zoom tool, and by the keyboard
    zoom_before = text(page, "#vp-zoom")
    fitted = canvas_pixels(page)
    page.click("button[data-tool=zoom]")  # type: ignore[attr-defined]
    drag(page, cx, cy, cx, cy - 120)
    assert percent(text(page, "#vp-zoom")) > percent(zoom_before)
    zoomed = canvas_pixels(page, shots / "ct-zoomed.png")
    assert differs(fitted, zoomed)
    page.click("button[data-action=fit]")  # type: ignore[attr-defined]
    assert text(page, "#vp-zoom") == zoom_before
    page.keyboard.press("+")  # type: ignore[attr-defined]
    assert percent(text(page, "#vp-zoom")) > percent(zoom_before)
    page.click("button[data-action=fit]")  # type: ignore[attr-defined]

    # a length in mm from Pixel Spacing (0.478516 mm)
    page.click("button[data-tool=measure]")  # type: ignore[attr-defined]
    scale = min(box["width"] / 512, box["height"] / 512)
    drag(page, cx - 100, cy - 40, cx + 100, cy + 40)
    expected_mm = float(np.hypot(200, 80)) / scale * 0.478516
    m = re.fullmatch(r"Length (\d+\.\d) mm", text(page, "#vp-measure"))
    assert m, text(page, "#vp-measure")
    assert abs(float(m[1]) - expected_mm) < 0.02 * expected_mm, (m[1], expected_mm)
    measured = canvas_pixels(page, shots / "ct-measurement.png")
    yellow = (measured[..., 0] > 200) & (measured[..., 1] > 170) & (measured[..., 2] < 90)
    assert yellow.sum() > 100, "the measurement line is not drawn"
    page.screenshot(path=str(shots / "ct-viewer.png"))  # type: ignore[attr-defined]


def test_multiframe_series_plays_as_cine(hospital: Hospital, watched: Watched, shots: Path) -> None:
    h = hospital
    page = open_viewer(watched, h.viewer(h.nguyen_study, h.mr_series))
    assert text(page, "#vp-frame") == "Frame 1 / 10"
    first = canvas_pixels(page, shots / "mr-frame-1.png")
    assert first.std() > 10
    page.click("#vp-play")  # type: ignore[attr-defined]
    assert text(page, "#vp-play") == "Pause"
    page.wait_for_function("() => Number(document.getElementById('viewer').dataset.index) >= 3",  # type: ignore[attr-defined]
                           timeout=10_000)
    page.click("#vp-play")  # type: ignore[attr-defined]
    assert text(page, "#vp-play") == "Play"
    stopped = index(page)
    page.wait_for_timeout(400)  # type: ignore[attr-defined]
    assert index(page) == stopped
    assert re.fullmatch(r"Frame \d+ / 10", text(page, "#vp-frame"))
    assert differs(first, canvas_pixels(page, shots / "mr-cine-stopped.png"))


@pytest.mark.parametrize("which", ["us", "cr", "xss"])
def test_other_series_show_an_image(hospital: Hospital, watched: Watched, shots: Path, which: str) -> None:
    h = hospital
    page = watched.page
    if which == "us":
        url = h.viewer(h.nguyen_study, h.us_series)
    else:
        study = h.cr_study if which == "cr" else h.xss_study
        page.goto(h.page(f"/ui/studies/{study}"))  # type: ignore[attr-defined]
        url = h.url + page.get_attribute("a.open-series", "href")  # type: ignore[attr-defined]
    open_viewer(watched, url)
    pixels = canvas_pixels(page, shots / f"{which}-viewer.png")
    assert pixels.std() > 10
    if which == "us":  # colour, rendered by the server
        assert (np.abs(pixels[..., 0] - pixels[..., 2]) > 60).sum() > 500
    if which == "cr":  # MONOCHROME1 JPEG 2000 radiograph whose Pixel Spacing is 0\0: lengths in pixels, not mm
        assert text(page, "#vp-window")
        box = canvas_box(page)
        page.click("button[data-tool=measure]")  # type: ignore[attr-defined]
        drag(page, box["x"] + 300, box["y"] + 200, box["x"] + 500, box["y"] + 200)
        assert re.fullmatch(r"Length \d+\.\d px", text(page, "#vp-measure")), text(page, "#vp-measure")
    page.screenshot(path=str(shots / f"{which}-page.png"))  # type: ignore[attr-defined]


# -- hostile data, languages -------------------------------------------------------------------------------


def test_hostile_patient_data_is_text_on_every_page(hospital: Hospital, watched: Watched, shots: Path) -> None:
    h = hospital
    page = watched.page
    page.goto(h.page("/ui/"))  # type: ignore[attr-defined]
    # "=" separates the groups of a person name: the name shown is its first group, "<img src"
    row = page.locator("table.studies tbody tr", has_text="onerror")  # type: ignore[attr-defined]
    assert row.count() == 1
    assert row.locator("td").nth(0).inner_text() == XSS_NAME_SHOWN and row.locator("td").nth(1).inner_text() == XSS
    assert page.locator("img").count() == 0 and page.locator("script:not([src])").count() == 0  # type: ignore[attr-defined]
    page.screenshot(path=str(shots / "xss-study-list.png"), full_page=True)  # type: ignore[attr-defined]
    page.goto(h.page(f"/ui/studies/{h.xss_study}"))  # type: ignore[attr-defined]
    assert text(page, "h1.patient-name") == XSS_NAME_SHOWN and text(page, ".facts dd") == XSS
    assert text(page, ".study-description") == XSS_STUDY
    assert text(page, ".series-description") == XSS_SERIES
    assert page.locator("img[src=x], img[src=y]").count() == 0  # type: ignore[attr-defined]
    page.screenshot(path=str(shots / "xss-study-page.png"), full_page=True)  # type: ignore[attr-defined]
    open_viewer(watched, h.viewer(h.xss_study, h.xss_series))
    assert text(page, ".viewer-info .patient-name") == XSS_NAME_SHOWN and text(page, ".viewer-info .patient-id") == XSS
    assert text(page, ".viewer-info .series-description") == XSS_SERIES
    page.wait_for_timeout(300)  # type: ignore[attr-defined]
    assert watched.dialogs == []


def test_vietnamese_pages(hospital: Hospital, watched_vi: Watched, shots: Path) -> None:
    h = hospital
    page = watched_vi.page
    page.goto(h.page("/ui/"))  # the browser asks for Vietnamese  # type: ignore[attr-defined]
    assert text(page, ".search-main button") == "Tìm kiếm"
    assert page.get_attribute("html", "lang") == "vi"  # type: ignore[attr-defined]
    page.fill("#search-name", "Nguyễn")  # type: ignore[attr-defined]
    page.press("#search-name", "Enter")  # type: ignore[attr-defined]
    page.wait_for_url(re.compile(r".*name=.*"))  # type: ignore[attr-defined]
    assert "13 thg 9 2020" in page.locator("table.studies tbody tr").first.inner_text()  # type: ignore[attr-defined]
    page.screenshot(path=str(shots / "vi-study-list.png"), full_page=True)  # type: ignore[attr-defined]
    page.goto(h.page(f"/ui/studies/{h.nguyen_study}?lang=vi"))  # type: ignore[attr-defined]
    assert text(page, "#download-study") == "Tải ca chụp (ZIP)"
    page.screenshot(path=str(shots / "vi-study-page.png"), full_page=True)  # type: ignore[attr-defined]
    open_viewer(watched_vi, h.viewer(h.nguyen_study, h.ct_series) + "?lang=vi")
    assert text(page, "#vp-position") == "Ảnh 1 / 24"
    assert text(page, "button[data-preset=lung]") == "Phổi"
    page.screenshot(path=str(shots / "vi-viewer.png"))  # type: ignore[attr-defined]
    page.goto(h.page("/ui/?lang=en"))  # type: ignore[attr-defined]
    assert text(page, ".search-main button") == "Search"
