"""Attention inside models attnviz did not build: torchvision, timm and users' own classes, found, tapped and drawn.

Every model is built with random weights (weights=None, pretrained=False) and an autouse fixture makes every socket
connection fail, so nothing here can touch the network.
"""

from __future__ import annotations

import ast
import importlib
import io
import json
import pathlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from attnviz.capture import capture
from attnviz.cli.app import app
from attnviz.models.foreign.recognise import attach_taps
from attnviz.models.foreign.taps import ForeignTap, detach_taps

timm = pytest.importorskip("timm")

SIZE = 64
FAST = ["--size", str(SIZE), "--device", "cpu"]
runner = CliRunner()


pytestmark = pytest.mark.usefixtures("no_network")  # see conftest.py


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Small models at 64 x 64 gain nothing from a second thread, and a busy machine makes it cost a lot."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def one_line_error(code: int, err: str, expected_code: int, needle: str) -> None:
    message = err.strip()
    assert code == expected_code, message
    assert "Traceback" not in message and len(message.splitlines()) == 1, message
    assert needle in message, message


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    yy, xx = np.mgrid[0:60, 0:100]
    rgb = np.stack([xx / 100 * 255, yy / 60 * 255, np.full_like(xx, 80)], axis=-1)
    rgb[(xx - 70) ** 2 + (yy - 30) ** 2 < 150] = (250, 250, 40)
    path = tmp_path_factory.mktemp("photos") / "photo.png"
    Image.fromarray(rgb.astype(np.uint8)).save(path)
    return path


# ------------------------------------------------------------------------------------ recognised by type


def _torchvision(name: str) -> Callable[[], nn.Module]:
    return lambda: torchvision.models.get_model(name, weights=None)


def _timm(name: str, **kwargs: object) -> Callable[[], nn.Module]:
    # zero_init_last=False: timm would zero each residual branch, so every gate would see zeros
    return lambda: timm.create_model(name, pretrained=False, **kwargs)


def _timm_attn(attn: str) -> Callable[[], nn.Module]:
    return _timm("resnet18", block_args={"attn_layer": attn}, zero_init_last=False)


MODELS: dict[str, tuple[Callable[[], nn.Module], dict[str, tuple[str, ...]]]] = {
    "tv-mobilenet_v3_small": (_torchvision("mobilenet_v3_small"), {"SqueezeExcitation": ("channel",)}),
    "tv-efficientnet_b0": (_torchvision("efficientnet_b0"), {"SqueezeExcitation": ("channel",)}),
    "tv-regnet_y_400mf": (_torchvision("regnet_y_400mf"), {"SqueezeExcitation": ("channel",)}),
    "timm-resnet18-se": (_timm_attn("se"), {"SEModule": ("channel",)}),
    "timm-resnet18-ese": (_timm_attn("ese"), {"EffectiveSEModule": ("channel",)}),
    "timm-resnet18-eca": (_timm_attn("eca"), {"EcaModule": ("channel",)}),
    "timm-resnet18-ceca": (_timm_attn("ceca"), {"CecaModule": ("channel",)}),
    "timm-resnet18-cbam": (_timm_attn("cbam"), {"CbamModule": ("channel", "spatial")}),
    "timm-resnet18-lcbam": (_timm_attn("lcbam"), {"LightCbamModule": ("channel", "spatial")}),
    "timm-resnet18-coord": (_timm_attn("coord"), {"CoordAttn": ("coordinate",)}),
    "timm-resnet18-gc": (_timm_attn("gc"), {"GlobalContext": ("spatial", "channel")}),
    "timm-skresnet18": (_timm("skresnet18"), {"SelectiveKernel": ("selection",)}),
    "timm-gcresnet33ts": (_timm("gcresnet33ts"), {"GlobalContext": ("spatial",)}),
    "timm-resnest14d": (_timm("resnest14d"), {"SplitAttn": ("selection",)}),
    "timm-mobilenetv3_small_050": (_timm("mobilenetv3_small_050"), {"SqueezeExcite": ("channel",)}),
    "timm-legacy_seresnet18": (_timm("legacy_seresnet18"), {"SEModule": ("channel",)}),  # by structure
}


def _check_values(m: object, label: str) -> None:
    t = m.tensor  # type: ignore[attr-defined]
    assert torch.isfinite(t).all(), label
    if m.norm == "sigmoid":  # type: ignore[attr-defined]
        assert 0.0 <= float(t.min()) and float(t.max()) <= 1.0, label
    if m.norm == "softmax":  # type: ignore[attr-defined]
        dims = [m.axes.index(a) for a in m.over]  # type: ignore[attr-defined]
        torch.testing.assert_close(t.sum(dim=dims), torch.ones_like(t.sum(dim=dims)), msg=label)


@pytest.mark.parametrize("case", list(MODELS))
def test_recognised_by_type_captured_and_outputs_unchanged(case: str) -> None:
    build, expected = MODELS[case]
    model = build().eval()
    keys = list(model.state_dict())
    report = attach_taps(model, size=SIZE)

    kinds: dict[str, set[str]] = {}
    for found in report.recognised:
        kinds.setdefault(found.type, set()).update(found.kinds)
    assert kinds == {name: set(k) for name, k in expected.items()}
    for name in expected:  # every instance of the class, each called once, each in a stage
        assert sum(type(m).__name__ == name for m in model.modules()) == sum(f.type == name for f in report.recognised)
    assert all(f.calls == 1 and f.stage in (1, 2, 3, 4) for f in report.recognised)
    assert list(model.state_dict()) == keys  # taps hold no parameters or buffers
    assert report.unrecognised == []

    shapes: dict[str, tuple[int, ...]] = {}

    def record_shape(path: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _args: object, out: torch.Tensor) -> None:
            shapes.setdefault(path, tuple(out.shape))

        return hook

    handles = [model.get_submodule(f.path).register_forward_hook(record_shape(f.path)) for f in report.recognised]
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        plain = model(x)
        with capture(model) as rec:
            tapped = model(x)
    for handle in handles:
        handle.remove()
    assert torch.equal(plain, tapped)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())  # capture cleaned up
    assert len(rec) == sum(len(f.taps) for f in report.recognised)
    for m in rec:
        out = shapes[m.layer]
        sizes = {"batch": 2, "channel": out[1], "height": out[2], "width": out[3]}
        assert all(m.size_of(axis) == n for axis, n in sizes.items() if axis in m.axes), (m.name, m.shape, out)
        _check_values(m, m.name)


def test_stages_follow_the_output_stride() -> None:
    model = torchvision.models.mobilenet_v3_large(weights=None).eval()
    report = attach_taps(model, size=SIZE)
    stages = {f.path: f.stage for f in report.recognised}
    assert stages["features.4.block.2"] == 2  # first SE, at stride 8
    assert {p for p, s in stages.items() if s == 3} == {"features.11.block.2", "features.12.block.2"}
    assert list(model.attnviz_blocks) == list(stages)  # forward order


def _inputs_of(module: nn.Module, run_model: Callable[[], object]) -> torch.Tensor:
    seen: list[torch.Tensor] = []
    handle = module.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    try:
        run_model()
    finally:
        handle.remove()
    return seen[0]


def test_coordinate_attention_gives_h_then_w_as_computed() -> None:
    model = _timm_attn("coord")().eval()
    attach_taps(model, size=SIZE)
    coord = model.layer2[0].se
    x = torch.randn(1, 3, 64, 96)  # not square, so a_h and a_w differ in length
    with torch.no_grad(), capture(model, layers=["layer2.0.se"]) as rec:
        features = _inputs_of(coord, lambda: model(x))
    assert [m.label for m in rec] == ["h", "w"]
    a_h, a_w = rec[0].tensor, rec[1].tensor
    assert a_h.shape == (1, 128, 8) and a_w.shape == (1, 128, 12)
    with torch.no_grad():
        _, _, h, w = features.shape
        pooled = torch.cat([features.mean(3, keepdim=True), features.mean(2, keepdim=True).transpose(-1, -2)], dim=2)
        y_h, y_w = torch.split(coord.act(coord.bn1(coord.conv1(pooled))), [h, w], dim=2)
        torch.testing.assert_close(a_h, torch.sigmoid(coord.conv_h(y_h)).flatten(2))
        torch.testing.assert_close(a_w, torch.sigmoid(coord.conv_w(y_w.transpose(-1, -2))).flatten(2))


def test_light_cbam_functional_sigmoid_recomputed() -> None:
    model = _timm_attn("lcbam")().eval()
    attach_taps(model, size=SIZE)
    cbam = model.layer3[1].se
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad(), capture(model, layers=["layer3.1.se"]) as rec:
        features = _inputs_of(cbam, lambda: model(x))
    channel, spatial = (m.tensor for m in rec)
    with torch.no_grad():
        ca = cbam.channel
        pooled = 0.5 * features.mean((2, 3), keepdim=True) + 0.5 * features.amax((2, 3), keepdim=True)
        expected_channel = torch.sigmoid(ca.fc2(F.relu(ca.fc1(pooled)))).flatten(1)
        gated = features * expected_channel[:, :, None, None]
        stats = 0.5 * gated.mean(dim=1, keepdim=True) + 0.5 * gated.amax(dim=1, keepdim=True)
        expected_spatial = torch.sigmoid(cbam.spatial.conv(stats))[:, 0]
    torch.testing.assert_close(channel, expected_channel)
    torch.testing.assert_close(spatial, expected_spatial)
    assert float(channel.std()) > 0 and float(spatial.std()) > 0  # not a trivial constant gate


def test_global_context_functional_softmax_recomputed() -> None:
    model = _timm_attn("gc")().eval()
    attach_taps(model, size=SIZE)
    gc = model.layer2[1].se
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad(), capture(model, layers=["layer2.1.se"]) as rec:
        features = _inputs_of(gc, lambda: model(x))
    maps = {m.label: m for m in rec}
    assert (maps["context"].kind, maps["context"].norm, maps["context"].over) == (
        "spatial",
        "softmax",
        ("height", "width"),
    )
    with torch.no_grad():
        b, c, h, w = features.shape
        logits = F.conv2d(features, gc.conv_attn.weight, gc.conv_attn.bias).reshape(b, h * w)
        weights = torch.softmax(logits, dim=-1)
        context = (features.reshape(b, c, h * w) * weights[:, None]).sum(-1)[:, :, None, None]
        gate = torch.sigmoid(gc.mlp_scale(context)).flatten(1)
    torch.testing.assert_close(maps["context"].tensor, weights.reshape(b, h, w))
    torch.testing.assert_close(maps["channel"].tensor, gate, rtol=1e-4, atol=1e-5)


def test_taps_survive_save_and_detach_restores_the_model() -> None:
    model = _timm_attn("cbam")().eval()
    before = [name for name, _ in model.named_modules()]
    attach_taps(model, size=SIZE)
    attach_taps(model, size=SIZE)  # again: replaces, never doubles
    taps = [m for m in model.modules() if isinstance(m, ForeignTap)]
    assert len(taps) == 16
    buffer = io.BytesIO()
    torch.save(model, buffer)  # the taps pickle (no hooks live outside capture)
    assert torch.load(io.BytesIO(buffer.getvalue()), weights_only=False) is not None
    detach_taps(model)
    assert [name for name, _ in model.named_modules()] == before


# ------------------------------------------------------------------------- a user's own (blog-style) model


class TouchesAFile:
    """Unpickling this creates `target`: what a malicious model file could do."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (pathlib.Path.touch, (pathlib.Path(self.target),))


class BlogSE(nn.Module):
    """Squeeze-excitation as blog posts write it: Linear layers and an nn.Sigmoid inside a Sequential."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(channels, channels // reduction, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(channels // reduction, channels, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, _, _ = x.size()
        y = self.fc(self.avg_pool(x).view(b, c)).view(b, c, 1, 1)
        return x * y.expand_as(x)


class ChannelAttention(nn.Module):
    """CBAM's channel half, returning the gate."""

    def __init__(self, channels: int, ratio: int = 4) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.max_pool = nn.AdaptiveMaxPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // ratio, 1, bias=False)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Conv2d(channels // ratio, channels, 1, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg_out = self.fc2(self.relu1(self.fc1(self.avg_pool(x))))
        max_out = self.fc2(self.relu1(self.fc1(self.max_pool(x))))
        return self.sigmoid(avg_out + max_out)


class SpatialAttention(nn.Module):
    """CBAM's spatial half: a conv over the [mean, max] channel statistics, returning the gate."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg_out = torch.mean(x, dim=1, keepdim=True)
        max_out, _ = torch.max(x, dim=1, keepdim=True)
        return self.sigmoid(self.conv1(torch.cat([avg_out, max_out], dim=1)))


class BlogCBAM(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.ca = ChannelAttention(channels)
        self.sa = SpatialAttention()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ca(x) * x
        return self.sa(x) * x


class MysteryAttention(nn.Module):
    """Self-attention with a functional softmax: nothing attnviz can tap, so it must be listed as not recognised."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(x).flatten(2).chunk(3, dim=1)
        attention = torch.softmax(q.transpose(1, 2) @ k / c**0.5, dim=-1)
        return x + (v @ attention.transpose(1, 2)).view(b, c, h, w)


class BlogNet(nn.Module):
    def __init__(self, marker: Path | None = None) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=4, padding=1), nn.ReLU())
        self.se = BlogSE(16)
        self.down = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU())
        self.cbam = BlogCBAM(32)
        self.mystery = MysteryAttention(32)
        self.head = nn.Linear(32, 5)
        self.note = TouchesAFile(marker) if marker is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mystery(self.cbam(self.down(self.se(self.stem(x)))))
        return self.head(x.mean((2, 3)))


def test_blog_style_modules_recognised_by_structure() -> None:
    model = BlogNet().eval()
    report = attach_taps(model, size=SIZE)
    found = {(f.path, f.type, f.kinds, f.how, f.stage) for f in report.recognised}
    assert found == {
        ("se", "BlogSE", ("channel",), "structure", 1),
        ("cbam.ca", "ChannelAttention", ("channel",), "structure", 2),
        ("cbam.sa", "SpatialAttention", ("spatial",), "structure", 2),
    }
    assert report.unrecognised == [("mystery", "MysteryAttention")]
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        plain = model(x)
        with capture(model) as rec:
            tapped = model(x)
    assert torch.equal(plain, tapped)
    assert [(m.layer, m.shape) for m in rec] == [("se", (2, 16)), ("cbam.ca", (2, 32)), ("cbam.sa", (2, 8, 8))]
    for m in rec:
        _check_values(m, m.name)


class GatedBlock(nn.Module):
    """An SE gate written as a Sequential: a new child would be called by its forward, so the tap goes one up."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.se = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, 4, 1), nn.ReLU(), nn.Conv2d(4, channels, 1), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return x * self.se(x)


def test_gate_inside_a_sequential_is_tapped_from_its_parent() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=8, padding=1), GatedBlock(8)).eval()
    report = attach_taps(model, size=SIZE)
    assert [(f.path, f.kinds, f.stage) for f in report.recognised] == [("1", ("channel",), 2)]
    assert len(model[1].se) == 5  # the Sequential itself is untouched
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        plain = model(x)
        with capture(model) as rec:
            tapped = model(x)
    assert torch.equal(plain, tapped)
    (m,) = rec
    assert (m.layer, m.shape) == ("1", (1, 8))
    torch.testing.assert_close(m.tensor, torch.sigmoid(model[1].se[:4](model[1].conv(model[0](x)))).flatten(1))


@pytest.fixture
def user_model(tmp_path: Path) -> tuple[Path, Path]:
    """A BlogNet saved with torch.save(model), carrying a payload that creates `marker` when unpickled."""
    marker = tmp_path / "created_by_unpickling"
    path = tmp_path / "my_net.pt"
    torch.save(BlogNet(marker).eval(), path)
    return path, marker


def test_user_model_file_needs_trust_and_runs_nothing_without(user_model: tuple[Path, Path], photo: Path) -> None:
    path, marker = user_model
    code, _, err = run("inspect", "--model", str(path), *FAST)
    one_line_error(code, err, 2, "--trust")
    assert not marker.exists()
    code, _, err = run("show", str(photo), "--model", str(path), *FAST)
    one_line_error(code, err, 2, "--trust")
    assert not marker.exists()


def test_trusted_user_model_inspected_and_shown(user_model: tuple[Path, Path], photo: Path, tmp_path: Path) -> None:
    path, marker = user_model
    code, out, err = run("inspect", "--model", str(path), "--trust", *FAST, "--json")
    assert code == 0, err
    assert marker.exists()  # control: the payload is real, it runs once the user trusts the file
    result = json.loads(out)
    assert {(r["layer"], tuple(r["kinds"]), r["calls"]) for r in result["recognised"]} == {
        ("se", ("channel",), 1),
        ("cbam.ca", ("channel",), 1),
        ("cbam.sa", ("spatial",), 1),
    }
    assert result["not_recognised"] == [{"layer": "mystery", "type": "MysteryAttention"}]
    code, out, err = run("inspect", "--model", str(path), "--trust", *FAST)
    assert code == 0, err
    assert "not recognised: mystery (MysteryAttention)" in out
    out_dir = tmp_path / "out"
    code, _, err = run("show", "--model", str(path), "--trust", str(photo), *FAST, "--out", str(out_dir))
    assert code == 0, err
    assert [p.name for p in out_dir.iterdir()] == ["photo_my_net_show.png"]


def test_pickled_attnviz_model_keeps_its_own_blocks(photo: Path, tmp_path: Path) -> None:
    from attnviz.models.backbones import build_model

    path = tmp_path / "ours.pt"
    torch.save(build_model("resnet18", "cbam", stages=(3, 4)), path)
    code, out, err = run("inspect", "--model", str(path), "--trust", *FAST, "--json")
    assert code == 0, err
    rows = json.loads(out)["recognised"]
    assert {(r["layer"], r["type"], r["how"], r["stage"]) for r in rows} == {
        (f"layer{s}.{i}.attn", "cbam", "attnviz", s) for s in (3, 4) for i in (0, 1)
    }
    code, _, err = run("show", "--model", str(path), "--trust", str(photo), *FAST, "--out", str(tmp_path / "out"))
    assert code == 0, err


def test_state_dict_file_with_backbone_uses_its_built_in_attention(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from attnviz.models.backbones import build_model

    path = tmp_path / "finetuned.safetensors"
    save_file(build_model("mobilenet_v3_small", None).state_dict(), str(path))
    code, out, err = run("inspect", "--model", str(path), "--backbone", "mobilenet_v3_small", *FAST, "--json")
    assert code == 0, err
    assert {r["type"] for r in json.loads(out)["recognised"]} == {"SqueezeExcitation"}


# ---------------------------------------------------------------------------------------------------- the CLI


def test_channels_on_torchvision_model(photo: Path, tmp_path: Path) -> None:
    code, out, err = run(
        "channels", "--model", "torchvision:mobilenet_v3_large", str(photo), "--layer", "3", *FAST,
        "--out", str(tmp_path), "--json",
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert [Path(f).name for f in result["files"]] == ["photo_torchvision-mobilenet_v3_large_channels_stage3.png"]
    assert [m["map"] for m in result["maps"]] == ["features.11.block.2:channel", "features.12.block.2:channel"]
    assert Image.open(result["files"][0]).size[0] > 100


def test_show_on_timm_model_with_cbam(photo: Path, tmp_path: Path) -> None:
    code, out, err = run(
        "show", "--model", "timm:resnet18", "--timm-attn", "cbam", str(photo), *FAST, "--out", str(tmp_path), "--json"
    )
    assert code == 0, err
    (result,) = json.loads(out)["results"]
    assert [Path(f).name for f in result["files"]] == ["photo_timm-resnet18-cbam_show.png"]
    assert {m["layer"] for m in result["maps"]} == {f"layer{s}.{i}.se" for s in (1, 2, 3, 4) for i in (0, 1)}


def test_inspect_lists_modules_kinds_and_calls() -> None:
    code, out, err = run("inspect", "--model", "timm:resnet18", "--timm-attn", "coord", *FAST, "--json")
    assert code == 0, err
    rows = json.loads(out)["recognised"]
    assert len(rows) == 8 and {(r["type"], tuple(r["kinds"]), r["calls"]) for r in rows} == {
        ("CoordAttn", ("coordinate",), 1)
    }
    assert [m["label"] for m in rows[0]["maps"]] == ["h", "w"]


def test_coords_on_timm_model(photo: Path, tmp_path: Path) -> None:
    code, _, err = run(
        "coords", "--model", "timm:resnet18", "--timm-attn", "coord", str(photo), *FAST, "--out", str(tmp_path)
    )
    assert code == 0, err
    assert [p.name for p in tmp_path.iterdir()] == ["photo_timm-resnet18-coord_coords.png"]


def test_timm_missing_gives_install_hint(photo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)
    code, _, err = run("show", "--model", "timm:resnet18", str(photo), *FAST, "--out", str(tmp_path))
    one_line_error(code, err, 2, "pip install attnviz[timm]")


def test_pretrained_offline_says_where_to_place_the_file(
    photo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from urllib.error import URLError

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(*_args: object, **_kwargs: object) -> None:
        raise URLError("no network")

    args = ["channels", "--model", "torchvision:mobilenet_v3_small", str(photo), "--pretrained", *FAST]
    with monkeypatch.context() as patch:
        patch.setattr("torchvision.models._api.load_state_dict_from_url", offline)
        code, _, err = run(*args, "--out", str(tmp_path / "out"))
    one_line_error(code, err, 1, "place it at")
    target = tmp_path / "torch" / "hub" / "checkpoints"
    assert str(target) in err.replace("\n", "")
    assert not (tmp_path / "out").exists()

    # placing a file there is what makes --pretrained work offline
    name = err.split("place it at ")[1].split(")")[0].strip()
    Path(name).parent.mkdir(parents=True, exist_ok=True)
    torch.save(torchvision.models.mobilenet_v3_small(weights=None).state_dict(), name)
    code, out, err = run(*args, "--out", str(tmp_path / "out"), "--json")
    assert code == 0, err
    assert "pretrained ImageNet weights" in json.loads(out)["weights"]


def test_timm_pretrained_offline_then_placed(photo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.torch import save_file

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    args = ["show", "--model", "timm:resnet18", "--timm-attn", "cbam", str(photo), "--pretrained", *FAST]
    code, _, err = run(*args, "--out", str(tmp_path / "out"))
    one_line_error(code, err, 1, "place it at")
    placed = tmp_path / "torch" / "hub" / "checkpoints" / "timm-resnet18.safetensors"
    assert str(placed) in err
    placed.parent.mkdir(parents=True)
    save_file(timm.create_model("resnet18").state_dict(), str(placed))
    code, out, err = run(*args, "--out", str(tmp_path / "out"), "--json")
    assert code == 0, err
    assert "the cbam modules are untrained" in json.loads(out)["weights"]


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["show", "IMG"], 2, "missing argument IMAGES"),
        (["show", "--model", "torchvision:mobilenet_v3_small", "IMG"], 2, "attnviz channels --model"),
        (["show", "--model", "torchvision:mobilenet_v3_smal", "IMG"], 2, "did you mean mobilenet_v3_small"),
        (["show", "--model", "timm:resnet18", "cbam", "IMG"], 2, "--timm-attn cbam"),
        (["show", "--model", "timm:resnet18", "--timm-attn", "nosuch", "IMG"], 2, "unknown --timm-attn 'nosuch'"),
        (["show", "--model", "timm:efficientnet_b0", "--timm-attn", "cbam", "IMG"], 2, "does not take --timm-attn"),
        (["show", "cbam", "--timm-attn", "cbam", "IMG"], 2, "--timm-attn goes with --model timm:NAME"),
        (["show", "--model", "nowhere.pt", "IMG"], 2, "model file not found"),
        (["channels", "--model", "torchvision:mobilenet_v3_small", "IMG", "--layer", "2"], 2, "stages with attention"),
        (["inspect"], 2, "missing argument BLOCK"),
    ],
)
def test_bad_model_options_one_line(photo: Path, tmp_path: Path, args: list[str], code: int, needle: str) -> None:
    out_dir = tmp_path / "out"
    where = [] if args[0] == "inspect" else ["--out", str(out_dir)]
    exit_code, _, err = run(*[str(photo) if a == "IMG" else a for a in args], *FAST, *where)
    one_line_error(exit_code, err, code, needle)
    assert not out_dir.exists()


# ------------------------------------------------------------------------------------------------ the package

REEXPORTED = {
    "taps": ("TAP_PREFIX", "TapSpec", "ForeignTap", "detach_taps"),
    "recognise": ("ForeignReport", "attach_taps"),
    "zoo": (
        "ForeignModel",
        "parse_model_spec",
        "file_slug",
        "torchvision_model",
        "timm_model",
        "reachable",
    ),
    "modelfile": ("model_file", "module_from_checkpoint"),
}


@pytest.mark.parametrize(("module", "names"), REEXPORTED.items())
def test_package_reexports_the_names_the_rest_of_attnviz_imports(module: str, names: tuple[str, ...]) -> None:
    package = importlib.import_module("attnviz.models.foreign")
    home = importlib.import_module(f"attnviz.models.foreign.{module}")
    for name in names:
        assert getattr(package, name) is getattr(home, name), name
        assert name in package.__all__, name


def test_foreign_imports_point_down() -> None:
    """models/foreign imports neither the CLI, the pipeline nor training, not even inside a function."""
    upper = ("attnviz.cli", "attnviz.pipeline", "attnviz.training")
    package = importlib.import_module("attnviz.models.foreign")
    for path in sorted(Path(package.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert not any(name == up or name.startswith(up + ".") for up in upper), f"{path.name}: {name}"
