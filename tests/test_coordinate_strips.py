"""Coordinate Attention written as research code (fightingcv's CoordAtt: `.sigmoid()` on a_h and a_w in its own
forward) is found by the shapes of its strips and drawn by `coords`."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from attnviz.models.foreign import attach_taps
from tests.cli_utils import run

SOURCE = """
import torch
from torch import nn


class CoordAtt(nn.Module):
    def __init__(self, inp, reduction=8):
        super().__init__()
        self.pool_h = nn.AdaptiveAvgPool2d((None, 1))
        self.pool_w = nn.AdaptiveAvgPool2d((1, None))
        mip = max(8, inp // reduction)
        self.conv1 = nn.Conv2d(inp, mip, 1)
        self.bn1 = nn.BatchNorm2d(mip)
        self.act = nn.ReLU()
        self.conv_h = nn.Conv2d(mip, inp, 1)
        self.conv_w = nn.Conv2d(mip, inp, 1)

    def forward(self, x):
        identity = x
        n, c, h, w = x.size()
        x_h = self.pool_h(x)
        x_w = self.pool_w(x).permute(0, 1, 3, 2)
        y = self.act(self.bn1(self.conv1(torch.cat([x_h, x_w], dim=2))))
        x_h, x_w = torch.split(y, [h, w], dim=2)
        x_w = x_w.permute(0, 1, 3, 2)
        a_h = self.conv_h(x_h).sigmoid()
        a_w = self.conv_w(x_w).sigmoid()
        return identity * a_w * a_h


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.Conv2d(16, 32, 3, stride=2, padding=1))
        self.coord = CoordAtt(32)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 4))

    def forward(self, x):
        return self.head(self.coord(self.stem(x)))


def build():
    torch.manual_seed(0)
    return Net().eval()
"""


def _write(tmp_path: Path) -> Path:
    path = tmp_path / "coordnet.py"
    path.write_text(textwrap.dedent(SOURCE))
    return path


def test_strips_are_found_and_captured_as_the_module_computes_them(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("coordnet_test", _write(tmp_path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.build()
    report = attach_taps(model, size=(64, 48))
    (found,) = report.recognised
    assert found.path == "coord" and [t.label for t in found.taps] == ["h", "w"]
    image = torch.randn(1, 3, 48, 64)
    from attnviz.capture import capture

    with torch.no_grad(), capture(model) as rec:
        model(image)
    h_map, w_map = rec.of_kind("coordinate")
    assert h_map.axes == ("batch", "channel", "height") and w_map.axes == ("batch", "channel", "width")
    coord, features = model.coord, model.stem(image)
    with torch.no_grad():
        h, w = features.shape[-2:]
        y = coord.act(
            coord.bn1(coord.conv1(torch.cat([coord.pool_h(features), coord.pool_w(features).permute(0, 1, 3, 2)], 2)))
        )
        x_h, x_w = torch.split(y, [h, w], dim=2)
        a_h = coord.conv_h(x_h).sigmoid().flatten(2)
        a_w = coord.conv_w(x_w.permute(0, 1, 3, 2)).sigmoid().flatten(2)
    assert torch.allclose(h_map.tensor, a_h) and torch.allclose(w_map.tensor, a_w)


def test_coords_draws_a_research_code_coordinate_attention(tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(0).random((60, 80, 3)) * 255).astype(np.uint8)).save(photo)
    spec = f"{_write(tmp_path)}:build"
    code, _, err = run(
        "coords", "--model", spec, str(photo), "--size", "64", "--device", "cpu", "--out", str(tmp_path / "out")
    )
    assert code == 0, err
    assert len(list((tmp_path / "out").glob("*_coords.png"))) == 1
