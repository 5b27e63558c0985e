"""Gates a user's forward applies with functional calls, and one nn.Sigmoid used as two gates.

Look-alikes of the code people write: the textbook SE `x * torch.sigmoid(self.fc(self.pool(x)))` (and with
`x.sigmoid()`, `F.sigmoid`, `F.hardsigmoid`), efficientnet-pytorch's MBConvBlock (`torch.sigmoid(x_squeezed) * x`
on expanded channels at a stride, beside a Swish `x * torch.sigmoid(x)` that is no gate), a CBAM-style spatial gate,
a CBAM written as one forward, a global-context softmax over positions, and fightingcv's PolarizedSelfAttention
(one nn.Sigmoid, a channel gate then a spatial gate). Each is recognised with the right kinds, captured as the
module applies it, and outputs are bit-identical with and without capture. Nothing here touches the network.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from attnviz.capture import Recording, capture
from attnviz.cli.app import app
from attnviz.models.foreign.recognise import attach_taps

SIZE = 64


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def mode_depth() -> int:
    """How many TorchFunctionModes are on the stack."""
    return torch._C._len_torch_function_stack()


# ------------------------------------------------------------------------------------------- the look-alikes

GATES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "torch.sigmoid": torch.sigmoid,
    "Tensor.sigmoid": lambda y: y.sigmoid(),
    "F.sigmoid": F.sigmoid,
    "F.hardsigmoid": F.hardsigmoid,
}


class TextbookSE(nn.Module):
    """The textbook squeeze-excitation: the gate is a function call in the forward, no nn.Sigmoid anywhere."""

    def __init__(self, channels: int, reduction: int = 4, gate: str = "torch.sigmoid") -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1), nn.ReLU(), nn.Conv2d(channels // reduction, channels, 1)
        )
        self.gate = gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(self.pool(x))
        if self.gate == "torch.sigmoid":
            return x * torch.sigmoid(y)
        if self.gate == "Tensor.sigmoid":
            return x * y.sigmoid()
        if self.gate == "F.sigmoid":
            return x * F.sigmoid(y)
        return x * F.hardsigmoid(y)


class SpatialGate(nn.Module):
    """CBAM's spatial half written inline: a conv over the [mean, max] channel statistics."""

    def __init__(self, kernel: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.mean(x, dim=1, keepdim=True)
        peak, _ = torch.max(x, dim=1, keepdim=True)
        return x * torch.sigmoid(self.conv(torch.cat([mean, peak], dim=1)))


class Swish(nn.Module):
    """efficientnet-pytorch's Swish: a sigmoid times its own input, which gates nothing."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


class MBConvBlock(nn.Module):
    """efficientnet-pytorch's MBConvBlock: the SE gate scales the expanded, strided features, not the block input."""

    def __init__(self, cin: int, cout: int, expand: int = 6, stride: int = 2) -> None:
        super().__init__()
        oup = cin * expand
        self._expand_conv = nn.Conv2d(cin, oup, 1, bias=False)
        self._bn0 = nn.BatchNorm2d(oup)
        self._depthwise_conv = nn.Conv2d(oup, oup, 3, stride, 1, groups=oup, bias=False)
        self._bn1 = nn.BatchNorm2d(oup)
        self._se_reduce = nn.Conv2d(oup, max(1, cin // 4), 1)
        self._se_expand = nn.Conv2d(max(1, cin // 4), oup, 1)
        self._project_conv = nn.Conv2d(oup, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout)
        self._swish = Swish()

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = self._swish(self._bn0(self._expand_conv(inputs)))
        x = self._swish(self._bn1(self._depthwise_conv(x)))
        x_squeezed = F.adaptive_avg_pool2d(x, 1)
        x_squeezed = self._se_expand(self._swish(self._se_reduce(x_squeezed)))
        x = torch.sigmoid(x_squeezed) * x
        return self._bn2(self._project_conv(x))


class FunctionalCBAM(nn.Module):
    """CBAM in one forward: a channel gate, then a spatial gate, both torch.sigmoid calls."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Conv2d(channels, 4, 1), nn.ReLU(), nn.Conv2d(4, channels, 1))
        self.conv = nn.Conv2d(2, 1, 7, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * torch.sigmoid(self.mlp(x.mean((2, 3), keepdim=True)) + self.mlp(x.amax((2, 3), keepdim=True)))
        return x * torch.sigmoid(self.conv(torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)))


class ContextPool(nn.Module):
    """Global-context pooling: F.softmax over the H*W positions, applied with a matmul."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.mask = nn.Conv2d(channels, 1, 1)
        self.transform = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        weights = F.softmax(self.mask(x).view(b, 1, h * w), dim=-1)
        context = torch.matmul(x.view(b, c, h * w), weights.transpose(1, 2)).view(b, c, 1, 1)
        return x + self.transform(context)


class PolarizedSelfAttention(nn.Module):
    """fightingcv's SequentialPolarizedSelfAttention: one nn.Sigmoid, (B, 1, C) for channels, then (B, 1, H, W)."""

    def __init__(self, channel: int) -> None:
        super().__init__()
        self.ch_wv = nn.Conv2d(channel, channel // 2, kernel_size=(1, 1))
        self.ch_wq = nn.Conv2d(channel, 1, kernel_size=(1, 1))
        self.softmax_channel = nn.Softmax(1)
        self.softmax_spatial = nn.Softmax(-1)
        self.ch_wz = nn.Conv2d(channel // 2, channel, kernel_size=(1, 1))
        self.ln = nn.LayerNorm(channel)
        self.sigmoid = nn.Sigmoid()
        self.sp_wv = nn.Conv2d(channel, channel // 2, kernel_size=(1, 1))
        self.sp_wq = nn.Conv2d(channel, channel // 2, kernel_size=(1, 1))
        self.agp = nn.AdaptiveAvgPool2d((1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.size()
        channel_wv = self.ch_wv(x).reshape(b, c // 2, -1)
        channel_wq = self.softmax_channel(self.ch_wq(x).reshape(b, -1, 1))
        channel_wz = torch.matmul(channel_wv, channel_wq).unsqueeze(-1)
        logits = self.ln(self.ch_wz(channel_wz).reshape(b, c, 1).permute(0, 2, 1))
        channel_weight = self.sigmoid(logits).permute(0, 2, 1).reshape(b, c, 1, 1)
        channel_out = channel_weight * x
        spatial_wv = self.sp_wv(channel_out).reshape(b, c // 2, -1)
        spatial_wq = self.agp(self.sp_wq(channel_out)).permute(0, 2, 3, 1).reshape(b, 1, c // 2)
        spatial_wz = torch.matmul(self.softmax_spatial(spatial_wq), spatial_wv)
        spatial_weight = self.sigmoid(spatial_wz.reshape(b, 1, h, w))
        return spatial_weight * channel_out


class TinyNet(nn.Module):
    """A stem to stride 4, the block under test, and a multi-label head with its own (non-gate) torch.sigmoid."""

    def __init__(self, block: nn.Module, channels: int = 16, out: int | None = None) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, stride=4, padding=1), nn.ReLU())
        self.block = block
        self.head = nn.Linear(out or channels, channels)  # as many labels as the stem has channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head(self.block(self.stem(x)).mean((2, 3))))


# -------------------------------------------------------------------------------------------------- helpers


def run_both(model: nn.Module, x: torch.Tensor, **options: object) -> tuple[Recording, dict[str, torch.Tensor]]:
    """Run `model` without and with capture; check the outputs are bit-identical and capture left nothing behind.

    Returns:
        The recording, and the block's input and output in the captured run.
    """
    seen: dict[str, torch.Tensor] = {}
    block = model.get_submodule("block")
    handle = block.register_forward_hook(lambda _m, args, out: seen.update(input=args[0], output=out))
    try:
        with torch.no_grad():
            plain = model(x)
            with capture(model, **options) as rec:  # type: ignore[arg-type]
                tapped = model(x)
    finally:
        handle.remove()
    assert torch.equal(plain, tapped)
    assert mode_depth() == 0
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    return rec, seen


def recognised(model: nn.Module, size: int | tuple[int, int] = SIZE) -> list[tuple[str, str, tuple[str, ...], str]]:
    report = attach_taps(model, size=size)
    assert report.unrecognised == []
    return [(f.path, f.type, f.kinds, f.how) for f in report.recognised]


def exactly(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("gate", list(GATES))
def test_textbook_se_with_a_functional_gate(gate: str) -> None:
    model = TinyNet(TextbookSE(16, gate=gate)).eval()
    assert recognised(model) == [("block", "TextbookSE", ("channel",), "structure")]
    rec, seen = run_both(model, torch.randn(2, 3, SIZE, SIZE))
    (m,) = rec
    assert (m.layer, m.kind, m.norm, m.shape) == ("block", "channel", "sigmoid", (2, 16))
    assert 0 <= float(m.tensor.min()) and float(m.tensor.max()) <= 1 and float(m.tensor.std()) > 0
    exactly(seen["input"] * m.tensor[:, :, None, None], seen["output"])


def test_mbconv_gate_over_its_expanded_strided_features() -> None:
    model = TinyNet(MBConvBlock(16, 24), out=24).eval()
    assert recognised(model) == [("block", "MBConvBlock", ("channel",), "structure")]  # the Swish is no gate
    x = torch.randn(2, 3, SIZE, SIZE)
    rec, _ = run_both(model, x)
    (m,) = rec
    assert (m.kind, m.shape) == ("channel", (2, 96))  # 16 channels in, 96 gated
    block, seen = model.block, {}
    handles = [
        block._bn1.register_forward_hook(lambda _m, _args, out: seen.update(normed=out)),
        block._project_conv.register_forward_pre_hook(lambda _m, args: seen.update(gated=args[0])),
    ]
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    features = seen["normed"] * torch.sigmoid(seen["normed"])  # the Swish after the strided depthwise conv
    assert features.shape == (2, 96, 8, 8)
    exactly(m.tensor[:, :, None, None] * features, seen["gated"])  # what the block multiplied


def test_spatial_gate_as_applied() -> None:
    model = TinyNet(SpatialGate()).eval()
    assert recognised(model) == [("block", "SpatialGate", ("spatial",), "structure")]
    rec, seen = run_both(model, torch.randn(2, 3, SIZE, SIZE))
    (m,) = rec
    assert (m.kind, m.axes, m.shape) == ("spatial", ("batch", "height", "width"), (2, 16, 16))
    exactly(seen["input"] * m.tensor[:, None], seen["output"])


def test_two_functional_gates_in_one_forward_are_told_apart_by_call() -> None:
    model = TinyNet(FunctionalCBAM(16)).eval()
    report = attach_taps(model, size=SIZE)
    (found,) = report.recognised
    assert [(t.label, t.kind, t.function, t.call) for t in found.taps] == [
        ("channel", "channel", "sigmoid", 0),
        ("spatial", "spatial", "sigmoid", 1),
    ]
    rec, seen = run_both(model, torch.randn(2, 3, SIZE, SIZE))
    channel, spatial = rec
    assert (channel.shape, spatial.shape) == ((2, 16), (2, 16, 16))
    exactly(seen["input"] * channel.tensor[:, :, None, None] * spatial.tensor[:, None], seen["output"])


def test_softmax_over_positions_is_a_spatial_map() -> None:
    model = TinyNet(ContextPool(16)).eval()
    assert recognised(model) == [("block", "ContextPool", ("spatial",), "structure")]
    rec, seen = run_both(model, torch.randn(2, 3, 64, 96))  # not square: H and W must not swap
    (m,) = rec
    assert (m.norm, m.over, m.shape) == ("softmax", ("height", "width"), (2, 16, 24))
    block = model.block
    with torch.no_grad():
        expected = F.softmax(block.mask(seen["input"]).flatten(1), dim=-1).view(2, 16, 24)
    exactly(m.tensor, expected)


@pytest.mark.parametrize("size", [(SIZE, SIZE), (96, SIZE)])
def test_one_sigmoid_used_as_a_channel_then_a_spatial_gate(size: tuple[int, int]) -> None:
    model = TinyNet(PolarizedSelfAttention(16)).eval()
    report = attach_taps(model, size=SIZE)
    (found,) = report.recognised
    assert (found.path, found.how) == ("block", "structure")
    assert [(t.kind, t.source, t.call, t.function) for t in found.taps] == [
        ("channel", "sigmoid", 0, None),
        ("spatial", "sigmoid", 1, None),
    ]
    rec, seen = run_both(model, torch.randn(2, 3, size[1], size[0]))
    channel, spatial = rec
    assert channel.shape == (2, 16)  # the C channels, not the H*W positions
    assert spatial.shape == (2, size[1] // 4, size[0] // 4)
    exactly(spatial.tensor[:, None] * (channel.tensor[:, :, None, None] * seen["input"]), seen["output"])


def test_a_block_called_twice_gives_a_map_per_call() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.se = TextbookSE(16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.se(self.se(x))

    model = TinyNet(Twice()).eval()
    assert recognised(model) == [("block.se", "TextbookSE", ("channel",), "structure")]
    rec, _ = run_both(model, torch.randn(1, 3, SIZE, SIZE))
    assert [(m.layer, m.call) for m in rec] == [("block.se", 0), ("block.se", 1)]
    assert not torch.equal(rec[0].tensor, rec[1].tensor)


class Faulty(TextbookSE):
    """Fails after its gate when asked to."""

    fail = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x) if not self.fail else x * torch.sigmoid(self.fc(self.pool(x)))
        if self.fail:
            raise RuntimeError("boom")
        return out


def test_interception_only_inside_the_gate_forward_and_gone_after_an_exception() -> None:
    model = TinyNet(Faulty(16)).eval()
    assert recognised(model) == [("block", "Faulty", ("channel",), "structure")]
    depths: dict[str, int] = {}
    hooks = [
        model.head.register_forward_pre_hook(lambda _m, _a: depths.update(head=mode_depth())),
        model.block.fc.register_forward_pre_hook(lambda _m, _a: depths.update(block=mode_depth())),
    ]
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad(), capture(model) as rec:
        model(x)
    assert depths == {"head": 0, "block": 1} and len(rec) == 1
    model.block.fail = True
    with pytest.raises(RuntimeError, match="boom"), torch.no_grad(), capture(model):
        model(x)
    assert mode_depth() == 0
    for hook in hooks:
        hook.remove()
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    model.block.fail = False
    rec, _ = run_both(model, x)
    assert len(rec) == 1


def test_not_gates_stay_unrecognised() -> None:
    """A sigmoid of the logits, a Swish, a softmax over a matrix: no gate, nothing tapped."""

    class Plain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.swish = Swish()
            self.qk = nn.Conv2d(16, 32, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            q, k = self.qk(self.swish(x)).flatten(2).chunk(2, dim=1)
            attention = torch.softmax(q.transpose(1, 2) @ k, dim=-1)
            return x + (x.flatten(2) @ attention).view_as(x)

    model = TinyNet(Plain()).eval()
    report = attach_taps(model, size=SIZE)
    assert report.recognised == [] and report.unrecognised == []


def test_functional_taps_pickle_and_report_their_call() -> None:
    model = TinyNet(FunctionalCBAM(16)).eval()
    report = attach_taps(model, size=SIZE)
    assert [(t["function"], t["call"]) for t in report.recognised[0].summary()["taps"]] == [
        ("sigmoid", 0),
        ("sigmoid", 1),
    ]
    buffer = io.BytesIO()
    torch.save(model, buffer)
    loaded = torch.load(io.BytesIO(buffer.getvalue()), weights_only=False)
    rec, _ = run_both(loaded, torch.randn(1, 3, SIZE, SIZE))
    assert [m.kind for m in rec] == ["channel", "spatial"]


# ------------------------------------------------------------------------------------------ the command line

MYNET = """
import torch
from torch import nn


class SELayer(nn.Module):
    def __init__(self, channels, reduction=4):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1), nn.ReLU(), nn.Conv2d(channels // reduction, channels, 1)
        )

    def forward(self, x):
        return x * torch.sigmoid(self.fc(self.pool(x)))


class SpatialGate(nn.Module):
    def __init__(self, kernel=7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel, padding=kernel // 2)

    def forward(self, x):
        return x * torch.sigmoid(self.conv(torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)))


class Net(nn.Module):
    def __init__(self, num_classes=5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 4, 1), nn.ReLU())
        self.se = SELayer(16)
        self.down = nn.Sequential(nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU())
        self.gate = SpatialGate()
        self.head = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.head(self.gate(self.down(self.se(self.stem(x)))).mean((2, 3)))


def build():
    return Net()
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "mynet.py").write_text(MYNET)
    yy, xx = np.mgrid[0:60, 0:80]
    rgb = np.stack([xx * 3, yy * 4, np.full_like(xx, 90)], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_torch_sigmoid_gate_in_the_users_forward_is_drawn(project: Path) -> None:
    args = ["--model", "mynet.py:build", "photo.png", "--size", "64", "--device", "cpu", "--out", "OUT"]
    result = CliRunner().invoke(app, ["show", *args, "--json"])
    assert result.exit_code == 0, result.stderr
    maps = json.loads(result.stdout)["results"][0]["maps"]
    assert [(m["layer"], m["kind"], m["shape"]) for m in maps] == [
        ("se", "channel", [1, 16]),
        ("gate", "spatial", [1, 8, 8]),
    ]
    assert [p.name for p in (project / "OUT").iterdir()] == ["photo_mynet-build_show.png"]
    assert Image.open(project / "OUT" / "photo_mynet-build_show.png").size[0] > 100
