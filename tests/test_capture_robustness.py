"""Capture under stress: exceptions of every kind, nesting, hundreds of repeats, in-place ops, train-mode models.

test_capture.py checks what capture records; this file checks that nothing it does outlives the with-block:
no hook, no changed train/eval mode, no memory, and that what it recorded cannot be changed afterwards.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import pytest
import torch
from torch import nn

from attnviz.blocks.base import Tap, create_block
from attnviz.capture import Recording, capture
from attnviz.errors import UsageError

STATM = Path("/proc/self/statm")
REPEATS = 200
LEAK_TOLERANCE = 20 * 2**20  # bytes; one forward below records about 1.5 MB, so a leak grows RSS by ~300 MB


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """One intra-op thread: the models are tiny, and extra threads only add noise on a shared CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


class Boom(Exception):
    """Raised on purpose inside a with-block."""


class FailsHalfway(nn.Module):
    """Runs its first block (whose taps fire), then raises before the second."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.first = create_block("cbam", 8)
        self.second = create_block("se", 8)
        self.error = error

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first(x)
        raise self.error


class ReLUOnItsMap(nn.Module):
    """A block whose tapped map is then changed in place: an in-place ReLU on the same storage, then a scale."""

    def __init__(self) -> None:
        super().__init__()
        self.tap = Tap("spatial", ("batch", "height", "width"), norm="none")
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = self.tap(torch.tanh(x.mean(dim=1)))  # about half of it negative
        self.relu(centred)
        centred.mul_(3)
        return x * centred[:, None]


def small_model() -> nn.Sequential:
    """Conv, BN and dropout around three different blocks: channel, spatial, coordinate and matrix taps."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(inplace=True),
        create_block("cbam", 16),
        nn.Dropout(0.5),
        create_block("coord", 16),
        nn.ReLU(inplace=True),
        create_block("mhsa", 16),
    )


def hooks(model: nn.Module) -> int:
    """Every forward hook, pre-hook and kwargs flag on every module of `model`."""
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._forward_hooks_with_kwargs) for m in model.modules()
    )


def modes(model: nn.Module) -> dict[str, bool]:
    return {name: m.training for name, m in model.named_modules()}


def mixed_modes(model: nn.Module) -> dict[str, bool]:
    """Put `model` in train mode with some submodules in eval mode, and return that state."""
    model.train()
    model[1].eval()
    model[5].eval()
    model[5].tap_h.train()
    state = modes(model)
    assert len(set(state.values())) == 2
    return state


def rss() -> int:
    """Resident set size of this process now, in bytes."""
    return int(STATM.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ------------------------------------------------------------------------------------------------ exceptions


@pytest.mark.parametrize(
    "error",
    [Boom("inside the model"), KeyboardInterrupt(), RuntimeError("out of memory"), GeneratorExit()],
    ids=["exception", "KeyboardInterrupt", "RuntimeError", "GeneratorExit"],
)
def test_exception_inside_the_forward_pass_leaves_no_hook_and_restores_modes(error: BaseException) -> None:
    model = FailsHalfway(error).train()
    model.second.eval()
    before = modes(model)
    with pytest.raises(type(error)), capture(model) as rec:
        model(torch.randn(2, 8, 5, 6))
    assert [m.layer for m in rec] == ["first", "first"]  # what ran before the error was recorded
    assert hooks(model) == 0
    assert modes(model) == before


def test_error_raised_by_capture_itself_cleans_up() -> None:
    model = small_model()
    before = mixed_modes(model)
    with pytest.raises(UsageError, match="heads"), capture(model, heads=[99]):
        model(torch.randn(1, 3, 8, 8))
    assert hooks(model) == 0
    assert modes(model) == before


def test_exception_in_an_inner_capture_leaves_the_outer_one_working() -> None:
    model = small_model()
    before = mixed_modes(model)
    x = torch.randn(1, 3, 8, 8)
    with capture(model) as outer:
        model(x)
        hooked = hooks(model)
        with pytest.raises(Boom), capture(model, kinds=["spatial"]) as inner:
            model(x)
            assert hooks(model) > hooked
            raise Boom
        assert hooks(model) == hooked
        assert not any(modes(model).values())  # still in eval mode: the outer capture owns the modes
        model(x)
    assert len(inner) == 1
    assert len(outer) == 3 * len(outer.taps)  # every tap, in each of the three passes
    assert hooks(model) == 0
    assert modes(model) == before


# --------------------------------------------------------------------------------------------------- repeats


def test_repeated_and_nested_captures_agree() -> None:
    model = small_model()
    x = torch.randn(2, 3, 12, 10)
    recordings: list[Recording] = []
    for _ in range(3):
        with capture(model) as outer, capture(model) as inner:
            model(x)
        recordings += [outer, inner]
    first = recordings[0]
    assert len(first) == len(first.taps) > 0
    for other in recordings[1:]:
        assert [m.name for m in other] == [m.name for m in first]
        assert all(torch.equal(a.tensor, b.tensor) for a, b in zip(first, other, strict=True))
    assert hooks(model) == 0


@pytest.mark.skipif(not STATM.exists(), reason="reads resident memory from /proc/self/statm (Linux)")
def test_many_captures_leave_resident_memory_flat() -> None:
    model = nn.Sequential(create_block("simam", 32), create_block("gam", 32)).eval()
    x = torch.randn(1, 32, 64, 64)

    def one_capture() -> int:
        with torch.inference_mode(), capture(model) as rec:
            model(x)
        return sum(m.tensor.numel() * m.tensor.element_size() for m in rec)

    recorded = sum(one_capture() for _ in range(20))  # warm-up: allocator pools, lazy init
    assert recorded / 20 > LEAK_TOLERANCE / 20  # a leak of every recording would exceed the tolerance
    gc.collect()
    start = rss()
    for _ in range(REPEATS):
        one_capture()
    gc.collect()
    growth = rss() - start
    assert growth < LEAK_TOLERANCE, f"resident memory grew by {growth / 2**20:.1f} MB over {REPEATS} captures"
    assert hooks(model) == 0


# ------------------------------------------------------------------------------------------ what is recorded


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize(
    "grad_mode", [nullcontext, torch.no_grad, torch.inference_mode], ids=["grad", "no_grad", "inference_mode"]
)
def test_in_place_relu_after_the_tap_does_not_change_the_captured_map(
    dtype: torch.dtype, grad_mode: Callable[[], AbstractContextManager[object]]
) -> None:
    model = ReLUOnItsMap()
    x = torch.randn(2, 4, 6, 7)
    expected = torch.tanh(x.mean(dim=1))
    assert (expected < 0).any()
    with grad_mode(), capture(model, dtype=dtype) as rec:
        out = model(x)
    assert torch.equal(out, x * (torch.relu(expected) * 3)[:, None])  # the model did change its map in place
    (m,) = rec
    torch.testing.assert_close(m.tensor.float(), expected, rtol=0, atol=0 if dtype == torch.float32 else 1e-3)
    with grad_mode():
        out.mul_(0)  # nor can later work on the outputs reach it
    torch.testing.assert_close(m.tensor.float(), expected, rtol=0, atol=0 if dtype == torch.float32 else 1e-3)


def test_in_place_relu_in_a_backbone_does_not_change_captured_maps() -> None:
    """ResNet's BasicBlock applies ReLU(inplace=True) to the sum the block's output flows into."""
    from attnviz.models.backbones import build_model

    model = build_model("resnet18", "simam", stages=(1,)).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad(), capture(model) as rec:
        model(x)
    from tests.tap_utils import record_taps

    with torch.no_grad(), record_taps(model) as fired:
        model(x)
    assert [m.tap for m in rec] == [f.path for f in fired]
    assert all(torch.equal(m.tensor, f.value) for m, f in zip(rec, fired, strict=True))


def test_train_mode_model_gives_identical_maps_and_keeps_its_statistics() -> None:
    """Dropout and BatchNorm would make two train-mode passes differ; capture runs them in eval mode."""
    model = small_model()
    before = mixed_modes(model)
    statistics = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 12, 10)
    with capture(model) as first:
        out_first = model(x)
    with capture(model) as second:
        out_second = model(x)
    assert modes(model) == before
    assert torch.equal(out_first, out_second)
    assert [m.name for m in first] == [m.name for m in second]
    assert all(torch.equal(a.tensor, b.tensor) for a, b in zip(first, second, strict=True))
    assert all(torch.equal(v, statistics[k]) for k, v in model.state_dict().items())  # BN running stats untouched


def test_eval_mode_false_leaves_modes_alone_even_after_an_exception() -> None:
    model = small_model()
    before = mixed_modes(model)
    with pytest.raises(Boom), capture(model, eval_mode=False):
        assert modes(model) == before
        raise Boom
    assert modes(model) == before
    assert hooks(model) == 0
