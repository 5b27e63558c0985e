"""Attention inside models attnviz did not build: torchvision, timm, and users' own modules.

`attach_taps(model)` finds the attention modules of a network and gives each one a `ForeignTap` child per attention
tensor it computes, so `capture` records them like the taps of attnviz's own blocks. Modules are recognised

- by type: torchvision's SqueezeExcitation; timm's SEModule, EffectiveSEModule, EfficientNet SqueezeExcite,
  SqueezeExciteCl, EcaModule, CecaModule, CbamModule, LightCbamModule, CoordAttn, EfficientLocalAttn,
  SimpleCoordAttn, StripAttn, GatherExcite, SelectiveKernel, GlobalContext and SplitAttn (matched by package and
  class name along the class's MRO, so subclasses count and timm is never imported to check);
- by structure, for blog-style classes, from one dummy forward: a sigmoid gate of shape (B, C) or (B, C, 1, 1) over
  the channels of the feature map its module receives (SE, CBAM's channel half), and a (B, 1, H, W) sigmoid gate in
  a module with a one-output-channel conv (CBAM's [mean, max] spatial half).
attnviz's own blocks (in a pickled attnviz model) are reported beside them. Modules whose class name looks like
attention but that nothing matched are reported as not recognised.

A ForeignTap is inert until `capture` connects it: capture then puts a forward hook on the submodule that produces
the attention (the gate activation, or the layer whose output the foreign code turns into attention with a
functional sigmoid/softmax, which the hook repeats on the same tensor) and removes it on exit. The hook returns
nothing, so outputs are bit-identical; taps have no parameters or buffers, so state dicts are unchanged.

`torchvision_model`, `timm_model` and `model_file` build or read the model a `--model` names; offline, pretrained
weights that are not cached are refused at once with a message saying which file to place where.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn

from attnviz.blocks.base import AttentionBlock, Tap
from attnviz.errors import AttnvizError, CheckpointError, UsageError
from attnviz.io.checkpoints import apply_state_dict

TAP_PREFIX = "attnviz_tap_"
CHANNEL = ("batch", "channel")
PLANE = ("batch", "height", "width")
SELECTION = ("batch", "branch", "channel")

ATTENTION_NAME = re.compile(
    r"Atten|Attn|Squeeze|Excit|Gate(?!d)|Gating|CBAM|Cbam|ECA|Eca[A-Z]|Context|Selective|SplitAt|Splat|NonLocal"
    r"|LambdaLayer|Halo|(?:^|[a-z])(?:SE|SK|BAM)(?:[A-Z_0-9]|$)"
)
"""Class names that look like attention: such a module that no adapter matches is listed as not recognised."""

TIMM_ATTN_EXAMPLES = "se, ese, eca, ceca, cbam, lcbam, coord, ela, ge, gc, gca, sk, splat"
"""Some of timm's attn_layer names (timm.layers.get_attn decides what is valid); for hints only."""


# ------------------------------------------------------------------------------------------------------ taps


def _flat(_module: nn.Module, out: torch.Tensor) -> torch.Tensor:
    """(B, C, 1, 1), (B, 1, C), (B, 1, 1, C) or (B, C) -> (B, C)."""
    return out.reshape(out.shape[0], -1)


def _plane(_module: nn.Module, out: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) -> (B, H, W)."""
    return out.reshape(out.shape[0], out.shape[-2], out.shape[-1])


def _strip(_module: nn.Module, out: torch.Tensor) -> torch.Tensor:
    """(B, C, H, 1) -> (B, C, H); (B, C, 1, W) -> (B, C, W); (B, K, C, 1, 1) -> (B, K, C)."""
    return out.flatten(2)


def _as_is(_module: nn.Module, out: torch.Tensor) -> torch.Tensor:
    return out


def _sigmoid_flat(_module: nn.Module, logits: torch.Tensor) -> torch.Tensor:
    """The functional `F.sigmoid(logits)` of timm's LightChannelAttn, as (B, C)."""
    return torch.sigmoid(logits).reshape(logits.shape[0], -1)


def _softmax_plane(_module: nn.Module, logits: torch.Tensor) -> torch.Tensor:
    """GlobalContext's functional softmax over the H*W positions of its (B, 1, H, W) logits, as (B, H, W)."""
    b, _, h, w = logits.shape
    return F.softmax(logits.reshape(b, 1, h * w), dim=-1).reshape(b, h, w)


def _radix(module: nn.Module, out: torch.Tensor) -> torch.Tensor:
    """RadixSoftmax's (B, R*C) output, radix-major as SplitAttn reads it, as (B, R, C)."""
    return out.reshape(out.shape[0], module.radix, -1)


TRANSFORMS: dict[str, Callable[[nn.Module, torch.Tensor], torch.Tensor]] = {
    "flat": _flat,
    "plane": _plane,
    "strip": _strip,
    "as_is": _as_is,
    "sigmoid_flat": _sigmoid_flat,
    "softmax_plane": _softmax_plane,
    "radix": _radix,
}
"""How a hooked output becomes the tapped tensor; by name, so a ForeignTap stays a plain picklable module."""


@dataclass(frozen=True)
class TapSpec:
    """One attention tensor of a foreign module: what it is and where to catch it.

    Attributes:
        label: Name of the tensor inside its module ("channel", "spatial", "h", "w", "selection", "context").
        kind: One of catalog.KINDS.
        axes: Axis names of the tapped tensor, batch first.
        source: Path, relative to the module, of the submodule whose output carries the attention.
        transform: Key of `TRANSFORMS`: how that output becomes the tapped tensor.
        norm: How the values were produced (see blocks.base.NORMS).
        over: Axes a softmax sums to 1 over.
        call: Tap only this call (0-based) of `source` within each call of the module; None for every call.
    """

    label: str
    kind: str
    axes: tuple[str, ...]
    source: str
    transform: str
    norm: str = "sigmoid"
    over: tuple[str, ...] = ()
    call: int | None = None


class ForeignTap(Tap):
    """A Tap attached to a foreign module, fed by a forward hook on one of its submodules while capture runs.

    Args:
        spec: What the tensor is and which submodule produces it.
    """

    def __init__(self, spec: TapSpec) -> None:
        super().__init__(spec.kind, spec.axes, norm=spec.norm, over=spec.over, label=spec.label)
        self.source = spec.source
        self.transform = spec.transform
        self.call = spec.call
        self._seen = 0

    def connect(self, owner: nn.Module) -> list[torch.utils.hooks.RemovableHandle]:
        """Hook the source submodule of `owner` (this tap's parent); capture removes the returned handles."""
        self._seen = 0
        handles = [owner.get_submodule(self.source).register_forward_hook(self._on_source)]
        if self.call is not None:
            handles.append(owner.register_forward_pre_hook(self._on_owner_call))
        return handles

    def _on_owner_call(self, _module: nn.Module, _args: tuple[Any, ...]) -> None:
        self._seen = 0

    def _on_source(self, module: nn.Module, _args: tuple[Any, ...], output: torch.Tensor) -> None:
        index, self._seen = self._seen, self._seen + 1
        if self.call is None or index == self.call:
            self(TRANSFORMS[self.transform](module, output))  # returns None: the source's output is untouched

    def extra_repr(self) -> str:
        call = f", call={self.call}" if self.call is not None else ""
        return f"{super().extra_repr()}, source={self.source}, transform={self.transform}{call}"


# -------------------------------------------------------------------------------------------- adapters by type


def _gate_norm(gate: nn.Module) -> str:
    """ "sigmoid" for sigmoid-like gates (sigmoid, hard sigmoid: values in [0, 1]); "none" for anything else."""
    name = type(gate).__name__.lower()
    return "sigmoid" if "sigmoid" in name and "log" not in name else "none"


def _channel(module: nn.Module, source: str = "gate", label: str = "channel") -> TapSpec:
    return TapSpec(label, "channel", CHANNEL, source, "flat", _gate_norm(module.get_submodule(source)))


def _spatial(module: nn.Module, source: str, label: str = "spatial") -> TapSpec:
    return TapSpec(label, "spatial", PLANE, source, "plane", _gate_norm(module.get_submodule(source)))


def _gate_at(source: str) -> Callable[[nn.Module], list[TapSpec]]:
    return lambda module: [_channel(module, source)]


def _cbam(module: nn.Module) -> list[TapSpec]:
    return [_channel(module, "channel.gate"), _spatial(module, "spatial.gate")]


def _light_cbam(module: nn.Module) -> list[TapSpec]:
    # LightChannelAttn applies F.sigmoid to fc2's output (its gate module is unused): repeat it on fc2's output.
    module.get_submodule("channel.fc2")
    return [TapSpec("channel", "channel", CHANNEL, "channel.fc2", "sigmoid_flat"), _spatial(module, "spatial.gate")]


def _coord(module: nn.Module) -> list[TapSpec]:
    # One gate module, called for a_h first and a_w second.
    norm = _gate_norm(module.get_submodule("gate"))
    return [
        TapSpec("h", "coordinate", ("batch", "channel", "height"), "gate", "strip", norm, call=0),
        TapSpec("w", "coordinate", ("batch", "channel", "width"), "gate", "strip", norm, call=1),
    ]


def _joint_coord(module: nn.Module) -> list[TapSpec]:
    # gate(a_h + a_w): one (B, C, H, W) map.
    norm = _gate_norm(module.get_submodule("gate"))
    return [TapSpec("spatial", "spatial", ("batch", "channel", "height", "width"), "gate", "as_is", norm)]


def _gather_excite(module: nn.Module) -> list[TapSpec]:
    if module.extent == 0:
        return [_channel(module)]
    return _joint_coord(module)


def _selective_kernel(module: nn.Module) -> list[TapSpec]:
    module.get_submodule("attn")
    return [TapSpec("selection", "selection", SELECTION, "attn", "strip", "softmax", ("branch",))]


def _global_context(module: nn.Module) -> list[TapSpec]:
    specs = []
    if module.conv_attn is not None:  # softmax over positions, applied functionally to conv_attn's logits
        specs.append(TapSpec("context", "spatial", PLANE, "conv_attn", "softmax_plane", "softmax", ("height", "width")))
    if module.mlp_scale is not None:
        specs.append(_channel(module))
    return specs


def _split_attn(module: nn.Module) -> list[TapSpec]:
    module.get_submodule("rsoftmax")
    if module.radix > 1:
        return [TapSpec("selection", "selection", SELECTION, "rsoftmax", "radix", "softmax", ("branch",))]
    return [TapSpec("channel", "channel", CHANNEL, "rsoftmax", "flat")]  # radix 1: a sigmoid per channel


ADAPTERS: dict[tuple[str, str], Callable[[nn.Module], list[TapSpec]]] = {
    ("torchvision", "SqueezeExcitation"): _gate_at("scale_activation"),
    ("timm", "SEModule"): _gate_at("gate"),
    ("timm", "EffectiveSEModule"): _gate_at("gate"),
    ("timm", "SqueezeExcite"): _gate_at("gate"),
    ("timm", "SqueezeExciteCl"): _gate_at("gate"),
    ("timm", "EcaModule"): _gate_at("gate"),
    ("timm", "CecaModule"): _gate_at("gate"),
    ("timm", "CbamModule"): _cbam,
    ("timm", "LightCbamModule"): _light_cbam,
    ("timm", "CoordAttn"): _coord,
    ("timm", "EfficientLocalAttn"): _coord,
    ("timm", "SimpleCoordAttn"): _joint_coord,
    ("timm", "StripAttn"): _joint_coord,
    ("timm", "GatherExcite"): _gather_excite,
    ("timm", "SelectiveKernel"): _selective_kernel,
    ("timm", "GlobalContext"): _global_context,
    ("timm", "SplitAttn"): _split_attn,
}
"""(top-level package, class name) -> the taps of such a module."""


def adapter_specs(module: nn.Module) -> list[TapSpec] | None:
    """The taps for `module` if its class (or a base class) has an adapter whose layout it has; else None."""
    for cls in type(module).__mro__:
        adapter = ADAPTERS.get((cls.__module__.partition(".")[0], cls.__name__))
        if adapter is None:
            continue
        try:
            specs = adapter(module)
            for spec in specs:
                module.get_submodule(spec.source)
        except AttributeError:  # same name, another layout (e.g. timm's legacy senet.SEModule): try by structure
            return None
        return specs
    return None


# -------------------------------------------------------------------------------------------------- the probe


@dataclass
class _Probe:
    """What one dummy forward saw: per module path, call order, call count and first-call tensor shapes."""

    size: int
    order: dict[str, int] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    inputs: dict[str, tuple[int, ...]] = field(default_factory=dict)
    outputs: dict[str, tuple[int, ...]] = field(default_factory=dict)
    result: tuple[int, ...] | None = None


def _probe(model: nn.Module, size: int) -> _Probe:
    """Run one (1, 3, size, size) zero image through `model` in eval mode, recording every module's shapes."""
    probe = _Probe(size)
    handles = []

    def before(path: str) -> Callable[..., None]:
        def hook(_module: nn.Module, args: tuple[Any, ...]) -> None:
            probe.order.setdefault(path, len(probe.order))
            if args and isinstance(args[0], torch.Tensor) and path not in probe.inputs:
                probe.inputs[path] = tuple(args[0].shape)

        return hook

    def after(path: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _args: tuple[Any, ...], output: Any) -> None:
            probe.calls[path] = probe.calls.get(path, 0) + 1
            if isinstance(output, torch.Tensor) and path not in probe.outputs:
                probe.outputs[path] = tuple(output.shape)

        return hook

    training = [module for module in model.modules() if module.training]
    parameter = next(model.parameters(), None)
    example = torch.zeros(
        1,
        3,
        size,
        size,
        device=parameter.device if parameter is not None else None,
        dtype=parameter.dtype if parameter is not None and parameter.is_floating_point() else None,
    )
    try:
        for path, module in model.named_modules():
            handles.append(module.register_forward_pre_hook(before(path)))
            handles.append(module.register_forward_hook(after(path)))
        for module in training:
            module.training = False
        with torch.no_grad():
            output = model(example)
        if isinstance(output, torch.Tensor):
            probe.result = tuple(output.shape)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise AttnvizError(
            f"the model failed on a 1x3x{size}x{size} input ({type(exc).__name__}: {first})",
            "give --size the input size the model was made for",
        ) from exc
    finally:
        for handle in handles:
            handle.remove()
        for module in training:
            module.training = True
    return probe


def _stage(probe: _Probe, path: str) -> int | None:
    """Stage 1-4 from the output stride at which the module works (4 -> 1 ... 32 -> 4; finer is 1, coarser 4)."""
    shape = probe.outputs.get(path)
    if shape is None or len(shape) != 4 or shape[-2:] == (1, 1):
        shape = probe.inputs.get(path)
    if shape is None or len(shape) != 4 or shape[-2] < 1:
        return None
    stride = probe.size / shape[-2]
    return min(4, max(1, round(math.log2(max(stride, 1.0))) - 1))


# ------------------------------------------------------------------------------------------ adapters by structure


def _is_sigmoid(module: nn.Module) -> bool:
    name = type(module).__name__.lower()
    return "sigmoid" in name and "log" not in name and not list(module.children())


def _ancestors(path: str) -> list[str]:
    """Enclosing module paths, nearest first, without the root."""
    parts = path.split(".")
    return [".".join(parts[:cut]) for cut in range(len(parts) - 1, 0, -1)]


def _under(path: str, roots: set[str]) -> bool:
    """Whether `path` is one of `roots` or lies inside one ("" is the whole model)."""
    return any(path == root or not root or path.startswith(root + ".") for root in roots)


def _has_single_output_conv(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) and m.out_channels == 1 for m in module.modules())


def _structural_gate(path: str, modules: dict[str, nn.Module], probe: _Probe) -> tuple[str, TapSpec] | None:
    """(owner path, tap) for a sigmoid gate at `path` that looks like SE/CBAM by its shapes, else None."""
    out = probe.outputs.get(path)
    if out is None or len(out) < 2:
        return None
    batch, rest = out[0], out[1:]
    channels = math.prod(rest)
    if channels > 1 and sorted(rest)[:-1] == [1] * (len(rest) - 1):  # one axis of length C, the others 1
        for owner in _ancestors(path):
            shape = probe.inputs.get(owner)
            if shape is not None and len(shape) == 4:
                if shape[:2] != (batch, channels):
                    return None
                return owner, TapSpec("channel", "channel", CHANNEL, path[len(owner) + 1 :], "flat")
        return None
    if len(out) == 4 and out[1] == 1 and out[2] * out[3] > 1:
        for owner in _ancestors(path):
            shape = probe.inputs.get(owner)
            if shape is not None and len(shape) == 4 and shape[-2:] == out[-2:]:
                if not _has_single_output_conv(modules[owner]):
                    return None
                return owner, TapSpec("spatial", "spatial", PLANE, path[len(owner) + 1 :], "plane")
    return None


# ------------------------------------------------------------------------------------------------ attach_taps


@dataclass(frozen=True)
class ForeignModule:
    """One recognised attention module.

    Attributes:
        path: Module path in the model (the layer name of its maps).
        type: Its class name.
        how: "type" (an adapter for its class), "structure" (a blog-style gate found by its shapes) or "attnviz"
            (one of attnviz's own blocks, e.g. in a pickled attnviz model).
        taps: The attention tensors it emits.
        stage: Stage 1-4 from the output stride it works at, None when the dummy forward did not call it.
        calls: How often the dummy forward called it.
    """

    path: str
    type: str
    how: str
    taps: tuple[TapSpec, ...]
    stage: int | None
    calls: int

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t.kind for t in self.taps))

    def summary(self) -> dict[str, Any]:
        return {
            "layer": self.path,
            "type": self.type,
            "how": self.how,
            "stage": self.stage,
            "calls": self.calls,
            "kinds": list(self.kinds),
            "taps": [{"label": t.label, "kind": t.kind, "source": t.source, "norm": t.norm} for t in self.taps],
        }


@dataclass
class ForeignReport:
    """What `attach_taps` found: recognised modules (in forward order) and attention-like ones it did not match."""

    recognised: list[ForeignModule]
    unrecognised: list[tuple[str, str]]
    input_size: int
    num_outputs: int | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "recognised": [m.summary() for m in self.recognised],
            "not_recognised": [{"layer": path, "type": name} for path, name in self.unrecognised],
        }


def detach_taps(model: nn.Module) -> None:
    """Remove every ForeignTap `attach_taps` added (the model is then exactly as it was)."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, ForeignTap):
                delattr(module, name)


_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _tap_host(owner: str, modules: dict[str, nn.Module]) -> str | None:
    """Where the taps of `owner` can live: itself, or (a container's forward would call a new child) the nearest
    enclosing module that is not a container; None when there is none."""
    for path in [owner, *_ancestors(owner), ""]:
        if not isinstance(modules[path], _CONTAINERS):
            return path
    return None


def _add_tap(host: nn.Module, spec: TapSpec) -> TapSpec:
    """Attach a ForeignTap for `spec` to `host`; a label `host` already has gets a number ("channel2")."""
    label, index = spec.label, 1
    while hasattr(host, TAP_PREFIX + label):
        index += 1
        label = f"{spec.label}{index}"
    spec = replace(spec, label=label)
    host.add_module(TAP_PREFIX + label, ForeignTap(spec))
    return spec


def attach_taps(model: nn.Module, *, size: int = 224) -> ForeignReport:
    """Recognise the attention modules of `model` and attach a ForeignTap for each attention tensor.

    One dummy forward at `size` x `size` finds blog-style gates by their shapes, the stage of every module (from
    its output stride) and its call count. Calling it again replaces the taps of the previous call.
    `model.attnviz_blocks` (path -> stage, in forward order) is set to the recognised modules the dummy forward
    called, after any attnviz blocks the model already had.

    Raises:
        AttnvizError: the model fails on a (1, 3, size, size) input.
    """
    detach_taps(model)
    modules = dict(model.named_modules())
    own = {path for path, module in modules.items() if isinstance(module, AttentionBlock)}
    typed: dict[str, list[TapSpec]] = {}
    for path, module in modules.items():
        if _under(path, own | set(typed)) or isinstance(module, Tap):
            continue
        specs = adapter_specs(module)
        if specs:  # an empty list: this configuration computes no attention (e.g. GlobalContext without either)
            typed[path] = specs
    probe = _probe(model, size)
    structural: dict[str, list[TapSpec]] = {}
    for path, module in modules.items():
        if not _is_sigmoid(module) or _under(path, own | set(typed)):
            continue
        found = _structural_gate(path, modules, probe)
        if found is not None and not _under(found[0], own | set(typed)):
            structural.setdefault(found[0], []).append(found[1])

    recognised, untappable = [], []
    for how, table in (("type", typed), ("structure", structural)):
        for path, specs in table.items():
            host = _tap_host(path, modules)
            if host is None:
                untappable.append(path)
                continue
            relative = path[len(host) + 1 :] if host else path  # from the host down to the module
            taps = tuple(
                _add_tap(modules[host], spec if host == path else replace(spec, source=f"{relative}.{spec.source}"))
                for spec in specs
            )
            recognised.append(ForeignModule(host, type(modules[path]).__name__, how, taps, _stage(probe, path), 0))
    recognised = _merge_by_layer(recognised + _own_blocks(model, modules, own, probe), probe)
    covered = own | set(typed) | set(structural) | {m.path for m in recognised}
    unrecognised = [
        (path, type(module).__name__)
        for path, module in modules.items()
        if path
        and (ATTENTION_NAME.search(type(module).__name__) or path in untappable)
        and not isinstance(module, Tap)
        and (path in untappable or not any(_under(path, {c}) or c.startswith(path + ".") for c in covered))
    ]
    unrecognised = [(p, n) for p, n in unrecognised if not _under(p.rpartition(".")[0], {q for q, _ in unrecognised})]
    blocks = {}
    for m in recognised:
        if m.calls and m.stage is not None:
            blocks[m.path] = m.stage
    model.attnviz_blocks = blocks
    num_outputs = probe.result[-1] if probe.result is not None and len(probe.result) == 2 else None
    return ForeignReport(recognised, unrecognised, size, num_outputs)


def _own_blocks(model: nn.Module, modules: dict[str, nn.Module], own: set[str], probe: _Probe) -> list[ForeignModule]:
    """attnviz's own blocks in the model (e.g. a pickled attnviz model), reported beside the foreign ones, at the
    stage the model says they were placed in."""
    placed = getattr(model, "attnviz_blocks", None) or {}
    found = []
    for path in sorted(own, key=lambda p: probe.order.get(p, len(probe.order))):
        if any(other != path and _under(path, {other}) for other in own):
            continue  # a block inside another block belongs to the outer one
        taps = tuple(
            TapSpec(tap.label, tap.kind, tap.axes, name, "as_is", tap.norm, tap.over)
            for name, tap in modules[path].named_modules()
            if isinstance(tap, Tap)
        )
        block = modules[path]
        stage = placed.get(path, _stage(probe, path))
        found.append(ForeignModule(path, block.block_name or type(block).__name__, "attnviz", taps, stage, 0))
    return found


def _merge_by_layer(found: list[ForeignModule], probe: _Probe) -> list[ForeignModule]:
    """One entry per layer (taps hosted by a container's parent share it), with call counts, in forward order."""
    merged: dict[str, ForeignModule] = {}
    for m in found:
        calls = probe.calls.get(m.path, 0)
        if m.path in merged:
            old = merged[m.path]
            m = ForeignModule(m.path, old.type, old.how, old.taps + m.taps, old.stage or m.stage, calls)
        merged[m.path] = ForeignModule(m.path, m.type, m.how, m.taps, m.stage, calls)
    return sorted(merged.values(), key=lambda m: probe.order.get(m.path, len(probe.order)))


# ---------------------------------------------------------------------------------------------------- loading


@dataclass
class ForeignModel:
    """A model built from a --model spec, and what to say about it.

    Attributes:
        model: The module, in eval mode.
        name: A file-name-safe name ("timm-resnet18-cbam").
        label: What it is ("timm's resnet18 with cbam attention").
        weights: Where its weights came from ("randomly initialised (...)", "with its pretrained weights").
        trained: Whether the weights were trained at all.
        input_size: The input side its pretrained weights expect, when known.
        mean: Per-channel input mean its weights expect, when not ImageNet's.
        std: Per-channel input standard deviation its weights expect.
    """

    model: nn.Module
    name: str
    label: str
    weights: str
    trained: bool
    input_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @property
    def source(self) -> str:
        return f"{self.label}, {self.weights}"


def parse_model_spec(spec: str) -> tuple[str, str]:
    """ "torchvision:NAME" -> ("torchvision", NAME), "timm:NAME" -> ("timm", NAME), anything else -> ("file", spec)."""
    source, sep, name = spec.partition(":")
    if sep and source in ("torchvision", "timm"):
        if not name.strip():
            raise UsageError(f"--model {spec} names no model", f"e.g. --model {source}:resnet18")
        return source, name.strip()
    return "file", spec


def file_slug(text: str) -> str:
    """A piece of a file name made from a model spec ("timm:resnet18" -> "timm-resnet18")."""
    return re.sub(r"[^\w.-]+", "-", text).strip("-.") or "model"


def _unknown(what: str, name: str, valid: list[str], listing: str) -> UsageError:
    close = difflib.get_close_matches(name, valid, n=5, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else f"{listing} lists the {len(valid)} names"
    return UsageError(f"unknown {what} {name!r}", hint)


def torchvision_model(name: str, *, pretrained: bool = False) -> ForeignModel:
    """torchvision's `name` with random weights, or with its DEFAULT ImageNet weights (cache first, weights-only).

    Raises:
        UsageError: torchvision has no such model.
        CheckpointError: the weights are not cached and cannot be fetched; the message says where to place them.
    """
    import torchvision
    from torchvision.models import get_model_weights, list_models

    valid = list_models()
    if name not in valid:
        raise _unknown("torchvision model", name, valid, "torchvision.models.list_models()")
    kwargs: dict[str, Any] = {}
    if pretrained:
        categories = get_model_weights(name).DEFAULT.meta.get("categories")
        kwargs = {"num_classes": len(categories)} if categories else {}
    model = torchvision.models.get_model(name, weights=None, **kwargs)
    if pretrained:
        from attnviz.models.backbones import pretrained_state_dict

        url = get_model_weights(name).DEFAULT.url
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
        if not cached.is_file() and not reachable(url):
            raise CheckpointError(
                f"cannot fetch torchvision's pretrained {name} weights (no connection to {urlparse(url).hostname})",
                f"download {url} on a machine with internet and place it at {cached}",
            )
        apply_state_dict(model, pretrained_state_dict(name), f"torchvision's {name} weights")
        weights = "with its pretrained ImageNet weights"
    else:
        weights = "randomly initialised (no trained weights; --pretrained for ImageNet's)"
    return ForeignModel(model.eval(), file_slug(f"torchvision-{name}"), f"torchvision's {name}", weights, pretrained)


def _import_timm() -> Any:
    try:
        import timm
    except ImportError:
        raise UsageError("--model timm:NAME needs timm, which is not installed", "pip install attnviz[timm]") from None
    return timm


def _timm_attn_kwargs(timm: Any, attn: str) -> tuple[type, list[dict[str, Any]]]:
    """The attention class timm uses for `attn`, and the keyword sets to try (ResNet-family takes block_args)."""
    try:
        cls = timm.layers.get_attn(attn)
    except AssertionError:
        raise UsageError(
            f"unknown --timm-attn {attn!r}", f"timm's attention layers include {TIMM_ATTN_EXAMPLES}"
        ) from None
    cls = getattr(cls, "func", cls)  # get_attn may return a functools.partial
    return cls, [{"block_args": {"attn_layer": attn}}, {"attn_layer": attn}]


def reachable(url: str, timeout: float = 5.0) -> bool:
    """Whether a TCP connection to `url`'s host can be opened: asked before a download, so that offline a clear
    message comes at once instead of a library's retries."""
    parsed = urlparse(url)
    if not parsed.hostname:
        return False
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _timm_weights_source(timm: Any, name: str) -> tuple[str | None, bool]:
    """(where timm downloads `name`'s pretrained weights from, whether they are in the Hugging Face cache)."""
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:  # another timm version: the hint then names no URL, and the download is simply tried
        return None, False
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return f"https://huggingface.co/{hub_id}/resolve/main/model.safetensors", False
        cached = any(
            isinstance(try_to_load_from_cache(hub_id, filename), str)
            for filename in ("model.safetensors", "pytorch_model.bin")
        )
        return f"https://huggingface.co/{hub_id}/resolve/main/model.safetensors", cached
    return (getattr(cfg, "url", None) or None) if cfg is not None else None, False


def _timm_weights_file(name: str, url: str | None) -> Path:
    """Where a hand-placed weights file for timm's `name` is looked for (beside torch's cached weights)."""
    suffix = Path(urlparse(url).path).suffix if url else ".safetensors"
    return Path(torch.hub.get_dir()) / "checkpoints" / f"timm-{file_slug(name)}{suffix or '.safetensors'}"


def timm_model(name: str, *, pretrained: bool = False, attn: str | None = None) -> ForeignModel:
    """timm's `name` (optionally with `attn` as the attention layer of every block), random or pretrained.

    A weights file placed at `_timm_weights_file(name)` is used before any download.

    Raises:
        UsageError: timm is not installed, has no such model, or the model takes no attention layer.
        CheckpointError: the pretrained weights cannot be fetched; the message says where to place them.
    """
    timm = _import_timm()
    if not timm.is_model(name):
        raise _unknown("timm model", name, timm.list_models(), "timm.list_models()")
    attn_cls, attempts = _timm_attn_kwargs(timm, attn) if attn else (None, [{}])
    model = None
    for kwargs in attempts:
        try:
            model = timm.create_model(name, pretrained=False, **kwargs)
        except (TypeError, AssertionError, ValueError):  # this model takes no such keyword (or not this layer)
            continue
        if attn_cls is None or any(isinstance(m, attn_cls) for m in model.modules()):
            break
        model = None
    if model is None:
        raise UsageError(
            f"timm's {name} does not take --timm-attn", "it applies to ResNet-family models such as timm:resnet18"
        )
    if pretrained:
        model = _timm_pretrained(timm, name, kwargs, strict=attn is None)
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    if pretrained:
        weights = "with its pretrained weights" + (f"; the {attn} modules are untrained" if attn else "")
    else:
        weights = "randomly initialised (no trained weights; --pretrained for timm's)"
    size = cfg.get("input_size")
    return ForeignModel(
        model.eval(),
        file_slug(f"timm-{name}" + (f"-{attn}" if attn else "")),
        f"timm's {name}" + (f" with {attn} attention" if attn else ""),
        weights,
        pretrained,
        input_size=int(size[-1]) if pretrained and size else None,
        mean=tuple(cfg["mean"]) if len(cfg.get("mean", ())) == 3 else None,
        std=tuple(cfg["std"]) if len(cfg.get("std", ())) == 3 else None,
    )


def _timm_pretrained(timm: Any, name: str, kwargs: dict[str, Any], *, strict: bool) -> nn.Module:
    """timm's model with its pretrained weights: a hand-placed file first, then timm's own (cached) download."""
    url, cached = _timm_weights_source(timm, name)
    placed = _timm_weights_file(name, url)
    where = f"download {url} on a machine with internet and place it" if url else "place the weights file"
    extra: dict[str, Any] = {} if strict else {"pretrained_strict": False}
    if placed.is_file():
        extra["pretrained_cfg_overlay"] = {"file": str(placed)}
    elif url and not cached and not reachable(url):
        raise CheckpointError(
            f"cannot fetch timm's pretrained {name} weights (no connection to {urlparse(url).hostname})",
            f"{where} at {placed}",
        )
    try:
        return timm.create_model(name, pretrained=True, **kwargs, **extra)
    except Exception as exc:
        raise CheckpointError(
            f"cannot fetch timm's pretrained {name} weights ({type(exc).__name__})", f"{where} at {placed}"
        ) from exc


def module_from_checkpoint(obj: Any) -> nn.Module | None:
    """The nn.Module a trusted pickle holds (itself, or nested under a usual key); None for a state dict."""
    from attnviz.io.checkpoints import STATE_DICT_KEYS

    if isinstance(obj, nn.Module):
        return obj
    if isinstance(obj, dict):
        for key in STATE_DICT_KEYS:
            if isinstance(obj.get(key), nn.Module):
                return obj[key]
    return None


def model_file(path: str | os.PathLike[str], *, trust: bool) -> tuple[nn.Module | None, Any]:
    """Read a model file: (the module it holds, None) for a trusted pickled model, (None, contents) otherwise.

    Raises:
        UsageError: the file is missing.
        UntrustedCheckpointError: it is a pickled model and `trust` is False (nothing from it has run).
        CheckpointError: it is not a weights or model file.
    """
    from attnviz.io.checkpoints import read_checkpoint

    if not Path(path).exists():
        raise UsageError(
            f"model file not found: {path}", "give torchvision:NAME, timm:NAME or the path of a model file"
        )
    contents = read_checkpoint(path, trust=trust)
    module = module_from_checkpoint(contents)
    return (module.eval(), None) if module is not None else (None, contents)
