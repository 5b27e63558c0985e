"""Tests of attnviz.capture (hooks, cleanup, bounds) and of the reductions in attnviz.maps."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn

from attnviz.blocks.base import Tap, create_block
from attnviz.capture import capture
from attnviz.errors import CaptureError, UsageError
from attnviz.maps import AttentionMap, channel_vector, coordinate_outer, plane, query_plane
from attnviz.models.backbones import build_model


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """One intra-op thread: these models are tiny, and two threads slow down many times when the CPU is shared."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# --------------------------------------------------------------------------------------------------- helpers


class CalledTwice(nn.Module):
    """Calls the same CBAM twice in one forward."""

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        self.attn = create_block("cbam", channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(self.attn(x))


class MutatesAfterTap(nn.Module):
    """A foreign module whose gate is changed in place right after it passes the tap."""

    def __init__(self) -> None:
        super().__init__()
        self.tap = Tap("spatial", ("batch", "height", "width"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.tap(torch.sigmoid(x.mean(dim=1)))
        gate.mul_(0)
        return x * gate[:, None]


class TupleOut(nn.Module):
    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.attn = create_block("cbam", channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.attn(x)
        return out, out.mean()


class DictOut(TupleOut):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return {"out": self.attn(x)}


def _taps(model: nn.Module) -> list[Tap]:
    return [m for m in model.modules() if isinstance(m, Tap)]


def _assert_unhooked(model: nn.Module) -> None:
    taps = _taps(model)
    assert taps
    for tap in taps:
        assert not tap._forward_hooks, "a capture hook was left on a tap"
        assert not tap._forward_hooks_with_kwargs


def _modes(model: nn.Module) -> dict[str, bool]:
    return {name: module.training for name, module in model.named_modules()}


@pytest.fixture(scope="module")
def resnet_cbam() -> nn.Module:
    torch.manual_seed(0)
    return build_model("resnet18", "cbam")


@pytest.fixture(scope="module")
def resnet_mhsa() -> nn.Module:
    torch.manual_seed(0)
    return build_model("resnet18", "mhsa", stages=(3, 4))


def _mixed_mode(model: nn.Module) -> dict[str, bool]:
    model.train()
    model.layer2.eval()
    model.layer3[1].attn.train()
    modes = _modes(model)
    assert len(set(modes.values())) == 2
    return modes


# ----------------------------------------------------------------------------------------- what is recorded


def test_every_call_of_every_tap_is_recorded() -> None:
    model = CalledTwice().eval()
    with capture(model) as rec:
        model(torch.randn(2, 16, 9, 11))
    assert [(m.label, m.call) for m in rec] == [("channel", 0), ("spatial", 0), ("channel", 1), ("spatial", 1)]
    spatial = rec.of_kind("spatial")
    assert [m.name for m in spatial] == ["attn:spatial", "attn:spatial#1"]
    assert all(m.layer == "attn" and m.block == "cbam" for m in rec)
    assert spatial[0].tap == "attn.spatial.tap"
    assert spatial[0].shape == (2, 9, 11)
    # The second call sees the first call's output, so its map differs.
    assert not torch.equal(spatial[0].tensor, spatial[1].tensor)


def test_resnet_records_one_map_per_tap_with_block_paths(resnet_cbam: nn.Module) -> None:
    with capture(resnet_cbam) as rec:
        resnet_cbam(torch.randn(1, 3, 64, 80))
    assert len(rec) == 2 * len(resnet_cbam.attnviz_blocks)
    assert rec.layers() == list(resnet_cbam.attnviz_blocks)
    assert {m.block for m in rec} == {"cbam"}
    assert all(m.call == 0 for m in rec)


def test_recorded_tensor_is_a_detached_cpu_copy() -> None:
    model = MutatesAfterTap()
    x = torch.randn(2, 4, 5, 6, requires_grad=True)
    with capture(model) as rec:
        out = model(x)
    assert torch.equal(out, torch.zeros_like(out))  # the model really zeroed its gate in place
    (m,) = rec
    expected = torch.sigmoid(x.detach().mean(dim=1))
    assert torch.equal(m.tensor, expected)
    assert m.tensor.device.type == "cpu"
    assert not m.tensor.requires_grad and m.tensor.grad_fn is None
    assert m.tensor.dtype == torch.float32
    assert m.block == "MutatesAfterTap" and m.layer == ""


def test_fp16_storage() -> None:
    model = CalledTwice().eval()
    x = torch.randn(1, 16, 8, 8)
    with capture(model) as full, capture(model, dtype=torch.float16) as half:
        model(x)
    assert all(m.tensor.dtype == torch.float16 for m in half)
    assert all(m.tensor.dtype == torch.float32 for m in full)
    for a, b in zip(full, half, strict=True):
        torch.testing.assert_close(b.tensor.float(), a.tensor, atol=1e-3, rtol=1e-3)


def test_outputs_bit_identical_with_and_without_capture(resnet_cbam: nn.Module) -> None:
    x = torch.randn(1, 3, 64, 80)
    resnet_cbam.eval()
    with torch.no_grad():
        plain = resnet_cbam(x)
        with capture(resnet_cbam) as rec:
            captured = resnet_cbam(x)
        again = resnet_cbam(x)
    assert len(rec) > 0
    assert torch.equal(plain, captured)
    assert torch.equal(plain, again)


@pytest.mark.parametrize("wrapper", [TupleOut, DictOut])
def test_models_returning_tuples_or_dicts(wrapper: type[nn.Module]) -> None:
    model = wrapper().eval()
    x = torch.randn(1, 8, 6, 7)
    plain = model(x)
    with capture(model) as rec:
        out = model(x)
    assert [m.label for m in rec] == ["channel", "spatial"]
    if isinstance(plain, dict):
        assert list(out) == ["out"] and torch.equal(out["out"], plain["out"])
    else:
        assert torch.equal(out[0], plain[0]) and torch.equal(out[1], plain[1])
    _assert_unhooked(model)


# ----------------------------------------------------------------------------------------- cleanup and modes


def test_hooks_removed_after_normal_exit_and_after_exception(resnet_cbam: nn.Module) -> None:
    x = torch.randn(1, 3, 32, 32)
    with capture(resnet_cbam):
        assert all(tap._forward_hooks for tap in _taps(resnet_cbam))
        resnet_cbam(x)
    _assert_unhooked(resnet_cbam)

    class Boom(Exception):
        pass

    with pytest.raises(Boom), capture(resnet_cbam):
        resnet_cbam(x)
        raise Boom
    _assert_unhooked(resnet_cbam)


def test_nested_and_repeated_captures_record_independently() -> None:
    model = CalledTwice().eval()
    x = torch.randn(1, 16, 8, 8)
    with capture(model) as outer:
        model(x)
        with capture(model, kinds=["spatial"]) as inner:
            model(x)
        model(x)
    assert len(outer) == 12
    assert [m.call for m in outer.of_kind("spatial")] == [0, 1, 2, 3, 4, 5]
    assert [(m.label, m.call) for m in inner] == [("spatial", 0), ("spatial", 1)]
    assert torch.equal(inner[0].tensor, outer.of_kind("spatial")[2].tensor)
    _assert_unhooked(model)

    with capture(model) as first:
        model(x)
    with capture(model) as second:
        model(x)
    assert [m.call for m in first] == [m.call for m in second] == [0, 0, 1, 1]
    for a, b in zip(first, second, strict=True):
        assert a is not b and torch.equal(a.tensor, b.tensor)


def test_modes_restored_per_module(resnet_cbam: nn.Module) -> None:
    before = _mixed_mode(resnet_cbam)
    with capture(resnet_cbam):
        assert not any(m.training for m in resnet_cbam.modules())
    assert _modes(resnet_cbam) == before

    with pytest.raises(ValueError, match="inside"), capture(resnet_cbam):
        raise ValueError("raised inside the with-block")
    assert _modes(resnet_cbam) == before

    with capture(resnet_cbam, eval_mode=False):
        assert _modes(resnet_cbam) == before
    assert _modes(resnet_cbam) == before
    resnet_cbam.eval()


# ------------------------------------------------------------------------------------------------- filters


def test_layers_filter(resnet_cbam: nn.Module) -> None:
    x = torch.randn(1, 3, 32, 32)
    with capture(resnet_cbam, layers=["layer3"]) as stage, capture(resnet_cbam, layers=["layer3.1.attn"]) as one:
        resnet_cbam(x)
    assert stage.layers() == ["layer3.0.attn", "layer3.1.attn"]
    assert one.layers() == ["layer3.1.attn"]
    assert len(one) == 2


def test_layers_filter_matches_whole_path_components() -> None:
    model = nn.ModuleDict({"layer1": create_block("se", 8), "layer10": create_block("se", 8)})
    with capture(model, layers=["layer1"]) as rec:
        for block in model.values():
            block(torch.randn(1, 8, 4, 4))
    assert rec.layers() == ["layer1"]


def test_kinds_filter(resnet_cbam: nn.Module) -> None:
    with capture(resnet_cbam, kinds=["spatial"]) as rec:
        resnet_cbam(torch.randn(1, 3, 32, 32))
    assert len(rec) == len(resnet_cbam.attnviz_blocks)
    assert {m.kind for m in rec} == {"spatial"}
    with capture(resnet_cbam, kinds=["matrix"]) as none:
        resnet_cbam(torch.randn(1, 3, 32, 32))
    assert len(none) == 0


# ----------------------------------------------------------------------------------------- matrices, budget


def _expected_token(fx: float, fy: float, grid: tuple[int, int]) -> int:
    h, w = grid
    return int(fy * h) * w + int(fx * w)


def test_query_rows_and_heads(resnet_mhsa: nn.Module) -> None:
    x = torch.randn(1, 3, 64, 96)
    points = [(0.1, 0.2), (0.9, 0.5)]
    with torch.no_grad():
        with capture(resnet_mhsa) as full:
            resnet_mhsa(x)
        with capture(resnet_mhsa, queries=points) as rows:
            resnet_mhsa(x)
        with capture(resnet_mhsa, heads=[1]) as head:
            resnet_mhsa(x)
    assert [m.layer for m in full] == list(resnet_mhsa.attnviz_blocks)
    grids = {m.layer: m.grid for m in full}
    assert grids["layer3.0.attn"] == (64 // 16, 96 // 16)
    assert grids["layer4.0.attn"] == (64 // 32, 96 // 32)
    for whole, part, one_head in zip(full, rows, head, strict=True):
        h, w = whole.grid
        assert whole.shape == (1, 4, h * w, h * w)
        expected = [_expected_token(fx, fy, whole.grid) for fx, fy in points]
        assert len(set(expected)) == 2
        assert part.queries == expected
        assert part.shape == (1, 4, 2, h * w)
        assert torch.equal(part.tensor, whole.tensor[:, :, expected])
        assert one_head.heads == [1]
        assert torch.equal(one_head.tensor, whole.tensor[:, 1:2])
    # Spot-check the arithmetic by hand on the 4 x 6 grid: (0.9, 0.5) is row 2, column 5.
    assert rows[0].queries == [0, 2 * 6 + 5]


def test_heads_that_do_not_exist() -> None:
    block = create_block("mhsa", 16, heads=4).eval()
    x = torch.randn(1, 16, 3, 3)
    with capture(block, heads=[2]) as rec:
        block(x)
    assert rec[0].heads == [2] and rec[0].shape == (1, 1, 9, 9)
    for heads in ([9], [-1], [2, 9]):  # a head that is not there is refused, never dropped in silence
        with pytest.raises(UsageError, match="4 heads") as info, capture(block, heads=heads):
            block(x)
        assert "0 to 3" in (info.value.hint or "")
    _assert_unhooked(block)


def test_matrix_over_budget_is_refused_and_cleanup_still_happens(resnet_mhsa: nn.Module) -> None:
    before = _mixed_mode(resnet_mhsa)
    x = torch.randn(1, 3, 64, 96)
    full_bytes = 4 * (4 * 6) ** 2 * 4  # heads * N^2 * float32 at layer3
    with pytest.raises(CaptureError) as info, capture(resnet_mhsa, max_bytes=full_bytes - 1):
        resnet_mhsa(x)
    err = info.value
    assert "layer3.0.attn" in err.message and "budget" in err.message
    assert "quer" in str(err) and "queries=" in (err.hint or "")
    _assert_unhooked(resnet_mhsa)
    assert _modes(resnet_mhsa) == before

    # The same budget holds query rows, because they are selected before the size check.
    with capture(resnet_mhsa, max_bytes=full_bytes - 1, queries=[(0.5, 0.5)]) as rec:
        resnet_mhsa(x)
    assert len(rec) == len(resnet_mhsa.attnviz_blocks)
    assert all(m.shape[2] == 1 for m in rec)
    assert _modes(resnet_mhsa) == before
    resnet_mhsa.eval()


# ------------------------------------------------------------------------------------------------ reductions


def _one_map(block_name: str, x: torch.Tensor, label: str) -> tuple[AttentionMap, ...]:
    block = create_block(block_name, x.shape[1]).eval()
    with capture(block) as rec:
        block(x)
    return tuple(m for m in rec if m.label == label)


def test_plane_of_a_triplet_cw_map_is_a_width_strip() -> None:
    x = torch.randn(2, 8, 5, 7)
    (cw,) = _one_map("triplet", x, "cw")
    assert cw.axes == ("batch", "channel", "width") and cw.shape == (2, 8, 7)
    strip = plane(cw)
    assert strip.shape == (2, 1, 7)
    np.testing.assert_allclose(strip[:, 0], cw.tensor.mean(dim=1).numpy(), rtol=1e-6)


def test_channel_vector_of_a_gam_gate_is_its_spatial_mean() -> None:
    x = torch.randn(2, 12, 5, 6)
    (gate,) = _one_map("gam", x, "channel")
    assert gate.axes == ("batch", "channel", "height", "width")
    vector = channel_vector(gate)
    assert vector.shape == (2, 12)
    np.testing.assert_allclose(vector, gate.tensor.mean(dim=(2, 3)).numpy(), rtol=1e-6)


def test_coordinate_outer_is_the_channel_mean_of_the_outer_product() -> None:
    x = torch.randn(2, 16, 5, 7)
    (a_h,) = _one_map("coord", x, "h")
    (a_w,) = _one_map("coord", x, "w")
    b, c, h = a_h.shape
    w = a_w.shape[2]
    expected = np.zeros((b, h, w))
    gh, gw = a_h.tensor.double().numpy(), a_w.tensor.double().numpy()
    for i in range(h):
        for j in range(w):
            expected[:, i, j] = (gh[:, :, i] * gw[:, :, j]).sum(axis=1) / c
    combined = coordinate_outer(a_h, a_w)
    assert combined.shape == (b, h, w)
    np.testing.assert_allclose(combined, expected, rtol=1e-5)


def _matrix_map(tensor: torch.Tensor, grid: tuple[int, int], queries: list[int] | None = None) -> AttentionMap:
    return AttentionMap(
        layer="attn",
        tap="attn.tap",
        label="matrix",
        call=0,
        kind="matrix",
        axes=("batch", "head", "query", "key"),
        norm="softmax",
        over=("key",),
        tensor=tensor,
        tokens="grid",
        grid=grid,
        queries=queries,
    )


def test_query_plane_reshapes_a_row_to_the_grid() -> None:
    h, w = 3, 4
    n = h * w
    matrix = torch.zeros(1, 2, n, n)
    matrix[0, 0, 5, 2 * w + 3] = 1.0  # query 5, head 0 looks at row 2, column 3
    matrix[0, 1, 5, 1 * w + 0] = 1.0  # head 1 looks at row 1, column 0
    out = query_plane(_matrix_map(matrix, (h, w)), 5)
    assert out.shape == (1, 2, h, w)
    assert out[0, 0, 2, 3] == 1 and out[0, 0].sum() == 1
    assert out[0, 1, 1, 0] == 1 and out[0, 1].sum() == 1

    # With query rows kept: row k of the tensor holds token queries[k].
    kept = matrix[:, :, [7, 5]]
    out = query_plane(_matrix_map(kept, (h, w), queries=[7, 5]), 5)
    assert out[0, 0, 2, 3] == 1 and out[0, 0].sum() == 1
    with pytest.raises(ValueError, match="not captured"):
        query_plane(_matrix_map(kept, (h, w), queries=[7, 5]), 6)
