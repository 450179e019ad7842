"""The viewers in headless Chromium (Playwright): the built-in series viewer and OHIF, on the benchmark's CT.

For each round, in a fresh browser context (empty HTTP cache; the server is warmed by one untimed load):

* built-in viewer (``/ui/studies/{study}/series/{series}``): the time from navigation start until the first
  image is drawn on its canvas and a frame has been presented (``#viewer[data-state=ready]`` + one animation
  frame); then, once every slice is loaded (``data-prefetched``), the slices per second shown while stepping
  through the whole series with the arrow key, each step waiting until that slice is drawn (at most one
  slice per display frame, 60 per second, as for a person scrolling);
* OHIF (``/ohif/viewer?StudyInstanceUIDs={study}``): the time from navigation start until OHIF's viewport holds
  the first decoded CT image and a frame has been presented, with an empty HTTP cache (the target) and again
  in the same context (its hashed bundles cached, as on a radiologist's second study).

The machines this runs on have no GPU. OHIF needs WebGL, so its browser emulates a GPU with SwiftShader
(``--use-gl=angle --use-angle=swiftshader``); in that browser every 2D canvas is "accelerated" by the same
emulation, which costs the built-in viewer ~80 ms per drawn slice, slower than any real GPU or Chromium's
own CPU raster path. The built-in viewer (a 2D canvas, no WebGL) is therefore measured in a browser with
Chromium's default software rendering; its scrolling rate under the emulated GPU is recorded too
(``viewer_builtin_scroll_emulated_gpu`` in the JSON).

Times are taken inside the page (``performance.now()``, whose origin is the navigation start), so
Playwright's own round trips do not count. PACS-lite only: the targets are absolute.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests

from . import data as bdata
from .report import Target
from .systems import ensure_running

CHROMIUM = "/usr/bin/chromium"
#: OHIF: WebGL on SwiftShader
CHROMIUM_ARGS = ["--enable-unsafe-swiftshader", "--use-gl=angle", "--use-angle=swiftshader"]
#: the built-in viewer: Chromium's software 2D canvas
CHROMIUM_ARGS_2D = ["--enable-unsafe-swiftshader"]
VIEWPORT = {"width": 1280, "height": 860}
TIMEOUT_MS = 180_000

#: Runs in every page before its scripts: records when the built-in viewer first shows an image, and when
#: OHIF's viewport first holds one (each after the next presented frame), as performance.now() values.
PROBE = """(() => {
  const marks = window.__benchMarks = {};
  const presented = name => requestAnimationFrame(() => {
    if (!(name in marks)) marks[name] = performance.now();
  });
  const check = () => {
    const v = document.getElementById('viewer');
    if (v && v.dataset.state === 'ready' && !('builtinShown' in marks)) presented('builtinShown');
    if (v && v.dataset.prefetched === 'true' && !('prefetched' in marks)) marks.prefetched = performance.now();
    const cs = window.cornerstone;
    if (!('ohifShown' in marks) && cs && cs.getRenderingEngines
        && cs.getRenderingEngines().some(e => e.getViewports().some(p => Boolean(p.csImage)))) presented('ohifShown');
    if (!('builtinShown' in marks && 'prefetched' in marks) && !('ohifShown' in marks)) requestAnimationFrame(check);
  };
  requestAnimationFrame(check);
})();"""

#: Steps through every slice with ArrowDown, waiting for each to be drawn; returns [slices stepped, ms].
SCROLL = """async () => {
  const v = document.getElementById('viewer');
  const frame = () => new Promise(r => requestAnimationFrame(r));
  document.dispatchEvent(new KeyboardEvent('keydown', {key: 'Home', bubbles: true}));
  while (v.dataset.index !== '0') await frame();
  await frame();
  const count = Number(v.dataset.count);
  const started = performance.now();
  for (let i = 1; i < count; i++) {
    document.dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowDown', bubbles: true}));
    while (v.dataset.index !== String(i)) await frame();
  }
  return [count - 1, performance.now() - started];
}"""


def _mark(page: Any, name: str) -> float:
    page.wait_for_function(f"() => window.__benchMarks && '{name}' in window.__benchMarks", timeout=TIMEOUT_MS,
                           polling=50)
    return float(page.evaluate(f"() => window.__benchMarks['{name}']"))


def builtin_viewer(browser: Any, url: str) -> dict[str, float]:
    """One cold load of the built-in viewer: first image (s), prefetch done (s), scrolling (slices/s)."""
    context = browser.new_context(viewport=VIEWPORT)
    try:
        context.add_init_script(PROBE)
        page = context.new_page()
        response = page.goto(url, timeout=TIMEOUT_MS)
        if response is None or response.status != 200:
            raise RuntimeError(f"built-in viewer: HTTP {response.status if response else '?'}")
        first = _mark(page, "builtinShown") / 1000
        prefetched = _mark(page, "prefetched") / 1000
        steps, ms = page.evaluate(SCROLL)
        return {"first": first, "prefetched": prefetched, "slices_per_s": steps / (ms / 1000), "steps": steps}
    finally:
        context.close()


def ohif_viewer(browser: Any, url: str) -> tuple[float, float]:
    """OHIF on the study, cold then warm HTTP cache: seconds until its viewport shows the first image."""
    context = browser.new_context(viewport=VIEWPORT)
    try:
        context.add_init_script(PROBE)
        page = context.new_page()
        times = []
        for _load in ("cold", "warm"):
            response = page.goto(url, timeout=TIMEOUT_MS)
            if response is None or response.status != 200:
                raise RuntimeError(f"OHIF: HTTP {response.status if response else '?'} (is OHIF installed? "
                                   "scripts/fetch-ohif)")
            times.append(_mark(page, "ohifShown") / 1000)
        return times[0], times[1]
    finally:
        context.close()


def phase_viewer(ctx: Any) -> None:
    """The built-in viewer and OHIF on the CT series held by PACS-lite (see the module docstring)."""
    from .measure import load_base

    if not Path(CHROMIUM).exists():
        ctx.results.error(f"viewer: {CHROMIUM} is missing (Debian package chromium)")
        return
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        ctx.results.error("viewer: Playwright for Python is not installed (the test extras)")
        return
    load_base(ctx, "pacs", ("ct",))
    pacs = ctx.system("pacs")
    ensure_running(pacs)
    base_marker = f"{bdata.UID_ROOT}.{bdata.BASE_VARIANT}."
    marker = f"{bdata.UID_ROOT}.{ctx.ct_variant['pacs']}."
    study = ctx.data.ct.study_uids[0].replace(base_marker, marker)
    series = ctx.data.ct_series_uid.replace(base_marker, marker)
    slices = len(ctx.data.ct.files)
    builtin_url = f"{pacs.url}/ui/studies/{study}/series/{series}"
    ohif_url = f"{pacs.url}/ohif/viewer?StudyInstanceUIDs={study}"
    ohif_installed = requests.get(f"{pacs.url}/ohif/", timeout=30).status_code == 200
    if not ohif_installed:
        ctx.results.error("viewer: OHIF is not installed for this PACS-lite (run scripts/fetch-ohif)")
    res = ctx.results
    first_row = res.row("viewer.builtin.first_image", "Viewers",
                        f"Built-in viewer: first image on screen, {slices}-slice CT (cold browser cache)", "s",
                        "lower", target=Target("value<=", 1.0, "<= 1 s"))
    scroll_row = res.row("viewer.builtin.scroll", "Viewers",
                         f"Built-in viewer: scrolling through all {slices} slices after prefetch", "slices/s",
                         "higher", target=Target("value>=", 20.0, ">= 20 slices/s"))
    ohif_row = res.row("viewer.ohif.first_image", "Viewers",
                       f"OHIF: first CT image on screen, {slices}-slice study (cold browser cache)", "s", "lower",
                       target=Target("value<=", 3.0, "<= 3 s"))
    ohif_warm_row = res.row("viewer.ohif.first_image_warm", "Viewers",
                            f"OHIF: first CT image on screen, {slices}-slice study (OHIF's files cached)", "s",
                            "lower")
    with sync_playwright() as p:
        browser_2d = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS_2D)
        browser_gl = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            # warm-up (server caches, each browser's first renderer); the built-in viewer under the emulated GPU
            builtin_viewer(browser_2d, builtin_url)
            emulated = builtin_viewer(browser_gl, builtin_url)
            res.extra["viewer_builtin_scroll_emulated_gpu"] = round(emulated["slices_per_s"], 1)
            if ohif_installed:
                ohif_viewer(browser_gl, ohif_url)
            for r in range(ctx.scale.rounds):
                ensure_running(pacs)
                b = builtin_viewer(browser_2d, builtin_url)
                first_row.add("pacs", b["first"])
                scroll_row.add("pacs", b["slices_per_s"])
                res.extra.setdefault("viewer_builtin_prefetched_s", []).append(round(b["prefetched"], 3))
                message = (f"  round {r + 1}: built-in first image {b['first']:.3f} s, all {slices} slices loaded "
                           f"{b['prefetched']:.2f} s, scrolling {b['slices_per_s']:.1f} slices/s")
                if ohif_installed:
                    cold, warm = ohif_viewer(browser_gl, ohif_url)
                    ohif_row.add("pacs", cold)
                    ohif_warm_row.add("pacs", warm)
                    message += f"; OHIF first image {cold:.2f} s (cached files {warm:.2f} s)"
                ctx.log(message)
        finally:
            browser_gl.close()
            browser_2d.close()
