"""The HTML report in a real browser: Debian's chromium driven by playwright, the page opened from a file:// URL.

No browser is downloaded: the system's chromium is used, and a missing one fails these tests (CI installs it with
`apt-get install -y chromium`). Every test asserts that the page logged no error and asked for no address.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
CHROMIUM_NAMES = ("chromium", "chromium-browser")


def chromium_path() -> str:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("no chromium on PATH: install it (apt-get install -y chromium) to run the browser tests")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless chromium for the module."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install '.[test]'")
    with sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=chromium_path())
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Any]]:
    """name -> (the report file, its analysis): mhsa on a scene, cbam on a tall photo cut by --preprocess crop."""
    import attnviz
    from attnviz.report.build import analyse_for_report, analysis_page
    from attnviz.report.page import write

    folder = tmp_path_factory.mktemp("reports")
    made = {}
    for name, block, photo, mode in [
        ("mhsa", "mhsa", SAMPLES / "scenes" / "scene_circle.png", "resize"),
        ("cbam", "cbam", SAMPLES / "rocket_tall.jpg", "crop"),
    ]:
        loaded = attnviz.load(block, device="cpu")
        analysis, _ = analyse_for_report(loaded, photo, preprocess=mode)
        made[name] = (write(analysis_page(analysis, loaded), folder / f"{name}.html"), analysis)
    return made


class Opened:
    """A report open in a page, with what the page logged and asked for."""

    def __init__(self, browser: Any, path: Path) -> None:
        self.page = browser.new_page(viewport={"width": 1400, "height": 1000})
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type in ("error", "warning") else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("requestfailed", lambda r: self.requests.append(r.url))
        self.page.route("**/*", self._route)
        self.url = path.resolve().as_uri()
        self.page.goto(self.url)
        self.page.wait_for_function("window.attnviz && window.attnviz.ready")

    def _route(self, route: Any) -> None:
        url = route.request.url
        if url == self.url or url.startswith("data:"):
            route.continue_()
        else:  # anything else is a request the page must not make
            self.requests.append(url)
            route.abort()

    def display_point(self, canvas: Any, x: int, y: int) -> tuple[float, float]:
        """Where, on the screen, the centre of original pixel (x, y) lies on `canvas`."""
        width, height = self.page.evaluate("window.attnviz.payload.geometry.original")
        box = canvas.bounding_box()
        return box["x"] + (x + 0.5) / width * box["width"], box["y"] + (y + 0.5) / height * box["height"]

    def clean(self) -> None:
        assert self.errors == [], self.errors
        assert self.requests == [], self.requests
        self.page.close()


@pytest.fixture
def opened(browser: Any) -> Iterator[Any]:
    pages: list[Opened] = []

    def open_report(path: Path) -> Opened:
        pages.append(Opened(browser, path))
        return pages[-1]

    yield open_report
    for page in pages:
        page.clean()


def test_click_a_pixel_shows_its_captured_row(reports: dict, opened: Any, tmp_path: Path) -> None:
    from attnviz.images import original_to_cell
    from attnviz.maps import query_plane

    path, analysis = reports["mhsa"]
    report = opened(path)
    stage = report.page.evaluate("window.attnviz.payload.stages.map(s => s.title)").index("stage 3")
    report.page.evaluate(f"window.attnviz.select({stage}, 1, 0)")
    canvas = report.page.locator("canvas.photo").nth(2)
    report.page.mouse.click(*report.display_point(canvas, 51, 99))
    shown = report.page.evaluate("window.attnviz.shown")
    m = next(m for m in analysis.recording if m.name == shown["name"])
    assert m.layer == "layer3.1.attn" and shown["pixel"] == [51, 99]
    row, col = original_to_cell(51.5, 99.5, analysis.geometry, *m.grid, analysis.placement)
    assert shown["cell"] == [row, col] and shown["token"] == row * m.grid[1] + col
    expected = query_plane(m, shown["token"])[0].reshape(len(shown["heads"]), -1)
    for head, values in zip(expected, (h["values"] for h in shown["heads"]), strict=True):
        assert np.abs(np.array(values) - head).max() <= (head.max() - head.min()) / 510 + 1e-6
    caption = report.page.locator("figcaption").nth(2).text_content()
    assert f"query 51,99 → cell {row},{col}" in caption and "head 2" in caption
    report.page.screenshot(path=str(tmp_path / "mhsa_report.png"), full_page=True)
    assert (tmp_path / "mhsa_report.png").stat().st_size > 50_000


def test_hover_a_bar_reads_its_channel_and_value(reports: dict, opened: Any) -> None:
    from attnviz.maps import channel_vector

    path, analysis = reports["cbam"]
    report = opened(path)
    report.page.evaluate("window.attnviz.select(2, 1, 0)")
    assert report.page.evaluate("window.attnviz.shown.name") == "layer3.1.attn:channel"
    weights = channel_vector(next(m for m in analysis.recording if m.name == "layer3.1.attn:channel"))[0]
    chart = report.page.locator("canvas.chart")
    left, bar = (float(chart.get_attribute(a)) for a in ("data-left", "data-bar-width"))
    box = chart.bounding_box()
    scale = box["width"] / float(chart.get_attribute("width"))
    for rank in (0, 17, len(weights) - 1):
        report.page.mouse.move(box["x"] + (left + (rank + 0.5) * bar) * scale, box["y"] + box["height"] / 2)
        readout = report.page.locator("#readout")
        channel, value = int(readout.get_attribute("data-channel")), float(readout.get_attribute("data-value"))
        assert channel == int(np.argsort(-weights, kind="stable")[rank])
        assert value == pytest.approx(float(weights[channel]), abs=1e-6)
        text = readout.text_content()
        assert f"channel {channel} · weight" in text and f"rank {rank + 1} of" in text
    report.page.select_option("#sort", "channel")
    report.page.mouse.move(box["x"] + (left + 5.5 * bar) * scale, box["y"] + box["height"] / 2)
    assert report.page.locator("#readout").get_attribute("data-channel") == "5"


def test_maps_line_up_with_the_photo_as_python_draws_them(reports: dict, opened: Any) -> None:
    """The page's resampling of a spatial map on a tall, centre-cropped photo equals `Analysis.on_photo`, NaN where
    the crop cut the photo, and the value under the cursor is the map's own cell."""
    from attnviz.images import original_to_cell
    from attnviz.maps import plane

    path, analysis = reports["cbam"]
    report = opened(path)
    report.page.evaluate("window.attnviz.select(1, 1, 1)")
    entry = report.page.evaluate("window.attnviz.shown.name")
    m = next(m for m in analysis.recording if m.name == entry)
    cells = plane(m)[0]
    dw, dh = report.page.evaluate("window.attnviz.payload.display")
    script = f"Array.from(resample(new Float32Array({cells.ravel().tolist()}), {cells.shape[0]}, {cells.shape[1]}))"
    drawn = np.array(report.page.evaluate(script), dtype=np.float64)
    expected = analysis.on_photo(cells, dw).ravel()
    assert drawn.shape == expected.shape == (dw * dh,)
    assert np.array_equal(np.isnan(drawn), np.isnan(expected)) and np.isnan(expected).any()
    assert np.nanmax(np.abs(drawn - expected)) < 1e-5
    canvas = report.page.locator("canvas.photo").first
    report.page.mouse.move(*report.display_point(canvas, 150, 200))
    readout = report.page.locator("#readout")
    row, col = original_to_cell(150.5, 200.5, analysis.geometry, *cells.shape, analysis.placement)
    assert (readout.get_attribute("data-row"), readout.get_attribute("data-col")) == (str(row), str(col))
    step = float(cells.max() - cells.min()) / 255
    assert float(readout.get_attribute("data-value")) == pytest.approx(float(cells[row, col]), abs=step / 2 + 1e-6)


def test_asff_levels_dominant_level_and_detections(browser: Any, opened: Any, tmp_path: Path) -> None:
    from attnviz.detection import asff_weights

    view = asff_weights("demo", SAMPLES / "scenes" / "detection_scene.png", device="cpu")
    (path,) = view.save(tmp_path, "html")
    report = opened(path)
    titles = report.page.evaluate("window.attnviz.payload.stages.map(s => s.title)")
    assert titles == [f"fusion level {k}" for k in range(len(view.analysis.levels))]
    boxes = view.summary["detections"]
    assert report.page.evaluate("window.attnviz.shown") == {"type": "asff", "name": "asff.0", "boxes": len(boxes)}
    assert report.page.locator("canvas.photo").count() == 4  # three source levels and the dominant level
    best = boxes[0]
    x0, y0, x1, y1 = best["box"]
    dominant = report.page.locator("canvas.photo").nth(3)
    report.page.mouse.move(*report.display_point(dominant, int((x0 + x1) / 2), int((y0 + y1) / 2)))
    text = report.page.locator("#readout").text_content()
    assert f"box {best['class']} {best['score']:.2f}" in text and "fine (stride 8)" in text
