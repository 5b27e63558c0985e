"""Maps are drawn where their cells look: each model's receptive fields, measured with input gradients, decide
where a feature-map cell sits on the photo (a ResNet's stage-4 cell is centred on pixel 32*j, not 32*j + 15.5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import attnviz
from attnviz.capture import QueryPoints
from attnviz.images import Geometry, cell_centre_to_original, first_centre, map_to_original, original_to_cell
from attnviz.models.backbones import build_model, stage_outputs
from attnviz.models.geometry import measure_placement


def _gradient_centroid(model: torch.nn.Module, module: torch.nn.Module, size: int) -> tuple[float, float, tuple]:
    """(y, x) centroid of |d(central cell)/d(input)| and the cell, for `module`'s output."""
    kept = {}
    handle = module.register_forward_hook(lambda _m, _a, out: kept.setdefault("out", out))
    image = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1), requires_grad=True)
    try:
        model.eval()
        model(image)
    finally:
        handle.remove()
    out = kept["out"]
    h, w = out.shape[-2:]
    row, col = h // 2, w // 2
    out[0, :, row, col].sum().backward()
    weight = image.grad[0].abs().sum(0).double()
    ys = torch.arange(size, dtype=torch.float64) + 0.5
    y = float((weight.sum(1) * ys).sum() / weight.sum())
    x = float((weight.sum(0) * ys).sum() / weight.sum())
    return y, x, (h, w, row, col)


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet_v2"])
def test_attnviz_backbones_are_aligned_as_input_gradients_say(backbone: str) -> None:
    torch.manual_seed(0)
    model = build_model(backbone, "cbam", stages=(1, 2, 3))
    size = 256  # big enough that stage 3's receptive field is not cut by the border
    for stage, module in stage_outputs(model).items():
        if stage == 4:
            continue
        y, x, (_h, w, _row, col) = _gradient_centroid(model, module, size)
        aligned = first_centre(size, w, "aligned") + col * size / w
        tiled = first_centre(size, w, "tiled") + col * size / w
        assert abs(x - aligned) < 1.5 and abs(y - aligned) < 1.5, (stage, x, y, aligned)  # random weights: noise
        if stage >= 2:
            assert abs(x - aligned) < abs(x - tiled)
    assert measure_placement(model, 128) == "aligned"
    assert attnviz.load("cbam", backbone=backbone, device="cpu", demo=False).placement == "aligned"


def test_patch_models_measure_tiled_and_conv_nets_aligned() -> None:
    timm = pytest.importorskip("timm")
    assert measure_placement(timm.create_model("vit_tiny_patch16_224").eval(), 224) == "tiled"
    assert measure_placement(timm.create_model("convnext_atto").eval(), 128) == "tiled"  # a 4x4 patchify stem
    assert measure_placement(timm.create_model("resnet18").eval(), 128) == "aligned"


def test_a_cell_is_drawn_and_queried_where_it_is_centred() -> None:
    geometry = Geometry.fit((96, 96), 96, "resize")
    cells = np.zeros((3, 3), dtype=np.float32)
    cells[1, 1] = 1.0  # stride 32: an aligned cell 1 is centred on pixel 32, a tiled one on pixel 48
    for placement, centre in (("aligned", 32.5), ("tiled", 48.0)):
        drawn = map_to_original(cells, geometry, placement=placement)
        peak = float(np.mean(np.flatnonzero(drawn[40] == drawn[40].max()))) + 0.5  # centre of the brightest pixels
        assert peak == centre
        x, y = cell_centre_to_original(1, 1, geometry, 3, 3, placement)
        assert (x, y) == (centre, centre)
        assert original_to_cell(x, y, geometry, 3, 3, placement) == (1, 1)
        # capture keeps the row of the same cell the picture marks
        assert QueryPoints(((x / 96, y / 96),), placement, (96, 96)).rows((3, 3)) == [4]
    assert original_to_cell(60.5, 60.5, geometry, 3, 3, "aligned") == (2, 2)  # nearer 64.5 than 32.5
    assert original_to_cell(60.5, 60.5, geometry, 3, 3, "tiled") == (1, 1)  # inside the middle tile
