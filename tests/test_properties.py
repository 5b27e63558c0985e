"""Property tests over every registered block: any channel count, any small map, any batch, odd inputs.

For every block in the catalogue, hypothesis draws the channels (1..512, often fewer than the reduction ratio),
the reduction ratio, H and W (1..64), the batch (1..4) and the input: random (at scale 1 or 1000), one constant
(anything in [-1e3, 1e3]) or all zeros. The block must not raise, keep the shape, emit no NaN or infinity, and
every tap must stay in the range its norm promises (sigmoid in [0, 1]; softmax and sum_to_one non-negative and
summing to 1 over `tap.over`).

Blocks run in eval mode: in train mode BatchNorm refuses a batch with one value per channel (batch 1 and a 1x1
map, or a pooled B x C x 1 x 1 map at batch 1), which is PyTorch's rule for estimating batch statistics, not a
property of the blocks. The work per example is bounded (C * H * W * B elements, and for blocks with a matrix
over all positions (H * W)^2 * B entries) so the whole file runs in well under a minute on two cores.
"""

from __future__ import annotations

import inspect
from functools import lru_cache
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnviz.blocks.base import AttentionBlock, block_class, create_block
from attnviz.blocks.catalog import CATALOG, block_names
from tests.tap_utils import Fired, flatten_outputs, record_taps

CHANNELS = [1, 2, 3, 5, 7, 8, 12, 15, 16, 17, 31, 32, 64, 96, 128, 255, 256, 512]
REDUCTIONS = [2, 16, 64]
MAX_SIDE = 64
MAX_ELEMENTS = 2**15  # C * H * W * B of one example
MAX_MATRIX = 2**18  # (H * W)^2 * B for blocks whose attention runs over all positions
FULL_MATRIX_BLOCKS = {"mhsa", "eca_mhsa", "danet", "additive"}

PROPERTY_SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


@lru_cache(maxsize=64)
def built(name: str, channels: int, reduction: int) -> AttentionBlock:
    """The block in eval mode; cached, since eval-mode forward passes under no_grad change nothing in it."""
    takes_reduction = "reduction" in inspect.signature(block_class(name)).parameters
    block = create_block(name, channels, **({"reduction": reduction} if takes_reduction else {}))
    return block.eval()


@st.composite
def shapes(draw: st.DrawFn, name: str) -> tuple[int, int, int, int]:
    """(batch, channels, height, width) within the work bounds for `name`."""
    batch = draw(st.integers(1, 4))
    channels = draw(st.sampled_from(CHANNELS))
    per_row = MAX_ELEMENTS // batch // channels
    height = draw(st.integers(1, max(1, min(MAX_SIDE, per_row))))
    width_limit = max(1, min(MAX_SIDE, per_row // height))
    if name in FULL_MATRIX_BLOCKS:
        positions = int((MAX_MATRIX // batch) ** 0.5)
        width_limit = max(1, min(width_limit, positions // height))
    width = draw(st.integers(1, width_limit))
    return batch, channels, height, width


FILLS = st.one_of(
    st.tuples(st.just("random"), st.sampled_from([1.0, 1e3])),
    st.tuples(st.just("constant"), st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)),
    st.just(("constant", 0.0)),
)


def _filled(value: Any, fill: tuple[str, float]) -> Any:
    """`example_inputs` with every tensor scaled (random) or replaced by one value (constant)."""
    if isinstance(value, torch.Tensor):
        kind, number = fill
        return value * number if kind == "random" else torch.full_like(value, number)
    if isinstance(value, list | tuple):
        return type(value)(_filled(v, fill) for v in value)
    return value


def _expected_shapes(name: str, inputs: tuple[Any, ...]) -> list[torch.Size]:
    """Shapes of the leading outputs: the input's for maps, the chosen level's for ASFF, C3-C5's for FPN."""
    kind = CATALOG[name].inputs
    if kind == "pyramid":
        levels = [f.shape for f in inputs[0]]
        return levels[:1] if name == "asff" else levels
    if kind == "sequence":  # additive attention: context (B, D_enc) and weights (B, S)
        hidden, encoder = inputs
        return [torch.Size((hidden.shape[0], encoder.shape[2])), torch.Size(encoder.shape[:2])]
    return [inputs[0].shape]


def _check_tap(fired: Fired) -> None:
    value, tap = fired.value, fired.tap
    assert torch.isfinite(value).all(), f"{fired.path} emitted NaN or infinity"
    if tap.norm == "sigmoid":
        assert value.min() >= 0 and value.max() <= 1, f"{fired.path}: {value.min()}..{value.max()} not in [0, 1]"
    if tap.norm in ("softmax", "sum_to_one"):
        assert value.min() >= 0, f"{fired.path} has negative weights"
        sums = value.sum(dim=tuple(tap.axes.index(axis) for axis in tap.over))
        torch.testing.assert_close(sums, torch.ones_like(sums), rtol=0, atol=1e-4, msg=f"{fired.path} sums")


@pytest.mark.parametrize("name", block_names())
@PROPERTY_SETTINGS
@given(data=st.data())
def test_block_properties(name: str, data: st.DataObject) -> None:
    batch, channels, height, width = data.draw(shapes(name), label="batch, channels, height, width")
    reduction = data.draw(st.sampled_from(REDUCTIONS), label="reduction")
    fill = data.draw(FILLS, label="fill")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    block = built(name, channels, reduction)
    inputs = _filled(block.example_inputs(batch, channels, height, width, seed=seed), fill)
    with record_taps(block) as fired, torch.no_grad():
        outputs = flatten_outputs(block(*inputs))
    expected = _expected_shapes(name, inputs)
    assert [o.shape for o in outputs[: len(expected)]] == expected
    for output in outputs:
        assert torch.isfinite(output).all(), f"{name} output has NaN or infinity"
    assert [f.tap.kind for f in fired] == list(CATALOG[name].kinds)
    for f in fired:
        assert f.value.shape[0] == batch
        _check_tap(f)


@pytest.mark.parametrize("name", [n for n in block_names() if CATALOG[n].inputs == "feature_map"])
@pytest.mark.parametrize(("height", "width"), [(1, 1), (1, 64), (64, 1)])
def test_extreme_shapes_with_fewer_channels_than_the_reduction(name: str, height: int, width: int) -> None:
    """The corners hypothesis may not reach in a few examples: one pixel, one row, one column, C = 1 and 3."""
    for channels in (1, 3):
        block = built(name, channels, 16)
        for x in (torch.zeros(1, channels, height, width), torch.full((1, channels, height, width), 1e3)):
            with record_taps(block) as fired, torch.no_grad():
                y = block(x)
            assert y.shape == x.shape and torch.isfinite(y).all()
            for f in fired:
                _check_tap(f)
