"""Pictures that tell the truth: flat maps look flat, colour scales are stated, every number drawn is the number
printed, one file per map on request, editable text in vector formats, tiles that line up."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import attnviz
from attnviz.cli.app import app
from attnviz.render.layout import equal_heights, grid_columns
from attnviz.render.overlay import FLAT_RANGE, overlay, value_range
from attnviz.views.base import Style
from attnviz.views.common import range_note, scale_limits

runner = CliRunner()
FAST = ["--size", "64", "--device", "cpu"]
SCENES = Path(__file__).resolve().parents[1] / "samples" / "scenes"


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    yy, xx = np.mgrid[0:80, 0:120]
    rgb = np.stack([xx * 2, yy * 3, np.full_like(xx, 90)], axis=-1).astype(np.uint8)
    path = tmp_path_factory.mktemp("honest") / "photo.png"
    Image.fromarray(rgb).save(path)
    return path


def test_float_noise_is_drawn_in_one_colour_and_captioned_flat() -> None:
    rng = np.random.default_rng(0)
    heat = 0.5 + rng.normal(0, 7.7e-6, (60, 90))  # what a random-weight sigmoid gate looks like
    grey = Image.new("RGB", (90, 60), (128, 128, 128))
    pixels = np.asarray(overlay(grey, heat, cmap="viridis", alpha=1.0))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) == 1  # one colour, not noise stretched over the colormap
    assert range_note(heat).startswith("flat 0.5")
    low, high = value_range(heat)
    assert low == high
    spread = np.linspace(0.3, 0.3 + 10 * FLAT_RANGE, 90)[None].repeat(60, 0)  # real variation is still drawn
    assert len(np.unique(np.asarray(overlay(grey, spread, alpha=1.0)).reshape(-1, 3), axis=0)) > 5


def test_explicit_limits_keep_a_small_real_range() -> None:
    heat = np.linspace(0.5, 0.5004, 100)[None].repeat(10, 0)
    assert value_range(heat) == (0.5, 0.5)  # flat on its own scale
    assert value_range(heat, 0.4, 0.6) == (0.4, 0.6)  # but asked limits are kept


def test_scales_share_ranges_by_stage_or_picture() -> None:
    heats = [(1, np.array([[0.1, 0.4]])), (1, np.array([[0.2, 0.9]])), (2, np.array([[0.5, 0.6]]))]
    assert scale_limits(heats, Style(scale="per-map")) == {1: {}, 2: {}}
    assert scale_limits(heats, Style(scale="per-stage")) == {
        1: {"vmin": 0.1, "vmax": 0.9},
        2: {"vmin": 0.5, "vmax": 0.6},
    }
    shared = scale_limits(heats, Style(scale="shared", vmax=1.0))
    assert shared[1] == shared[2] == {"vmin": 0.1, "vmax": 1.0}


def test_each_writes_one_full_resolution_file_per_map(photo: Path, tmp_path: Path) -> None:
    args = ["show", "cbam", str(photo), *FAST, "--stages", "2,3", "--each", "--heat-only", "--json"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.stderr
    names = sorted(p.name for p in tmp_path.glob("*.png"))
    assert names == [
        "photo_cbam_layer2-1-attn_spatial.png",
        "photo_cbam_layer2-1-attn_spatial_heat.png",
        "photo_cbam_layer3-1-attn_spatial.png",
        "photo_cbam_layer3-1-attn_spatial_heat.png",
        "photo_cbam_show.png",
    ]
    with Image.open(tmp_path / "photo_cbam_layer2-1-attn_spatial.png") as full:
        assert full.height == 80 and full.width > 120  # the photo's own size, with its colour bar beside it
    with Image.open(tmp_path / "photo_cbam_layer3-1-attn_spatial_heat.png") as layer:
        assert layer.size == (120, 80) and layer.mode == "RGBA"
        assert set(np.unique(np.asarray(layer)[..., 3])) == {128}  # the style's opacity, every pixel seen


def test_svg_keeps_text_as_text(photo: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["channels", "se", str(photo), *FAST, "--format", "svg", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.stderr
    (svg,) = tmp_path.glob("*.svg")
    assert "<text" in svg.read_text()


def test_asff_captions_say_what_json_says() -> None:
    from attnviz.detection.views import dominant_caption

    view = attnviz.asff_weights("demo", SCENES / "detection_scene.png", device="cpu")
    analysis = view.analysis
    for index, (level, printed) in enumerate(zip(analysis.levels, view.summary["levels"], strict=True)):
        drawn = [int(v) for v in re.findall(r"(\d+)%", dominant_caption(analysis, level, index))]
        assert drawn == [round(100 * v) for v in printed["dominant_share"].values()]


def test_tiles_line_up_and_wide_photos_wrap(tmp_path: Path) -> None:
    tall, short = Image.new("RGB", (100, 140)), Image.new("RGB", (120, 120))
    assert {t.height for t in equal_heights([tall, short])} == {140}
    assert grid_columns(5, (440, 420)) == 5  # square tiles: one row
    assert grid_columns(5, (800, 220)) <= 3  # a 600x133 photo: no ribbon
    wide = tmp_path / "wide.png"
    Image.new("RGB", (600, 133), (200, 120, 40)).save(wide)
    result = runner.invoke(app, ["show", "cbam", str(wide), *FAST, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.stderr
    with Image.open(tmp_path / "wide_cbam_show.png") as picture:
        assert picture.width / picture.height < 6


def test_show_json_lists_the_scale_it_drew_with(photo: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["show", "cbam", str(photo), *FAST, "--scale", "nope", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "unknown --scale 'nope'" in result.stderr
    result = runner.invoke(
        app, ["show", "cbam", str(photo), *FAST, "--vmin", "1", "--vmax", "0", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2 and "--vmin must be below --vmax" in result.stderr
    assert json.loads(runner.invoke(app, ["list", "--json"]).stdout)


def test_json_and_raw_hold_everything_the_blocks_computed(photo: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["show", "gam", str(photo), *FAST, "--json", "--save-raw", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.stderr
    found = json.loads(result.stdout)["results"][0]
    assert {m["kind"] for m in found["maps"]} == {"channel", "spatial"}  # GAM's channel half too
    prediction = found["prediction"]
    assert 0 <= prediction["class"] < 10 and prediction["name"] and 0.1 <= prediction["probability"] <= 1
    (npz,) = tmp_path.glob("*.npz")
    assert any(key.endswith(":channel") for key in np.load(npz).files)
    result = runner.invoke(app, ["channels", "se", str(photo), *FAST, "--layer", "3", "--json", "--out", str(tmp_path)])
    channels = json.loads(result.stdout)
    assert {m["name"] for m in channels["captured"]} >= {m["map"] for m in channels["maps"]}  # every map captured
    stats = channels["maps"][0]
    assert len(stats["top"]) == len(stats["top_weights"]) == 5
    assert stats["top_weights"] == sorted(stats["top_weights"], reverse=True)


def test_contours_come_with_their_legend_and_the_input_size_is_said(photo: Path, tmp_path: Path) -> None:
    plain, lined = tmp_path / "plain", tmp_path / "lined"
    runner.invoke(app, ["show", "cbam", str(photo), "--device", "cpu", "--stages", "2", "--out", str(plain)])
    result = runner.invoke(
        app, ["show", "cbam", str(photo), "--device", "cpu", "--stages", "2", "--contour", "--out", str(lined)]
    )
    assert result.exit_code == 0, result.stderr
    assert "input: 96x96 px, the size the weights were trained at" in result.stderr  # and how to change it
    with Image.open(plain / "photo_cbam_show.png") as a, Image.open(lined / "photo_cbam_show.png") as b:
        assert b.width == a.width and b.height > a.height  # the legend strip under the picture


def test_a_detection_label_does_not_cover_another_box() -> None:
    from attnviz.detection.drawing import _label_place

    star, triangle = (150.0, 100.0, 180.0, 128.0), (190.0, 80.0, 260.0, 130.0)
    left, top = _label_place(star[0], star[1], star[3], (110.0, 30.0), (480, 480), [], [triangle])
    label = (left, top, left + 110.0, top + 30.0)
    a, t, r, b = triangle
    assert not (label[0] < r and label[2] > a and label[1] < b and label[3] > t)
