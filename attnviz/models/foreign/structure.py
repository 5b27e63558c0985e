"""Recognition by structure: blog-style gates, found by their shapes in the probe's dummy forward.

A gate candidate is the output of a sigmoid-like module, or a functional sigmoid or softmax that a module computes
in its own forward (`x * torch.sigmoid(self.fc(self.pool(x)))`, see `functional`). Each call is judged on its own,
by its shape against the features it scales: the 4-D features the probe saw it multiply, else the input of the
module it lives in (for a module gate, the nearest enclosing module with a 4-D input; for a functional one, the
module whose forward made the call):

- a channel gate has one axis of the features' C channels and every other axis 1: (B, C, 1, 1), (B, 1, C), (B, C);
- a spatial gate is (B, 1, H, W) over the features' H x W; a softmax is a spatial gate when it normalises the one
  axis of length H*W of its output, over the module's input H x W (global-context pooling weights);
- a coordinate strip is (B, C, H, 1) or (B, C, 1, W) over the features (Coordinate Attention's a_h and a_w).

Evidence asked beyond the shape: a functional sigmoid must be seen multiplying features (else it may be a
classifier's output); a spatial gate never seen multiplying features needs a conv with one output channel in its
module (CBAM's spatial half has one). A sigmoid module whose calls are gates of different kinds (PolarizedSelf-
Attention applies one nn.Sigmoid as a channel gate, then as a spatial gate) gives one tap per call.
"""

from __future__ import annotations

import math

from torch import nn

from attnviz.models.foreign.functional import SOFTMAX, GateCall, is_sigmoid
from attnviz.models.foreign.probe import Probe
from attnviz.models.foreign.taps import CHANNEL, PLANE, POSITIONS, TapSpec

CHANNEL_GATE = "channel"
SPATIAL_GATE = "spatial"
HEIGHT_GATE, WIDTH_GATE = "h", "w"
"""Coordinate Attention's strips: a gate of (B, C, H, 1) weighs rows per channel, one of (B, C, 1, W) columns."""

GateTap = tuple[int, TapSpec]
"""A tap and the tick of the gate call it was read from (a module's taps are listed in call order)."""


def ancestors(path: str) -> list[str]:
    """Enclosing module paths, nearest first, without the root."""
    parts = path.split(".")
    return [".".join(parts[:cut]) for cut in range(len(parts) - 1, 0, -1)]


def under(path: str, roots: set[str]) -> bool:
    """Whether `path` is one of `roots` or lies inside one ("" is the whole model)."""
    return any(path == root or not root or path.startswith(root + ".") for root in roots)


def _one_axis_of(shape: tuple[int, ...], length: int) -> bool:
    """Whether `shape`, batch aside, is one axis of `length` (> 1) and axes of 1."""
    rest = shape[1:]
    return length > 1 and math.prod(rest) == length and length in rest


def gate_kind(shape: tuple[int, ...], features: tuple[int, ...] | None) -> str | None:
    """The kind of a gate of `shape` over (B, C, H, W) `features` (CHANNEL_GATE, SPATIAL_GATE, HEIGHT_GATE or
    WIDTH_GATE); None for none of them."""
    if features is None or len(features) != 4 or len(shape) < 2 or shape[0] != features[0]:
        return None
    _, channels, height, width = features
    if _one_axis_of(shape, channels):
        return CHANNEL_GATE
    if len(shape) == 4 and shape[1] == 1 and shape[2:] == (height, width) and height * width > 1:
        return SPATIAL_GATE
    if len(shape) == 4 and shape[1] == channels > 1 and height > 1 and width > 1:
        if shape[2:] == (height, 1):
            return HEIGHT_GATE
        if shape[2:] == (1, width):
            return WIDTH_GATE
    return None


def _has_single_output_conv(module: nn.Module) -> bool:
    """Whether `module` holds a conv with one output channel (CBAM's spatial half has one)."""
    return any(isinstance(m, nn.Conv2d) and m.out_channels == 1 for m in module.modules())


def _spec(kind: str, source: str, call: int | None, function: str | None = None) -> TapSpec:
    """The tap of a sigmoid gate of `kind` at `source`."""
    if kind == CHANNEL_GATE:
        return TapSpec(kind, "channel", CHANNEL, source, "flat", call=call, function=function)
    if kind in (HEIGHT_GATE, WIDTH_GATE):
        axes = ("batch", "channel", "height" if kind == HEIGHT_GATE else "width")
        return TapSpec(kind, "coordinate", axes, source, "strip", call=call, function=function)
    return TapSpec(kind, "spatial", PLANE, source, "plane", call=call, function=function)


# -------------------------------------------------------------------------------------------- module gates


def _owner(path: str, probe: Probe) -> str | None:
    """The nearest module enclosing `path` whose first call received a 4-D tensor."""
    return next((p for p in ancestors(path) if len(probe.inputs.get(p, ())) == 4), None)


def _module_call_kind(gate: GateCall, owner: str, modules: dict[str, nn.Module], probe: Probe) -> str | None:
    """The kind of one call of a sigmoid module living in `owner`."""
    kind = gate_kind(gate.shape, gate.scales or probe.inputs[owner])
    if kind == SPATIAL_GATE and gate.scales is None and not _has_single_output_conv(modules[owner]):
        return None
    return kind


def _module_gate(path: str, modules: dict[str, nn.Module], probe: Probe) -> tuple[str, list[GateTap]] | None:
    """(owner path, taps) for the sigmoid module at `path`: one tap for all its calls when each call in its owner's
    first call is a gate of one kind; else one tap per call that is a gate."""
    owner = _owner(path, probe)
    calls = [g for g in probe.gates if g.path == path and g.function is None]
    if owner is None or not calls:
        return None
    start, end = probe.windows.get(owner, (0, 0))
    inside = [g for g in calls if start < g.tick <= end] or calls[:1]
    kinds = [_module_call_kind(g, owner, modules, probe) for g in inside]
    source = path[len(owner) + 1 :]
    if None not in kinds and len(set(kinds)) == 1:
        return owner, [(inside[0].tick, _spec(str(kinds[0]), source, None))]
    calls_and_kinds = enumerate(zip(inside, kinds, strict=True))
    taps = [(g.tick, _spec(kind, source, rank)) for rank, (g, kind) in calls_and_kinds if kind]
    return (owner, taps) if taps else None


# ---------------------------------------------------------------------------------------- functional gates


def _softmax_positions(gate: GateCall, modules: dict[str, nn.Module], probe: Probe) -> TapSpec | None:
    """The tap of a softmax over the H*W positions of its module's input, else None."""
    features = probe.inputs.get(gate.path, ())
    if len(features) != 4 or gate.shape[0] != features[0] or gate.dim is None:
        return None
    positions = features[2] * features[3]
    if not _one_axis_of(gate.shape, positions) or gate.dim == 0 or gate.shape[gate.dim] != positions:
        return None
    if gate.scales is None and not _has_single_output_conv(modules[gate.path]):
        return None
    over = ("height", "width")
    return TapSpec(SPATIAL_GATE, "spatial", PLANE, "", POSITIONS, "softmax", over, gate.index, function=SOFTMAX)


def _function_gate(gate: GateCall, modules: dict[str, nn.Module], probe: Probe) -> TapSpec | None:
    """The tap of one functional call, if it is a gate."""
    if gate.function == SOFTMAX:
        return _softmax_positions(gate, modules, probe)
    kind = gate_kind(gate.shape, gate.scales)  # a sigmoid must be seen scaling features
    return _spec(kind, "", gate.index, gate.function) if kind else None


# ------------------------------------------------------------------------------------------------ all gates


def by_structure(modules: dict[str, nn.Module], probe: Probe, taken: set[str]) -> dict[str, list[TapSpec]]:
    """Owner path -> taps, in call order, of the gates found by structure outside the modules in `taken`."""
    found: dict[str, list[GateTap]] = {}
    for path, module in modules.items():
        if is_sigmoid(module) and not under(path, taken):
            gate = _module_gate(path, modules, probe)
            if gate is not None and not under(gate[0], taken):
                found.setdefault(gate[0], []).extend(gate[1])
    for call in probe.gates:
        if call.function is not None and not under(call.path, taken):
            spec = _function_gate(call, modules, probe)
            if spec is not None:
                found.setdefault(call.path, []).append((call.tick, spec))
    return {owner: [spec for _, spec in sorted(taps, key=lambda t: t[0])] for owner, taps in found.items()}
