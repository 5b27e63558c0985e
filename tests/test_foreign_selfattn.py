"""Self-attention attnviz did not write (timm's ViT, BoT, HaloNet, LambdaNet, non-local and BAT modules, and
torch's MultiheadAttention): found, recomputed without changing a bit of the model's output, and equal to the
attention written out by hand from each module's own weights.

Models have random weights and nothing touches the network.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer
from typer.testing import CliRunner

from attnviz.capture import Recording, capture
from attnviz.cli.app import app
from attnviz.maps import AttentionMap
from attnviz.models.foreign.recognise import attach_taps

timm = pytest.importorskip("timm")

QUERY = (0.3, 0.6)
"""A query point, as (x, y) fractions of the input."""

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("no_network", "two_threads")  # see conftest.py


def _cell(grid: tuple[int, int], point: tuple[float, float] = QUERY) -> int:
    """The row-major token of the grid cell holding `point`."""
    return int(point[1] * grid[0]) * grid[1] + int(point[0] * grid[1])


# -------------------------------------------------------------------------------- models, each run once


def _timm(name: str, **kwargs: Any) -> Callable[[], nn.Module]:
    return lambda: timm.create_model(name, pretrained=False, **kwargs).eval()


class TinyTransformer(nn.Module):
    """A token mixer as users write it: nn.MultiheadAttention over the pixels of a small feature map."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 8, stride=8)
        self.attn = nn.MultiheadAttention(16, 4, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.stem(x).flatten(2).transpose(1, 2)
        return self.attn(tokens, tokens, tokens, need_weights=False)[0].mean(1)


class TinyBat(nn.Module):
    """timm's BatNonLocalAttn on a 14 x 14 map (its 7 x 7 bilinear factors, each cell repeated twice)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 4, stride=4)
        self.attn = timm.layers.BatNonLocalAttn(32, block_size=7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(self.stem(x))


def _torchvision_vit() -> nn.Module:
    return VisionTransformer(image_size=64, patch_size=16, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64).eval()


HALO_STRIDED = ("stages.3.0.self_attn", "stages.3.0.self_attn.kv")

BUILDERS: dict[str, tuple[Callable[[], nn.Module], int, tuple[str, ...]]] = {
    "vit": (_timm("vit_tiny_patch16_224"), 224, ("blocks.11.attn",)),
    "bot": (_timm("botnet26t_256"), 256, ("stages.2.1.self_attn",)),
    "halo": (_timm("halonet26t"), 256, ("stages.2.1.self_attn", "stages.2.1.self_attn.kv", *HALO_STRIDED)),
    "lambda": (_timm("lambda_resnet26t"), 64, ("stages.2.1.self_attn",)),
    "nl": (_timm("resnet18", block_args={"attn_layer": "nl"}), 64, ("layer2.0.se",)),
    "bat": (lambda: TinyBat().eval(), 56, ("attn", "attn.ba.conv2")),
    "mha": (lambda: TinyTransformer().eval(), 64, ()),
    "tv-vit": (_torchvision_vit, 64, ("encoder.layers.encoder_layer_1.self_attention",)),
}
"""Name -> (builder, input side, modules whose input and output the tests read)."""


@dataclass
class Run:
    """One model with taps, run on one input: without capture, with every row, and with the rows of QUERY."""

    model: nn.Module
    x: torch.Tensor
    plain: torch.Tensor
    full: torch.Tensor
    rows: torch.Tensor
    every_row: Recording
    asked: Recording
    inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)


def _watch(model: nn.Module, paths: tuple[str, ...], run: dict[str, dict[str, torch.Tensor]]) -> list[Any]:
    """Hooks filling run["inputs"] and run["outputs"] with the first input and the output of each module."""

    def keep(path: str) -> Callable[..., None]:
        def hook(_module: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> None:
            run["inputs"][path], run["outputs"][path] = args[0], out

        return hook

    return [model.get_submodule(path).register_forward_hook(keep(path)) for path in paths]


Ran = Callable[[str], Run]


@pytest.fixture(scope="module")
def ran() -> Iterator[Ran]:
    """`ran(name)`: the model `name` with taps attached, run once per module on a random input of its size."""
    runs: dict[str, Run] = {}

    def get(name: str) -> Run:
        if name not in runs:
            runs[name] = _run(name)
        return runs[name]

    yield get
    runs.clear()


def _run(name: str) -> Run:
    build, size, watched = BUILDERS[name]
    model = build()
    attach_taps(model, size=size)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    seen: dict[str, dict[str, torch.Tensor]] = {"inputs": {}, "outputs": {}}
    handles = _watch(model, watched, seen)
    with torch.no_grad():
        plain = model(x)
        for handle in handles:
            handle.remove()
        with capture(model) as every_row:
            full = model(x)
        with capture(model, queries=[QUERY]) as asked:
            rows = model(x)
    return Run(model, x, plain, full, rows, every_row, asked, seen["inputs"], seen["outputs"])


def _only(rec: Recording, layer: str, label: str = "matrix") -> AttentionMap:
    (found,) = [m for m in rec if m.layer == layer and m.label == label]
    return found


# ---------------------------------------------------------------------------------------------- recognition


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


INSPECTED = {
    "botnet26t_256": ([], 256, "BottleneckAttn", ("matrix",)),
    "halonet26t": ([], 256, "HaloAttn", ("matrix",)),
    "lambda_resnet26t": ([], 64, "LambdaLayer", ("spatial",)),
    "vit_tiny_patch16_224": ([], 224, "Attention", ("matrix", "spatial")),
    "resnet50": (["--timm-attn", "nl"], 64, "NonLocalAttn", ("matrix",)),
}


@pytest.mark.parametrize("name", list(INSPECTED))
def test_inspect_lists_every_self_attention_module(name: str) -> None:
    extra, size, cls, kinds = INSPECTED[name]
    code, out, err = run("inspect", "--model", f"timm:{name}", *extra, "--size", str(size), "--device", "cpu", "--json")
    assert code == 0, err
    report = json.loads(out)
    attn = {"attn_layer": extra[1]} if extra else {}
    model = timm.create_model(name, pretrained=False, **({"block_args": attn} if attn else {}))
    count = sum(type(m).__name__ == cls for m in model.modules())
    rows = [r for r in report["recognised"] if r["type"] == cls]
    assert count > 0 and len(rows) == count
    assert all(tuple(r["kinds"]) == kinds and r["calls"] == 1 and r["stage"] in (1, 2, 3, 4) for r in rows)
    assert all(r["maps"] for r in rows)
    assert report["not_recognised"] == []


def test_a_subclass_with_its_own_forward_is_not_taken_for_timm_attention() -> None:
    from timm.layers import Attention

    class ReweightedAttention(Attention):
        def forward(self, x: torch.Tensor, **_: Any) -> torch.Tensor:
            return super().forward(x) * 2

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 16, stride=16)
            self.mix = ReweightedAttention(8, num_heads=2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.mix(self.stem(x).flatten(2).transpose(1, 2))

    report = attach_taps(Net().eval(), size=64)
    assert report.recognised == [] and report.unrecognised == [("mix", "ReweightedAttention")]


# ------------------------------------------------------------------------------------------ outputs unchanged


@pytest.mark.parametrize("name", list(BUILDERS))
def test_outputs_bit_identical_and_only_asked_rows_kept(name: str, ran: Ran) -> None:
    run = ran(name)
    assert torch.equal(run.plain, run.full) and torch.equal(run.plain, run.rows)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in run.model.modules())
    assert len(run.every_row) == len(run.asked) > 0
    for whole, kept in zip(run.every_row, run.asked, strict=True):
        assert torch.isfinite(whole.tensor).all(), whole.name
        if kept.queries is not None:  # only the asked rows were computed, and they are the full matrix's rows
            assert kept.size_of("query") == len(kept.queries) == 1
            torch.testing.assert_close(whole.tensor[:, :, kept.queries], kept.tensor, rtol=1e-5, atol=1e-7)


def test_taps_pickle_and_work_after_loading(ran: Ran) -> None:
    run = ran("vit")
    buffer = io.BytesIO()
    torch.save(run.model, buffer)
    loaded = torch.load(io.BytesIO(buffer.getvalue()), weights_only=False)
    with torch.no_grad(), capture(loaded, layers=["blocks.11"], queries=[QUERY]) as rec:
        loaded(run.x)
    assert [m.label for m in rec] == ["matrix", "cls"]


# ---------------------------------------------------------------------------- equal to the attention by hand


def test_vit_row_is_softmax_of_q_k_from_the_qkv_weights(ran: Ran) -> None:
    run = ran("vit")
    attn, x = run.model.blocks[11].attn, run.inputs["blocks.11.attn"]
    matrix, cls = _only(run.asked, "blocks.11.attn"), _only(run.asked, "blocks.11.attn", "cls")
    query = _cell((14, 14))
    assert (matrix.grid, matrix.queries, matrix.axes) == ((14, 14), [query], ("batch", "head", "query", "key"))

    b, n, c = x.shape
    heads, d = attn.num_heads, c // attn.num_heads
    qkv = F.linear(x, attn.qkv.weight, attn.qkv.bias).reshape(b, n, 3, heads, d).permute(2, 0, 3, 1, 4)
    weights = (qkv[0] @ qkv[1].transpose(-2, -1) / d**0.5).softmax(-1)  # 1 class token, then 14 x 14 patches
    torch.testing.assert_close(matrix.tensor[:, :, 0], weights[:, :, 1 + query, 1:])
    torch.testing.assert_close(cls.tensor, weights[:, :, 0, 1:].reshape(b, heads, 14, 14))


def test_vit_matches_timm_own_unfused_softmax(ran: Ran) -> None:
    run = ran("vit")
    attn = run.model.blocks[11].attn
    softmaxed: list[torch.Tensor] = []  # unfused, timm sends the softmax through attn_drop
    handle = attn.attn_drop.register_forward_hook(lambda _m, args, _out: softmaxed.append(args[0]))
    attn.fused_attn = False
    try:
        with torch.no_grad(), capture(run.model, layers=["blocks.11"]) as rec:
            run.model(run.x)
    finally:
        attn.fused_attn = True
        handle.remove()
    torch.testing.assert_close(_only(rec, "blocks.11.attn").tensor, softmaxed[0][:, :, 1:, 1:], rtol=0, atol=1e-6)


def test_bot_row_includes_the_relative_position_logits(ran: Ran) -> None:
    run = ran("bot")
    module, x = run.model.stages[2][1].self_attn, run.inputs["stages.2.1.self_attn"]
    found = _only(run.asked, "stages.2.1.self_attn")
    assert (found.grid, found.queries, found.norm) == ((16, 16), [_cell((16, 16))], "softmax")

    b, heads, d = x.shape[0], module.num_heads, module.dim_head_qk
    q, k, _ = torch.split(module.qkv(x), [module.dim_out_qk, module.dim_out_qk, module.dim_out_v], dim=1)
    q = q.reshape(b * heads, d, -1).transpose(-1, -2)
    with torch.no_grad():
        logits = q @ k.reshape(b * heads, d, -1) / d**0.5 + module.pos_embed(q)
    expected = logits.softmax(-1).reshape(b, heads, 256, 256)[:, :, found.queries]
    torch.testing.assert_close(found.tensor, expected)


@pytest.mark.parametrize(("path", "stride"), [("stages.2.1.self_attn", 1), ("stages.3.0.self_attn", 2)])
def test_halo_rows_scattered_on_the_grid_rebuild_the_output(path: str, stride: int, ran: Ran) -> None:
    run = ran("halo")
    module, kv = run.model.get_submodule(path), run.outputs[f"{path}.kv"]
    found = _only(run.every_row, path)
    assert found.norm == "none" and module.block_stride == stride
    (h, w), heads = found.grid, module.num_heads
    values = kv.reshape(1, heads, -1, h * w)[:, :, module.dim_head_qk :].transpose(-1, -2)  # (1, heads, HW, d_v)
    rebuilt = (found.tensor @ values).transpose(-1, -2).reshape(1, -1, h, w)[..., ::stride, ::stride]
    torch.testing.assert_close(rebuilt, run.outputs[path], rtol=1e-4, atol=1e-5)  # the zero padding adds nothing
    assert ((found.tensor > 0).sum(-1) <= module.win_size**2).all()


def test_lambda_keys_are_softmaxed_over_positions(ran: Ran) -> None:
    run = ran("lambda")
    module, x = run.model.stages[2][1].self_attn, run.inputs["stages.2.1.self_attn"]
    found = _only(run.every_row, "stages.2.1.self_attn", "keys")
    assert (found.kind, found.axes) == ("spatial", ("batch", "channel", "height", "width"))
    b, _, h, w = x.shape
    with torch.no_grad():
        qkv = module.qkv(x)
    k = qkv[:, module.num_heads * module.dim_qk :][:, : module.dim_qk]
    torch.testing.assert_close(found.tensor, k.reshape(b, -1, h * w).softmax(-1).reshape(b, -1, h, w))


def test_non_local_row_is_softmax_of_theta_phi(ran: Ran) -> None:
    run = ran("nl")
    module, x = run.model.layer2[0].se, run.inputs["layer2.0.se"]
    found = _only(run.asked, "layer2.0.se")
    assert (found.grid, found.queries, found.size_of("head")) == ((8, 8), [_cell((8, 8))], 1)
    with torch.no_grad():
        theta, phi = module.t(x).flatten(2), module.p(x).flatten(2)
    weights = (theta.transpose(1, 2) @ phi * module.scale).softmax(-1)
    torch.testing.assert_close(found.tensor[:, 0], weights[:, found.queries])


def test_bat_matrix_applied_to_its_input_is_the_bilinear_transform(ran: Ran) -> None:
    run = ran("bat")
    module = run.model.attn
    (found,) = run.every_row
    assert (found.norm, found.grid, found.size_of("head")) == ("sum_to_one", (14, 14), module.ba.groups)
    torch.testing.assert_close(found.tensor.sum(-1), torch.ones(found.tensor.shape[:-1]))
    with torch.no_grad():
        xl = module.conv1(run.inputs["attn"])
    mixed = torch.einsum("bgqk,bgck->bgcq", found.tensor, xl.reshape(1, module.ba.groups, -1, 14 * 14))
    torch.testing.assert_close(mixed.reshape(xl.shape), run.inputs["attn.ba.conv2"], rtol=1e-4, atol=1e-5)


def test_multihead_attention_matches_torch_own_weights(ran: Ran) -> None:
    run = ran("mha")
    (found,) = run.asked
    assert (found.tokens, found.queries, found.shape) == ("sequence", None, (1, 4, 64, 64))
    with torch.no_grad():
        tokens = run.model.stem(run.x).flatten(2).transpose(1, 2)
        _, weights = run.model.attn(tokens, tokens, tokens, need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(found.tensor, weights)


def test_multihead_attention_in_torchvision_vit_is_drawn_over_the_patch_grid(ran: Ran) -> None:
    run = ran("tv-vit")
    layer = "encoder.layers.encoder_layer_1.self_attention"
    module, tokens = run.model.get_submodule(layer), run.inputs[layer]
    matrix, cls = _only(run.asked, layer), _only(run.asked, layer, "cls")
    assert (matrix.tokens, matrix.grid, matrix.queries) == ("grid", (4, 4), [_cell((4, 4))])
    with torch.no_grad():
        _, weights = module(tokens, tokens, tokens, need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(matrix.tensor[:, :, 0], weights[:, :, 1 + matrix.queries[0], 1:])
    torch.testing.assert_close(cls.tensor, weights[:, :, 0, 1:].reshape(1, 2, 4, 4))


# ---------------------------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    yy, xx = np.mgrid[0:60, 0:100]
    rgb = np.stack([xx / 100 * 255, yy / 60 * 255, np.full_like(xx, 80)], axis=-1)
    path = tmp_path_factory.mktemp("photos") / "photo.png"
    Image.fromarray(rgb.astype(np.uint8)).save(path)
    return path


def test_matrix_on_a_vit_draws_the_asked_row(photo: Path, tmp_path: Path) -> None:
    args = ["--query", "30,20", "--size", "224", "--device", "cpu", "--out", str(tmp_path), "--json"]
    code, out, err = run("matrix", "--model", "timm:vit_tiny_patch16_224", str(photo), *args)
    assert code == 0, err
    result = json.loads(out)
    assert [Path(f).name for f in result["files"]] == ["photo_timm-vit_tiny_patch16_224_matrix.png"]
    assert (tmp_path / "photo_timm-vit_tiny_patch16_224_matrix.png").stat().st_size > 0
    matrices = [m for m in result["maps"] if m["kind"] == "matrix"]
    assert len(matrices) == 12  # every block is in stage 3; the last is drawn
    column, row = int(30.5 / 100 * 14), int(20.5 / 60 * 14)
    assert all(m["grid"] == [14, 14] and m["queries"] == [row * 14 + column] for m in matrices)
    assert all(m["shape"] == [1, 3, 1, 196] for m in matrices)
