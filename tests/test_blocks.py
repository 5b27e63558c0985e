"""Tests every registered block through the registry, so a new block is tested without a new test."""

from __future__ import annotations

import inspect

import pytest
import torch

from attnviz.blocks.base import Tap, block_class, create_block, load_all_blocks, odd_kernel_for_channels
from attnviz.blocks.catalog import CATALOG, block_names
from attnviz.errors import UnknownNameError
from tests.tap_utils import flatten_outputs, record_taps

ALL = block_names()
FEATURE_MAP = [n for n in ALL if CATALOG[n].inputs == "feature_map"]
B, C, H, W = 2, 64, 23, 37  # non-square on purpose


def _expected_size(tap: Tap, axis: str, channels: int, height: int, width: int) -> int | None:
    """Size an axis must have for a feature-map block, or None where the block decides (heads, branches)."""
    if axis in ("height", "width"):
        return {"height": height, "width": width}[axis]
    if axis in ("query", "key"):
        if tap.tokens == "grid":
            return height * width
        if tap.tokens == "channel":
            return channels
        if tap.tokens == "row_col":
            return height + width if axis == "key" else None
    return None


def test_registry_matches_catalog() -> None:
    registry = load_all_blocks()
    assert list(registry) == list(CATALOG)
    for name, cls in registry.items():
        assert cls.block_name == name
        first = next(iter(inspect.signature(cls).parameters))
        assert first == "channels", f"{name}: constructor must take channels first, takes {first!r}"


def test_unknown_block_lists_valid_names() -> None:
    with pytest.raises(UnknownNameError) as info:
        create_block("sqeeze", 64)
    assert "sqeeze" in str(info.value)
    for name in ALL:
        assert name in str(info.value)


@pytest.mark.parametrize("name", FEATURE_MAP)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_feature_map_blocks_keep_shape_on_non_square_input(name: str, train: bool) -> None:
    block = create_block(name, C).train(train)
    x = torch.randn(B, C, H, W)
    out = block(x)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ALL)
def test_every_parameter_gets_a_gradient(name: str) -> None:
    cls = block_class(name)
    block = create_block(name, 16).train()
    with torch.no_grad():
        # Zero-initialised gains (DANet's alpha, CCNet's gamma, BN biases...) cut the gradient to what they
        # gate at initialisation; open them so every path is exercised.
        for param in block.parameters():
            if not param.any():
                param.fill_(0.5)
    inputs = cls.example_inputs(2, 16, 9, 11)
    if not list(block.parameters()):  # parameter-free (SimAM): the input must receive the gradient instead
        inputs[0].requires_grad_()
    outputs = flatten_outputs(block(*inputs))
    loss = sum((o * torch.randn_like(o)).sum() for o in outputs if o.is_floating_point())
    loss.backward()
    if not list(block.parameters()):
        assert inputs[0].grad is not None and inputs[0].grad.abs().sum() > 0
    for pname, param in block.named_parameters():
        assert param.grad is not None, f"{name}.{pname} got no gradient"
        assert torch.isfinite(param.grad).all(), f"{name}.{pname} has a non-finite gradient"
        assert param.grad.abs().sum() > 0, f"{name}.{pname} got an all-zero gradient"


@pytest.mark.parametrize("name", ALL)
def test_taps_fire_once_with_declared_kind_shape_and_range(name: str) -> None:
    cls = block_class(name)
    info = CATALOG[name]
    block = create_block(name, C).eval()
    inputs = cls.example_inputs(B, C, H, W)
    with record_taps(block) as fired, torch.no_grad():
        block(*inputs)
    assert [f.tap.kind for f in fired] == list(info.kinds)
    assert len({id(f.tap) for f in fired}) == len(fired), "a tap fired more than once in one forward"
    for f in fired:
        value, tap = f.value, f.tap
        assert value.shape[0] == B
        assert torch.isfinite(value).all()
        if info.inputs == "feature_map":
            for axis, size in zip(tap.axes, value.shape, strict=True):
                expected = _expected_size(tap, axis, C, H, W)
                assert expected is None or size == expected, f"{f.path}: axis {axis} is {size}, not {expected}"
                if axis == "channel":
                    assert C % size == 0, f"{f.path}: channel axis {size} does not divide {C}"
        if tap.tokens == "grid":
            assert f.grid is not None and f.grid[0] * f.grid[1] == value.shape[tap.axes.index("query")]
        if tap.norm == "sigmoid":
            assert value.min() >= 0 and value.max() <= 1
        if tap.norm in ("softmax", "sum_to_one"):
            dims = tuple(tap.axes.index(a) for a in tap.over)
            assert value.min() >= 0
            torch.testing.assert_close(value.sum(dim=dims), torch.ones_like(value.sum(dim=dims)))


@pytest.mark.parametrize("name", FEATURE_MAP)
def test_fewer_channels_than_the_reduction_ratio(name: str) -> None:
    cls = block_class(name)
    options = {"reduction": 16} if "reduction" in inspect.signature(cls).parameters else {}
    block = create_block(name, 8, **options).train()
    x = torch.randn(2, 8, 7, 5)
    assert block(x).shape == x.shape


@pytest.mark.parametrize(("channels", "kernel"), [(64, 3), (256, 5), (512, 5)])
def test_eca_adaptive_kernel(channels: int, kernel: int) -> None:
    assert odd_kernel_for_channels(channels, gamma=2, b=1) == kernel
    eca = create_block("eca", channels)
    convs = [m for m in eca.modules() if isinstance(m, torch.nn.Conv1d)]
    assert [c.kernel_size[0] for c in convs] == [kernel]
