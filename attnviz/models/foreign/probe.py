"""The probe: one dummy forward that records, per module, its call order, call count and tensor shapes, and every
call of a gate candidate (see `functional.GateWatch`).

Recognition by structure reads a module's gate from these shapes, and every recognised module's stage comes from
the output stride it works at.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from attnviz.capture import evaluating
from attnviz.errors import AttnvizError, option
from attnviz.images import Size, input_dims
from attnviz.models.foreign.functional import GateCall, GateWatch, is_sigmoid


@dataclass
class Probe:
    """What one dummy forward saw: per module path, call order, call count and first-call tensor shapes.

    Attributes:
        size: The dummy input: a side, or (width, height).
        order: Module path -> position of its first call.
        calls: Module path -> how often it was called.
        inputs: Module path -> shape of the first tensor its first call received.
        outputs: Module path -> shape of the tensor its first call returned.
        result: Shape of the model's output, when that is a tensor.
        gates: Every call of a sigmoid-like module and every functional sigmoid or softmax a module's first call
            made in its own forward, in call order.
        windows: Module path -> (start, end) of its first call, in `GateCall.tick`s: a gate call with start < tick
            <= end ran inside it.
    """

    size: Size
    order: dict[str, int] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    inputs: dict[str, tuple[int, ...]] = field(default_factory=dict)
    outputs: dict[str, tuple[int, ...]] = field(default_factory=dict)
    result: tuple[int, ...] | None = None
    gates: list[GateCall] = field(default_factory=list)
    windows: dict[str, tuple[int, int]] = field(default_factory=dict)


def run_probe(model: nn.Module, size: Size) -> Probe:
    """Run one zero image of `size` through `model` in eval mode, recording every module's shapes.

    The model's modules are back in the mode they were in when it returns.

    Raises:
        AttnvizError: the model fails on the input.
    """
    probe = Probe(size)
    width, height = input_dims(size)
    handles = []
    example = _zero_image(model, size)
    watch = GateWatch()
    try:
        for path, module in model.named_modules():
            handles.append(module.register_forward_pre_hook(_before(probe, watch, path)))
            handles.append(module.register_forward_hook(_after(probe, watch, path, is_sigmoid(module))))
            handles.append(module.register_forward_hook(_leave(probe, watch, path), always_call=True))
        with torch.no_grad(), watch, evaluating(model):
            output = model(example)
        if isinstance(output, torch.Tensor):
            probe.result = tuple(output.shape)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise AttnvizError(
            f"the model failed on a 1x3x{height}x{width} input ({type(exc).__name__}: {first})",
            f"give {option('size')} the input size the model was made for",
        ) from exc
    finally:
        for handle in handles:
            handle.remove()
        watch.forget()
    probe.gates = watch.gates
    return probe


def _zero_image(model: nn.Module, size: Size) -> torch.Tensor:
    """A zero image of `size` on the device of `model`'s parameters, in their dtype when floating."""
    parameter = next(model.parameters(), None)
    width, height = input_dims(size)
    return torch.zeros(
        1,
        3,
        height,
        width,
        device=parameter.device if parameter is not None else None,
        dtype=parameter.dtype if parameter is not None and parameter.is_floating_point() else None,
    )


def _before(probe: Probe, watch: GateWatch, path: str) -> Callable[..., None]:
    """A forward pre-hook recording the call order of the module at `path` and its first input's shape."""

    def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        probe.order.setdefault(path, len(probe.order))
        if args and isinstance(args[0], torch.Tensor) and path not in probe.inputs:
            probe.inputs[path] = tuple(args[0].shape)
        watch.enter(path, module)
        if path not in probe.windows:
            probe.windows[path] = (watch.tick, watch.tick)

    return hook


def _after(probe: Probe, watch: GateWatch, path: str, gate: bool) -> Callable[..., None]:
    """A forward hook counting the calls of the module at `path`, recording its first output's shape, and, for a
    sigmoid-like module (`gate`), handing every output to the watch."""

    def hook(_module: nn.Module, _args: tuple[Any, ...], output: Any) -> None:
        index = probe.calls.get(path, 0)
        probe.calls[path] = index + 1
        if isinstance(output, torch.Tensor) and path not in probe.outputs:
            probe.outputs[path] = tuple(output.shape)
        if gate:
            watch.module_output(path, index, output)

    return hook


def _leave(probe: Probe, watch: GateWatch, path: str) -> Callable[..., None]:
    """A forward hook, run also after an exception, that ends the call in the watch and the first call's window."""

    first = True

    def hook(module: nn.Module, _args: tuple[Any, ...], _output: Any) -> None:
        nonlocal first
        watch.leave(module)
        if first and path in probe.windows:
            probe.windows[path] = (probe.windows[path][0], watch.tick)
            first = False

    return hook


def stage_of(probe: Probe, path: str) -> int | None:
    """Stage 1-4 from the output stride at which the module works (4 -> 1 ... 32 -> 4; finer is 1, coarser 4).

    Returns:
        The stage, or None when the probe saw no 4-D tensor of the module.
    """
    shape = probe.outputs.get(path)
    if shape is None or len(shape) != 4 or shape[-2:] == (1, 1):
        shape = probe.inputs.get(path)
    if shape is None or len(shape) != 4 or shape[-2] < 1:
        return None
    stride = input_dims(probe.size)[1] / shape[-2]
    return min(4, max(1, round(math.log2(max(stride, 1.0))) - 1))
