"""Rectangular model inputs: `--size 640x384` on the command line, `size=(640, 384)` in Python, for every command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import attnviz
from attnviz.cli.app import app
from attnviz.errors import UsageError
from attnviz.images import Geometry, input_dims, preprocess
from attnviz.options import parse_size

runner = CliRunner()


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    yy, xx = np.mgrid[0:90, 0:200]
    rgb = np.stack([xx, yy * 2, np.full_like(xx, 60)], axis=-1).astype(np.uint8)
    path = tmp_path_factory.mktemp("rect") / "wide.png"
    Image.fromarray(rgb).save(path)
    return path


@pytest.mark.parametrize(
    ("given", "parsed"),
    [("224", 224), (96, 96), ("640x384", (640, 384)), ("64X64", 64), ((80, 48), (80, 48)), (None, None)],
)
def test_sizes_parse_to_a_side_or_width_height(given, parsed) -> None:
    assert parse_size(given) == parsed


@pytest.mark.parametrize("given", ["64xx", "x", "64x48x32", "big", (64,), True])
def test_bad_sizes_name_the_option(given) -> None:
    with pytest.raises(UsageError, match=r"size= must be N or WIDTHxHEIGHT"):
        parse_size(given)
    with pytest.raises(UsageError, match=r"size= must be between 16 and 4096 pixels, got 8"):
        parse_size("8x64")


@pytest.mark.parametrize(
    ("mode", "resized", "offset"),
    [("resize", (64, 32), (0, 0)), ("letterbox", (64, 21), (0, 5)), ("crop", (96, 32), (-16, 0))],
)
def test_geometry_fits_a_rectangular_input(mode: str, resized: tuple[int, int], offset: tuple[int, int]) -> None:
    geometry = Geometry.fit((300, 100), (64, 32), mode)
    assert geometry.input_size == (64, 32) and geometry.resized_size == resized and geometry.offset == offset
    x, y = geometry.to_original(*geometry.to_input(150.0, 50.0))
    assert (x, y) == pytest.approx((150.0, 50.0))  # the photo's centre maps there and back


def test_preprocess_gives_height_by_width(photo: Path) -> None:
    tensor, geometry = preprocess(Image.open(photo), size=(96, 48), mode="letterbox")
    assert tuple(tensor.shape) == (1, 3, 48, 96) and geometry.input_size == (96, 48)
    assert input_dims(64) == (64, 64)


def test_show_and_inspect_take_width_x_height(photo: Path, tmp_path: Path) -> None:
    args = ["--size", "96x64", "--device", "cpu", "--json"]
    result = runner.invoke(
        app, ["show", "cbam", str(photo), *args, "--preprocess", "letterbox", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.stderr
    maps = json.loads(result.stdout)["results"][0]["maps"]
    first = next(m for m in maps if m["layer"] == "layer1.0.attn" and m["kind"] == "spatial")
    assert first["shape"][-2:] == [16, 24]  # stride 4 of 64 rows x 96 columns
    result = runner.invoke(app, ["inspect", "cbam", "--size", "96x64", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["input"] == [64, 96]


def test_python_takes_a_width_height_tuple(photo: Path) -> None:
    view = attnviz.show("cbam", photo, size=(96, 64), device="cpu", stages=[2])
    assert view.analysis.geometry.input_size == (96, 64)
    assert view.analysis.tensor.shape[-2:] == (64, 96)


def test_foreign_model_is_probed_at_the_rectangle(photo: Path, tmp_path: Path) -> None:
    args = ["show", "--model", "timm:resnet18", "--timm-attn", "cbam", str(photo), "--size", "128x64", "--json"]
    result = runner.invoke(app, [*args, "--device", "cpu", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.stderr
    shapes = {m["layer"]: m["shape"] for m in json.loads(result.stdout)["results"][0]["maps"]}
    assert [16, 32] in [s[-2:] for s in shapes.values()]  # stage 1 at stride 4
