"""Researchers' YOLO models (ultralytics YOLOv8/11/12, yolov5) with attention: found, recomputed without changing a
bit of the detector's output, equal to the attention written out by hand, and drawn from a checkpoint saved as
ultralytics saves it.

ultralytics and yolov5 are not installed: look-alike packages named `ultralytics` and `models` (yolov5's own) are
written to a temporary folder, with the forward code of the real modules, so the adapters' package keys match and
the pickled checkpoint needs them importable, as users' real checkpoints need ultralytics.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from attnviz.capture import capture
from attnviz.cli.app import app
from attnviz.models.foreign.recognise import attach_taps
from attnviz.models.foreign.taps import ForeignTap

SIZE = (96, 64)
"""The input, (width, height): stride 8 gives an 8 x 12 grid, stride 16 a 4 x 6 one."""
QUERY = (0.3, 0.6)
runner = CliRunner()

CONV = """
import torch
from torch import nn
def autopad(k, p=None, d=1):
    if d > 1:
        k = d * (k - 1) + 1
    return k // 2 if p is None else p
class Conv(nn.Module):
    default_act = nn.SiLU()
    def __init__(self, c1, c2, k=1, s=1, p=None, g=1, d=1, act=True):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p, d), groups=g, dilation=d, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = self.default_act if act is True else act if isinstance(act, nn.Module) else nn.Identity()
    def forward(self, x):
        return self.act(self.bn(self.conv(x)))
class ChannelAttention(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.pool, self.act = nn.AdaptiveAvgPool2d(1), nn.Sigmoid()
        self.fc = nn.Conv2d(channels, channels, 1, 1, 0, bias=True)
    def forward(self, x):
        return x * self.act(self.fc(self.pool(x)))
class SpatialAttention(nn.Module):
    def __init__(self, kernel_size=7):
        super().__init__()
        self.cv1, self.act = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False), nn.Sigmoid()
    def forward(self, x):
        return x * self.act(self.cv1(torch.cat([torch.mean(x, 1, keepdim=True), torch.max(x, 1, keepdim=True)[0]], 1)))
class CBAM(nn.Module):
    def __init__(self, c1, kernel_size=7):
        super().__init__()
        self.channel_attention, self.spatial_attention = ChannelAttention(c1), SpatialAttention(kernel_size)
    def forward(self, x):
        return self.spatial_attention(self.channel_attention(x))
"""

BLOCK = """
import torch
from torch import nn
from ultralytics.nn.modules.conv import Conv
class Attention(nn.Module):
    def __init__(self, dim, num_heads=8, attn_ratio=0.5):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.key_dim = int(self.head_dim * attn_ratio)
        self.scale = self.key_dim**-0.5
        self.qkv = Conv(dim, dim + self.key_dim * num_heads * 2, 1, act=False)
        self.proj, self.pe = Conv(dim, dim, 1, act=False), Conv(dim, dim, 3, 1, g=dim, act=False)
    def forward(self, x):
        B, C, H, W = x.shape
        N = H * W
        qkv = self.qkv(x)
        q, k, v = qkv.view(B, self.num_heads, self.key_dim * 2 + self.head_dim, N).split(
            [self.key_dim, self.key_dim, self.head_dim], dim=2
        )
        attn = (q.transpose(-2, -1) @ k) * self.scale
        attn = attn.softmax(dim=-1)
        x = (v @ attn.transpose(-2, -1)).view(B, C, H, W) + self.pe(v.reshape(B, C, H, W))
        return self.proj(x)
class PSABlock(nn.Module):
    def __init__(self, c, attn_ratio=0.5, num_heads=4, shortcut=True):
        super().__init__()
        self.attn = Attention(c, attn_ratio=attn_ratio, num_heads=num_heads)
        self.ffn, self.add = nn.Sequential(Conv(c, c * 2, 1), Conv(c * 2, c, 1, act=False)), shortcut
    def forward(self, x):
        x = x + self.attn(x) if self.add else self.attn(x)
        return x + self.ffn(x) if self.add else self.ffn(x)
class C2PSA(nn.Module):
    def __init__(self, c1, c2, n=1, e=0.5):
        super().__init__()
        self.c = int(c1 * e)
        self.cv1, self.cv2 = Conv(c1, 2 * self.c, 1, 1), Conv(2 * self.c, c1, 1)
        self.m = nn.Sequential(*(PSABlock(self.c, attn_ratio=0.5, num_heads=self.c // 64) for _ in range(n)))
    def forward(self, x):
        a, b = self.cv1(x).split((self.c, self.c), dim=1)
        return self.cv2(torch.cat((a, self.m(b)), 1))
class AAttn(nn.Module):
    def __init__(self, dim, num_heads, area=1):
        super().__init__()
        self.area, self.num_heads = area, num_heads
        self.head_dim = head_dim = dim // num_heads
        all_head_dim = head_dim * self.num_heads
        self.qkv = Conv(dim, all_head_dim * 3, 1, act=False)
        self.proj = Conv(all_head_dim, dim, 1, act=False)
        self.pe = Conv(all_head_dim, dim, 7, 1, 3, g=dim, act=False)
    def forward(self, x):
        B, C, H, W = x.shape
        N = H * W
        qkv = self.qkv(x).flatten(2).transpose(1, 2)
        if self.area > 1:
            qkv = qkv.reshape(B * self.area, N // self.area, C * 3)
            B, N, _ = qkv.shape
        q, k, v = (
            qkv.view(B, N, self.num_heads, self.head_dim * 3)
            .permute(0, 2, 3, 1)
            .split([self.head_dim, self.head_dim, self.head_dim], dim=2)
        )
        attn = (q.transpose(-2, -1) @ k) * (self.head_dim**-0.5)
        attn = attn.softmax(dim=-1)
        x = v @ attn.transpose(-2, -1)
        x = x.permute(0, 3, 1, 2)
        v = v.permute(0, 3, 1, 2)
        if self.area > 1:
            x = x.reshape(B // self.area, N * self.area, C)
            v = v.reshape(B // self.area, N * self.area, C)
            B, N, _ = x.shape
        x = x.reshape(B, H, W, C).permute(0, 3, 1, 2).contiguous()
        v = v.reshape(B, H, W, C).permute(0, 3, 1, 2).contiguous()
        x = x + self.pe(v)
        return self.proj(x)
class ABlock(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio=1.2, area=1):
        super().__init__()
        self.attn = AAttn(dim, num_heads=num_heads, area=area)
        self.mlp = nn.Sequential(Conv(dim, int(dim * mlp_ratio), 1), Conv(int(dim * mlp_ratio), dim, 1, act=False))
    def forward(self, x):
        x = x + self.attn(x)
        return x + self.mlp(x)
class A2C2f(nn.Module):
    def __init__(self, c1, c2, n=1, a2=True, area=1, residual=False, mlp_ratio=2.0, e=0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1, self.cv2 = Conv(c1, c_, 1, 1), Conv((1 + n) * c_, c2, 1)
        self.m = nn.ModuleList(
            nn.Sequential(*(ABlock(c_, c_ // 32, mlp_ratio, area) for _ in range(2))) for _ in range(n)
        )
    def forward(self, x):
        y = [self.cv1(x)]
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))
"""

TRANSFORMER = """
class TransformerLayer(nn.Module):
    def __init__(self, c, num_heads):
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(c, c, bias=False) for _ in range(3))
        self.ma = nn.MultiheadAttention(embed_dim=c, num_heads=num_heads)
        self.fc1, self.fc2 = nn.Linear(c, c, bias=False), nn.Linear(c, c, bias=False)
    def forward(self, x):
        x = self.ma(self.q(x), self.k(x), self.v(x))[0] + x
        return self.fc2(self.fc1(x)) + x
class TransformerBlock(nn.Module):
    def __init__(self, c1, c2, num_heads, num_layers):
        super().__init__()
        self.conv = None
        if c1 != c2:
            self.conv = Conv(c1, c2)
        self.linear = nn.Linear(c2, c2)
        self.tr = nn.Sequential(*(TransformerLayer(c2, num_heads) for _ in range(num_layers)))
        self.c2 = c2
    def forward(self, x):
        if self.conv is not None:
            x = self.conv(x)
        b, _, w, h = x.shape
        p = x.flatten(2).permute(2, 0, 1)
        return self.tr(p + self.linear(p)).permute(1, 2, 0).reshape(b, self.c2, w, h)
"""

HEAD = """
import torch
from torch import nn
from ultralytics.nn.modules.conv import Conv
class DFL(nn.Module):
    def __init__(self, c1=16):
        super().__init__()
        self.conv, self.c1 = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False), c1
        self.conv.weight.data[:] = torch.arange(c1, dtype=torch.float).view(1, c1, 1, 1)
    def forward(self, x):
        b, _, a = x.shape
        return self.conv(x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1)).view(b, 4, a)
class Detect(nn.Module):
    shape = None
    def __init__(self, nc=80, ch=()):
        super().__init__()
        self.nc, self.nl, self.reg_max, self.no, self.stride = nc, len(ch), 16, nc + 64, torch.tensor([8.0, 16.0])
        c2, c3 = max((16, ch[0] // 4, self.reg_max * 4)), max(ch[0], min(self.nc, 100))
        self.cv2 = nn.ModuleList(nn.Sequential(Conv(x, c2, 3), nn.Conv2d(c2, 4 * self.reg_max, 1)) for x in ch)
        self.cv3 = nn.ModuleList(nn.Sequential(Conv(x, c3, 3), nn.Conv2d(c3, self.nc, 1)) for x in ch)
        self.dfl = DFL(self.reg_max)
    def forward(self, x):
        for i in range(self.nl):
            x[i] = torch.cat((self.cv2[i](x[i]), self.cv3[i](x[i])), 1)
        if self.training:
            return x
        x_cat = torch.cat([xi.view(x[0].shape[0], self.no, -1) for xi in x], 2)
        if self.shape != x[0].shape:  # anchors at the cell centres, cached per input shape
            cells = [torch.meshgrid(torch.arange(f.shape[2]), torch.arange(f.shape[3]), indexing="ij") for f in x]
            points = [(torch.stack((sx, sy), -1).view(-1, 2) + 0.5) * s for (sy, sx), s in zip(cells, self.stride)]
            self.anchors, self.shape = torch.cat(points).transpose(0, 1), x[0].shape
        box, cls = x_cat.split((self.reg_max * 4, self.nc), 1)
        lt, rb = self.dfl(box).chunk(2, 1)
        return torch.cat((self.anchors - lt, self.anchors + rb, cls.sigmoid()), 1), x
"""

TASKS = """
from torch import nn
class DetectionModel(nn.Module):
    def __init__(self, layers, save):
        super().__init__()
        self.model, self.save = nn.Sequential(*layers), save
    def forward(self, x):
        y = []
        for m in self.model:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y.append(x if m.i in self.save else None)
        return x
"""

PACKAGES = {
    "ultralytics/nn/modules/conv.py": CONV,
    "ultralytics/nn/modules/block.py": BLOCK,
    "ultralytics/nn/modules/transformer.py": "from ultralytics.nn.modules.conv import Conv, nn\n" + TRANSFORMER,
    "ultralytics/nn/modules/head.py": HEAD,
    "ultralytics/nn/tasks.py": TASKS,
    "models/common.py": CONV + TRANSFORMER,
}
"""The look-alikes: ultralytics' modules and yolov5's `models.common` (its TransformerBlock)."""


@pytest.fixture
def packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, ModuleType]]:
    """The look-alike packages, importable while the test runs and forgotten after it."""
    root = tmp_path / "site"
    for name, source in PACKAGES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
        for folder in path.relative_to(root).parents[:-1]:
            (root / folder / "__init__.py").touch()
    monkeypatch.syspath_prepend(str(root))
    names = {Path(name).with_suffix("").as_posix().replace("/", "."): None for name in PACKAGES}
    yield {name.rpartition(".")[2]: __import__(name, fromlist=["_"]) for name in names}
    for name in [n for n in sys.modules if n.split(".")[0] in ("ultralytics", "models")]:
        del sys.modules[name]


def tiny_yolo(mods: dict[str, ModuleType]) -> nn.Module:
    """A YOLO11/12-like detector: a conv backbone with a YOLO12 A2C2f (area 4), a user's CBAM, a YOLO11 C2PSA and a
    C3TR-like TransformerBlock, and a Detect head on strides 8 and 16 (a tuple of a tensor and a list)."""
    conv, block, head = mods["conv"], mods["block"], mods["head"]
    layers: list[tuple[Any, nn.Module]] = [
        (-1, conv.Conv(3, 16, 3, 2)),
        (-1, conv.Conv(16, 32, 3, 2)),
        (-1, conv.Conv(32, 64, 3, 2)),
        (-1, block.A2C2f(64, 128, 1, True, 4)),  # 2 heads of 32 over 8 x 12, areas of 2 rows
        (-1, conv.CBAM(128)),
        (-1, conv.Conv(128, 256, 3, 2)),
        (-1, block.C2PSA(256, 256)),  # 2 heads over 4 x 6
        (-1, mods["transformer"].TransformerBlock(256, 128, 4, 1)),  # 4 heads over 4 x 6
        ([4, 7], head.Detect(3, (128, 128))),
    ]
    for index, (source, layer) in enumerate(layers):
        layer.f, layer.i = source, index
    return calibrated(mods["tasks"].DetectionModel([layer for _, layer in layers], save={4, 7}))


def calibrated(model: nn.Module) -> nn.Module:
    """`model` in eval mode with batch-norm statistics of a random batch, so activations keep their scale through the
    layers as in a trained net (with default statistics they shrink, and every attention row comes out flat)."""
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.momentum = None  # the cumulative average: one batch sets it
    with torch.no_grad():
        model.train()(torch.randn(4, 3, SIZE[1], SIZE[0], generator=torch.Generator().manual_seed(0)))
    return model.eval()


@pytest.fixture
def yolo(packages: dict[str, ModuleType]) -> nn.Module:
    return tiny_yolo(packages)


def _image(seed: int = 1) -> torch.Tensor:
    return torch.randn(1, 3, SIZE[1], SIZE[0], generator=torch.Generator().manual_seed(seed))


def _cell(grid: tuple[int, int], point: tuple[float, float] = QUERY) -> int:
    """The row-major token of the grid cell holding `point`."""
    return int(point[1] * grid[0]) * grid[1] + int(point[0] * grid[1])


# ---------------------------------------------------------------------------------------------- recognition

EXPECTED = {
    "model.3.m.0.0.attn": ("AAttn", ("matrix",), 2),
    "model.3.m.0.1.attn": ("AAttn", ("matrix",), 2),
    "model.4": ("CBAM", ("channel", "spatial"), 2),
    "model.6.m.0.attn": ("Attention", ("matrix",), 3),
    "model.7": ("TransformerBlock", ("matrix",), 3),
}


def test_every_attention_module_of_the_detector_is_recognised(yolo: nn.Module) -> None:
    report = attach_taps(yolo, size=SIZE)
    found = {m.path: (m.type, m.kinds, m.stage) for m in report.recognised}
    assert found == EXPECTED
    assert all(m.how == "type" and m.calls == 1 for m in report.recognised)
    assert report.unrecognised == [] and report.num_outputs is None
    cbam = next(m for m in report.recognised if m.type == "CBAM")
    assert [(t.source, t.norm) for t in cbam.taps] == [
        ("channel_attention.act", "sigmoid"),
        ("spatial_attention.act", "sigmoid"),
    ]


def test_a_subclass_with_its_own_forward_is_not_taken_for_ultralytics_attention(
    packages: dict[str, ModuleType],
) -> None:
    class DoubledAttention(packages["block"].Attention):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) * 2

    model = nn.Sequential(packages["conv"].Conv(3, 64, 3, 8), DoubledAttention(64, num_heads=2)).eval()
    report = attach_taps(model, size=SIZE)
    assert report.recognised == [] and report.unrecognised == [("1", "DoubledAttention")]


@pytest.mark.parametrize("wrap", [list, lambda out: {"one2many": out, "one2one": out[0]}])
def test_list_and_dict_outputs_do_not_confuse_the_probe_or_capture(yolo: nn.Module, wrap: Any) -> None:
    class Wrapped(nn.Module):  # a list, or YOLOv10's dict of both heads' outputs
        def __init__(self) -> None:
            super().__init__()
            self.net = yolo

        def forward(self, x: torch.Tensor) -> Any:
            return wrap(self.net(x))

    model = Wrapped().eval()
    with torch.no_grad(), capture(model, queries=[QUERY]) as rec:  # finds the attention at the first call
        model(_image())
    assert rec.layers() == [f"net.{path}" for path in EXPECTED]
    assert not any(isinstance(m, ForeignTap) for m in model.modules())


# ------------------------------------------------------------------------------------------ outputs unchanged


def test_outputs_bit_identical_and_only_asked_rows_kept(yolo: nn.Module) -> None:
    attach_taps(yolo, size=SIZE)
    x = _image()
    with torch.no_grad():
        plain = yolo(x)
        with capture(yolo) as every_row:
            full = yolo(x)
        with capture(yolo, queries=[QUERY]) as asked:
            rows = yolo(x)
    for out in (full, rows):
        assert isinstance(out, tuple) and torch.equal(out[0], plain[0])
        assert all(torch.equal(a, b) for a, b in zip(out[1], plain[1], strict=True))
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in yolo.modules())
    assert len(every_row) == len(asked) == 6  # 2 AAttn, channel + spatial, PSA, TransformerBlock
    for whole, kept in zip(every_row, asked, strict=True):
        assert torch.isfinite(whole.tensor).all(), whole.name
        if whole.kind == "matrix":
            assert kept.queries == [_cell(whole.grid)] and whole.norm == "softmax"
            torch.testing.assert_close(whole.tensor.sum(-1), torch.ones(whole.tensor.shape[:-1]))
            torch.testing.assert_close(whole.tensor[:, :, kept.queries], kept.tensor, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------- equal to the attention by hand


def _asked(model: nn.Module, layer: str) -> tuple[Any, torch.Tensor]:
    """The (first) matrix captured at `layer` for QUERY, and the input of `layer` in that call."""
    attach_taps(model, size=SIZE)
    seen: list[torch.Tensor] = []
    handle = model.get_submodule(layer).register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    with torch.no_grad(), capture(model, layers=[layer], queries=[QUERY]) as rec:
        model(_image(2))
    handle.remove()
    return rec[0], seen[0]


def test_psa_row_is_softmax_of_q_k_from_the_qkv_conv(yolo: nn.Module) -> None:
    found, x = _asked(yolo, "model.6.m.0.attn")
    attn = yolo.get_submodule("model.6.m.0.attn")
    assert (found.grid, found.queries, found.axes) == ((4, 6), [_cell((4, 6))], ("batch", "head", "query", "key"))
    with torch.no_grad():
        qkv = attn.qkv(x).view(1, attn.num_heads, 2 * attn.key_dim + attn.head_dim, 24)
    q, k, _ = qkv.split([attn.key_dim, attn.key_dim, attn.head_dim], dim=2)
    weights = (q.transpose(-2, -1) @ k * attn.key_dim**-0.5).softmax(-1)  # (1, heads, 24, 24)
    assert found.size_of("head") == attn.num_heads == 2
    torch.testing.assert_close(found.tensor, weights[:, :, found.queries])


def test_area_attention_row_lies_in_its_area_on_the_full_grid(yolo: nn.Module) -> None:
    found, x = _asked(yolo, "model.3.m.0.1.attn")
    attn = yolo.get_submodule("model.3.m.0.1.attn")
    (query,) = found.queries
    assert (found.grid, query, attn.area) == ((8, 12), _cell((8, 12)), 4)
    n, heads, d = 96, attn.num_heads, attn.head_dim
    with torch.no_grad():  # the module's own reshapes: 4 areas of 24 tokens (2 rows each)
        qkv = attn.qkv(x).flatten(2).transpose(1, 2).reshape(4, n // 4, heads * 3 * d)
    q, k, _ = qkv.view(4, n // 4, heads, 3 * d).permute(0, 2, 3, 1).split([d, d, d], dim=2)
    weights = (q.transpose(-2, -1) @ k * d**-0.5).softmax(-1)  # (areas, heads, 24, 24)
    area, within = divmod(query, n // 4)
    expected = torch.zeros(1, heads, 1, n)
    expected[0, :, 0, area * 24 : (area + 1) * 24] = weights[area, :, within]
    torch.testing.assert_close(found.tensor, expected)


@pytest.mark.parametrize("package", ["ultralytics", "yolov5"])
def test_transformer_block_rows_lie_on_its_input_grid(package: str, packages: dict[str, ModuleType]) -> None:
    mods = packages["transformer" if package == "ultralytics" else "common"]
    model = calibrated(nn.Sequential(nn.Conv2d(3, 32, 8, 8), mods.TransformerBlock(32, 16, 2, 2)))
    found, x = _asked(model, "1")
    block = model[1]
    assert (found.grid, found.queries, found.label) == ((8, 12), [_cell((8, 12))], "layer0")
    with torch.no_grad():
        p = block.conv(x).flatten(2).permute(2, 0, 1)
        p = p + block.linear(p)
        layer = block.tr[0]
        _, weights = layer.ma(layer.q(p), layer.k(p), layer.v(p), average_attn_weights=False)
    torch.testing.assert_close(found.tensor, weights[:, :, found.queries])


# ---------------------------------------------------------------------------------------------- the CLI


@pytest.fixture
def checkpoint(yolo: nn.Module, tmp_path: Path) -> Path:
    """The detector saved as ultralytics saves it, and a photo of another aspect than the input (letterboxed)."""
    torch.save({"model": yolo, "ema": yolo, "epoch": 3}, tmp_path / "yolo.pt")
    yy, xx = np.mgrid[0:100, 0:120]
    rgb = np.stack([xx / 120 * 255, yy / 100 * 255, np.full_like(xx, 80)], axis=-1)
    Image.fromarray(rgb.astype(np.uint8)).save(tmp_path / "photo.png")
    return tmp_path / "yolo.pt"


def _cli(command: str, checkpoint: Path, *extra: str) -> dict[str, Any]:
    """`attnviz COMMAND --model CHECKPOINT --trust photo.png` at 96x64, letterboxed, and its JSON result."""
    folder = checkpoint.parent
    args = [command, "--model", str(checkpoint), "--trust", str(folder / "photo.png"), "--size", "96x64"]
    args += ["--preprocess", "letterbox", "--device", "cpu", "--out", str(folder / "out"), "--json", *extra]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_show_draws_the_cbam_spatial_map_of_a_checkpoint(checkpoint: Path) -> None:
    (result,) = _cli("show", checkpoint)["results"]
    found = [(m["layer"], m["block"], m["kind"], m["shape"]) for m in result["maps"]]
    assert found == [("model.4", "CBAM", "channel", [1, 128]), ("model.4", "CBAM", "spatial", [1, 8, 12])]
    assert [Path(f).name for f in result["files"]] == ["photo_yolo_show.png"]
    assert Path(result["files"][0]).stat().st_size > 0


def test_matrix_draws_the_psa_rows_of_a_checkpoint(checkpoint: Path) -> None:
    result = _cli("matrix", checkpoint, "--query", "40,60", "--every-block", "--stages", "2,3")
    found = {m["layer"]: (m["block"], m["grid"], m["shape"]) for m in result["maps"]}
    assert found == {
        "model.3.m.0.0.attn": ("AAttn", [8, 12], [1, 2, 1, 96]),
        "model.3.m.0.1.attn": ("AAttn", [8, 12], [1, 2, 1, 96]),
        "model.6.m.0.attn": ("Attention", [4, 6], [1, 2, 1, 24]),
        "model.7": ("TransformerBlock", [4, 6], [1, 4, 1, 24]),
    }
    # pixel (40, 60) of the 120x100 photo, letterboxed into 96x64, lies at (35.4, 38.7): cell (2, 2) of 4 x 6
    assert all(m["queries"] == [14] for m in result["maps"] if m["grid"] == [4, 6])
    assert [Path(f).name for f in result["files"]] == ["photo_yolo_matrix.png"]


def test_a_half_precision_checkpoint_as_ultralytics_ships_it_is_drawn(yolo: nn.Module, checkpoint: Path) -> None:
    torch.save({"model": None, "ema": copy.deepcopy(yolo).half()}, checkpoint)  # last.pt; best.pt has it as "model"
    (result,) = _cli("show", checkpoint)["results"]
    assert [m["kind"] for m in result["maps"]] == ["channel", "spatial"]
