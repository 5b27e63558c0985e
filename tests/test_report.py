"""The HTML report without a browser: what it holds, how the numbers travel, its size budget, and its commands.

What the page does with the numbers is tested in a real browser in test_report_browser.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from attnviz.errors import UsageError
from attnviz.report.encode import dequantised, exact, quantised, quantised_rows
from tests.cli_utils import run

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
CIRCLE = SAMPLES / "scenes" / "scene_circle.png"


def payload_of(html: str) -> dict:
    """The JSON data block of a report page."""
    found = re.search(r"<script type='application/json' id='attnviz-data'>(.*?)</script>", html, re.S)
    assert found is not None
    return json.loads(found.group(1).replace("<\\/", "</"))


def outside_data(html: str) -> str:
    """The page without its data block (base64 there may spell anything)."""
    return re.sub(r"<script type='application/json' id='attnviz-data'>.*?</script>", "", html, flags=re.S)


# ------------------------------------------------------------------------------------------------- encoding


def test_quantised_values_come_back_within_half_a_step() -> None:
    values = np.random.default_rng(0).normal(size=(7, 11)).astype(np.float32)
    back = dequantised(quantised(values))
    step = (values.max() - values.min()) / 255
    assert back.shape == values.shape
    assert np.abs(back - values).max() <= step / 2 + 1e-6
    assert back.min() == pytest.approx(values.min()) and back.max() == pytest.approx(values.max())


def test_rows_keep_their_own_range() -> None:
    rows = np.stack([np.linspace(0, 1e-4, 50), np.linspace(0.2, 0.9, 50)]).astype(np.float32)
    back = dequantised(quantised_rows(rows))
    assert np.abs(back[0] - rows[0]).max() <= 1e-4 / 510 + 1e-9  # a tiny row is not flattened by a big one
    assert np.abs(back[1] - rows[1]).max() <= 0.7 / 510 + 1e-6


def test_flat_and_exact_arrays() -> None:
    assert np.array_equal(dequantised(quantised(np.full((3, 3), 0.5))), np.full((3, 3), 0.5, np.float32))
    weights = np.random.default_rng(1).random(300).astype(np.float32)
    assert np.array_equal(dequantised(exact(weights)), weights)


# ------------------------------------------------------------------------------------------------- contents


@pytest.fixture(scope="module")
def mhsa() -> tuple:
    """resnet18 + mhsa (demo weights), the circle scene analysed with every attention row, and its page."""
    import attnviz
    from attnviz.report.build import analyse_for_report, analysis_page

    loaded = attnviz.load("mhsa", device="cpu")
    analysis, notes = analyse_for_report(loaded, CIRCLE)
    return loaded, analysis, analysis_page(analysis, loaded, notes=notes)


def test_page_holds_every_row_of_every_stage(mhsa: tuple) -> None:
    from attnviz.maps import query_plane

    _, analysis, html = mhsa
    data = payload_of(html)
    assert [s["title"] for s in data["stages"]] == ["stage 3", "stage 4"]
    entries = {e["name"]: e for s in data["stages"] for b in s["blocks"] for e in b["maps"]}
    assert set(entries) == {m.name for m in analysis.recording}
    m = analysis.recording.maps[1]
    entry = entries[m.name]
    assert entry["type"] == "rows" and entry["queries"] is None and entry["grid"] == list(m.grid)
    rows = dequantised(entry["rows"])  # (heads, queries, keys)
    token = 14
    expected = query_plane(m, token)[0].reshape(rows.shape[0], -1)
    steps = (expected.max(axis=1) - expected.min(axis=1))[:, None] / 255
    assert np.all(np.abs(rows[:, token] - expected) <= steps / 2 + 1e-6)


def test_header_names_model_weights_and_preprocessing(mhsa: tuple) -> None:
    loaded, _, html = mhsa
    facts = payload_of(html)["meta"]["facts"]
    assert facts["model"] == "resnet18 + mhsa (stages 3,4)"
    assert facts["weights"] == loaded.source
    assert facts["preprocessing"].startswith("resize to 96x96 px")
    assert facts["prediction"].startswith("circle")
    g = payload_of(html)["geometry"]
    assert g["original"] == [160, 160] and g["input"] == [96, 96] and g["placement"] == "aligned"


def test_page_is_self_contained(mhsa: tuple) -> None:
    html = mhsa[2]
    page = outside_data(html)
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert not re.search(r"https?:|//[a-z]", page.replace("://", "")), "the page names an address"
    assert not re.search(r"<(link|iframe|object|embed)\b|\bsrc=", page)
    assert payload_of(html)["photo"].startswith("data:image/jpeg;base64,")


def test_budget_coarsens_the_rows_then_refuses(mhsa: tuple) -> None:
    from attnviz.report.build import analyse_for_report, analysis_page

    loaded = mhsa[0]
    analysis, _ = analyse_for_report(loaded, CIRCLE, size=224)  # 14x14 and 7x7 grids
    html = analysis_page(analysis, loaded)
    assert not any(e["queries"] for e in entries_of(html))
    rows_mb = sum(len(e["rows"]["data"]) for e in entries_of(html)) / 2**20
    smaller = analysis_page(analysis, loaded, budget_mb=len(html.encode()) / 2**20 - rows_mb / 2)
    coarse = [e for e in entries_of(smaller) if e["queries"]]
    assert coarse and all(e["grid"] == [14, 14] and len(e["queries"]) < 14 * 14 for e in coarse)
    assert any("to stay under" in note for note in payload_of(smaller)["meta"]["notes"])
    assert len(smaller.encode()) < len(html.encode())
    with pytest.raises(UsageError, match=r"over the 0\.01 MB budget"):
        analysis_page(analysis, loaded, budget_mb=0.01)


def entries_of(html: str) -> list[dict]:
    return [e for s in payload_of(html)["stages"] for b in s["blocks"] for e in b["maps"]]


def test_resnet50_mhsa_at_224_fits_in_10_mb(tmp_path: Path) -> None:
    from attnviz.report.api import load_for_report, report_image

    loaded = load_for_report("mhsa", backbone="resnet50", device="cpu", size=224)  # stages 3 and 4, as matrix
    written, summary = report_image(loaded, CIRCLE, tmp_path, size=224)
    data = payload_of(written.read_text())
    rows = [e for s in data["stages"] for b in s["blocks"] for e in b["maps"] if e["type"] == "rows"]
    assert summary["bytes"] < 10 * 2**20
    assert len(rows) == 9 and all(e["queries"] is None for e in rows)  # every block, every cell's row


def test_kinds_become_their_drawings() -> None:
    import attnviz
    from attnviz.report.build import analyse_for_report
    from attnviz.report.data import collect

    for block, photo, kinds in [
        ("cbam", "scene_heart.png", {"plane", "bars"}),
        ("coord", "scene_ring.png", {"coordinate"}),
        ("sk", "scene_arrow.png", {"selection"}),
        ("danet", "scene_circle.png", {"rows", "heatmap"}),
        ("criss_cross", "scene_circle.png", {"crisscross"}),
    ]:
        loaded = attnviz.load(block, device="cpu")
        stages, _ = collect(analyse_for_report(loaded, SAMPLES / "scenes" / photo)[0], loaded)
        assert {e["type"] for s in stages for b in s["blocks"] for e in b["maps"]} == kinds, block


# ------------------------------------------------------------------------------------------------- commands


def test_report_command_writes_one_file_per_image(tmp_path: Path) -> None:
    code, _, err = run(
        "report", str(CIRCLE), str(SAMPLES / "scenes" / "scene_heart.png"), "mhsa", "--out", str(tmp_path)
    )
    assert code == 0, err
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["scene_circle_mhsa_report.html", "scene_heart_mhsa_report.html"]
    assert "wrote" in err and "MB)" in err


def test_report_folder_run_skips_a_bad_file_and_keeps_same_stems_apart(tmp_path: Path) -> None:
    import shutil

    photos = tmp_path / "photos"
    (photos / "d1").mkdir(parents=True)
    (photos / "d2").mkdir()
    (photos / "d1" / "aaa.png").write_bytes(b"not a picture")  # first in the run
    shutil.copy(CIRCLE, photos / "d1" / "same.png")
    shutil.copy(SAMPLES / "scenes" / "scene_heart.png", photos / "d2" / "same.png")
    out = tmp_path / "out"
    code, _, err = run("report", str(photos / "d1"), str(photos / "d2"), "mhsa", "--out", str(out), "--device", "cpu")
    assert code == 2, err
    assert err.count("skipped") == 1 and "aaa.png" in err and "Traceback" not in err
    assert "report: 2 of 3 images drawn" in err and "1 could not be drawn" in err
    written = sorted(p.name for p in out.iterdir())
    assert written == ["d1-same_mhsa_report.html", "d2-same_mhsa_report.html"]
    pages = [payload_of((out / name).read_text()) for name in written]
    assert pages[0]["photo"] != pages[1]["photo"]  # each report is of its own photo
    assert all(p["meta"]["facts"]["prediction"].startswith(s) for p, s in zip(pages, ["circle", "heart"], strict=True))
    code, _, err = run(
        "report", str(photos / "d2" / "same.png"), "mhsa", "--out", str(tmp_path / "one"), "--device", "cpu"
    )
    assert code == 0, err
    alone = (tmp_path / "one" / "same_mhsa_report.html").read_bytes()
    assert alone == (out / "d2-same_mhsa_report.html").read_bytes()  # the folder run writes what one photo's run does


def test_report_json_lists_each_report_and_each_skipped_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"")
    code, stdout, err = run("report", str(CIRCLE), str(bad), "mhsa", "--out", str(tmp_path / "out"), "--json")
    assert code == 2, err
    result = json.loads(stdout)
    (done,) = result["results"]
    assert done["image"] == str(CIRCLE) and done["files"] == [done["file"]] and Path(done["file"]).is_file()
    assert done["bytes"] == Path(done["file"]).stat().st_size and "layer3.0.attn:matrix" in done["maps"]
    assert [s["image"] for s in result["skipped"]] == [str(bad)] and result["weights"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report", str(CIRCLE)], "missing argument BLOCK"),
        (["report", str(CIRCLE), "mhsa", "cbam"], "give one block"),
        (["report", "mhsa"], "missing argument IMAGE"),
        (["report", str(CIRCLE), "mhsa", "--max-mb", "0"], "--max-mb must be above 0"),
        (["report", str(CIRCLE), "mhsa", "--heads", "x"], "--heads must be"),
        (["channels", "se", str(CIRCLE), "--format", "gif"], "html"),
    ],
)
def test_bad_report_options_are_refused_in_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    code, _, err = run(*args, "--out", str(tmp_path))
    assert code == 2 and message in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_format_html_on_a_drawing_command_writes_the_report_of_its_capture(tmp_path: Path) -> None:
    code, _, err = run("channels", "se", str(CIRCLE), "--layer", "4", "--format", "html", "--out", str(tmp_path))
    assert code == 0, err
    (page,) = tmp_path.iterdir()
    assert page.name == "scene_circle_se_report.html"
    data = payload_of(page.read_text())
    assert [s["title"] for s in data["stages"]] == ["stage 4"]
    assert {e["type"] for s in data["stages"] for b in s["blocks"] for e in b["maps"]} == {"bars"}


def test_view_save_html_from_python(tmp_path: Path) -> None:
    import attnviz

    loaded = attnviz.load("cbam", stages=[1], device="cpu")
    view = attnviz.show(loaded, CIRCLE)
    assert view.loaded is loaded
    view.loaded = None  # a View made without its model
    (written,) = view.save(tmp_path, "html")
    assert written.name == "scene_circle_cbam_report.html"
    data = payload_of(written.read_text())
    assert data["stages"][0]["title"] == "stage 1"  # read from the maps' stride: the view holds no model
    assert data["meta"]["facts"]["weights"].startswith("not recorded")
    view.loaded = loaded
    assert payload_of(view.save(tmp_path, "html")[0].read_text())["meta"]["facts"]["weights"] == loaded.source
    assert [p.suffix for p in view.save(tmp_path / "png")] == [".png"]  # other formats as they were
