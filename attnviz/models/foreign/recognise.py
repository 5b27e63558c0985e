"""Recognising the attention modules of a foreign network, and `attach_taps`, which taps them.

Modules are recognised by type (an adapter per known class, looked up along the class's MRO by top-level package
and class name, so subclasses count and timm is never imported to check; self-attention's adapters live in
`selfattn`) or by structure (sigmoid gates, modules or functional calls in a module's forward, whose shapes in
one dummy forward look like SE or CBAM gates; see `structure`). attnviz's own blocks are reported beside them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from attnviz.blocks.base import AttentionBlock, Tap
from attnviz.models.foreign.probe import Probe, run_probe, stage_of
from attnviz.models.foreign.selfattn import SELF_ATTENTION_ADAPTERS, token_stage, with_layout
from attnviz.models.foreign.structure import ancestors, by_structure, under
from attnviz.models.foreign.taps import CHANNEL, PLANE, SELECTION, TapSpec, add_tap, detach_taps

ATTENTION_NAME = re.compile(
    r"Atten|Attn|Squeeze|Excit|Gate(?!d)|Gating|CBAM|Cbam|ECA|Eca[A-Z]|Context|Selective|SplitAt|Splat|NonLocal"
    r"|LambdaLayer|Halo|(?:^|[a-z])(?:SE|SK|BAM)(?:[A-Z_0-9]|$)"
)
"""Class names that look like attention: such a module that no adapter matches is listed as not recognised."""


# -------------------------------------------------------------------------------------------- adapters by type


def _gate_norm(gate: nn.Module) -> str:
    """ "sigmoid" for sigmoid-like gates (sigmoid, hard sigmoid: values in [0, 1]); "none" for anything else."""
    name = type(gate).__name__.lower()
    return "sigmoid" if "sigmoid" in name and "log" not in name else "none"


def _channel(module: nn.Module, source: str = "gate", label: str = "channel") -> TapSpec:
    """A (B, C) channel gate at `source`."""
    return TapSpec(label, "channel", CHANNEL, source, "flat", _gate_norm(module.get_submodule(source)))


def _spatial(module: nn.Module, source: str, label: str = "spatial") -> TapSpec:
    """A (B, H, W) spatial gate at `source`."""
    return TapSpec(label, "spatial", PLANE, source, "plane", _gate_norm(module.get_submodule(source)))


def _gate_at(source: str) -> Callable[[nn.Module], list[TapSpec]]:
    """An adapter for a module with one channel gate, at `source`."""
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
    **SELF_ATTENTION_ADAPTERS,
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
        """The kinds of its taps, each once, in tap order."""
        return tuple(dict.fromkeys(t.kind for t in self.taps))

    def summary(self) -> dict[str, Any]:
        """JSON-ready: layer, type, how, stage, calls, kinds and taps."""
        return {
            "layer": self.path,
            "type": self.type,
            "how": self.how,
            "stage": self.stage,
            "calls": self.calls,
            "kinds": list(self.kinds),
            "taps": [_tap_summary(t) for t in self.taps],
        }


def _tap_summary(tap: TapSpec) -> dict[str, Any]:
    """Label, kind, source and norm of a tap; the function and call of a functional gate; the call of a tap on one
    call of its source."""
    found = {"label": tap.label, "kind": tap.kind, "source": tap.source, "norm": tap.norm}
    if tap.function is not None:
        found["function"] = tap.function
    if tap.call is not None:
        found["call"] = tap.call
    return found


@dataclass
class ForeignReport:
    """What `attach_taps` found: recognised modules (in forward order) and attention-like ones it did not match.

    Attributes:
        recognised: The recognised modules, in forward order.
        unrecognised: (path, class name) of attention-like modules that were not recognised or cannot be tapped.
        input_size: Side of the dummy input the model was probed with.
        num_outputs: Width of the model's (B, N) output, when it has one.
    """

    recognised: list[ForeignModule]
    unrecognised: list[tuple[str, str]]
    input_size: int
    num_outputs: int | None = None


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
    typed = _by_type(modules, own)
    probe = run_probe(model, size)
    structural = by_structure(modules, probe, own | set(typed))
    recognised, untappable = _attach((("type", typed), ("structure", structural)), modules, probe)
    recognised = _merge_by_layer(recognised + _own_blocks(model, modules, own, probe), probe)
    covered = own | set(typed) | set(structural) | {m.path for m in recognised}
    unrecognised = _unrecognised(modules, covered, untappable)
    model.attnviz_blocks = {m.path: m.stage for m in recognised if m.calls and m.stage is not None}
    num_outputs = probe.result[-1] if probe.result is not None and len(probe.result) == 2 else None
    return ForeignReport(recognised, unrecognised, size, num_outputs)


def _by_type(modules: dict[str, nn.Module], own: set[str]) -> dict[str, list[TapSpec]]:
    """Path -> taps of the modules an adapter matches, outermost first (nothing inside a match or an own block)."""
    typed: dict[str, list[TapSpec]] = {}
    for path, module in modules.items():
        if under(path, own | set(typed)) or isinstance(module, Tap):
            continue
        specs = adapter_specs(module)
        if specs:  # an empty list: this configuration computes no attention (e.g. GlobalContext without either)
            typed[path] = with_layout(specs, path, modules)
    return typed


_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _tap_host(owner: str, modules: dict[str, nn.Module]) -> str | None:
    """Where the taps of `owner` can live: itself, or (a container's forward would call a new child) the nearest
    enclosing module that is not a container; None when there is none."""
    for path in [owner, *ancestors(owner), ""]:
        if not isinstance(modules[path], _CONTAINERS):
            return path
    return None


def _attach(
    tables: tuple[tuple[str, dict[str, list[TapSpec]]], ...], modules: dict[str, nn.Module], probe: Probe
) -> tuple[list[ForeignModule], list[str]]:
    """Attach the taps of every (how, path -> taps) table; (the modules tapped, the paths with no host)."""
    recognised, untappable = [], []
    for how, table in tables:
        for path, specs in table.items():
            host = _tap_host(path, modules)
            if host is None:
                untappable.append(path)
                continue
            relative = path[len(host) + 1 :] if host else path  # from the host down to the module
            taps = tuple(add_tap(modules[host], spec if host == path else spec.rebased(relative)) for spec in specs)
            stage = stage_of(probe, path) or token_stage(probe, path, specs)
            recognised.append(ForeignModule(host, type(modules[path]).__name__, how, taps, stage, 0))
    return recognised, untappable


def _own_blocks(model: nn.Module, modules: dict[str, nn.Module], own: set[str], probe: Probe) -> list[ForeignModule]:
    """attnviz's own blocks in the model (e.g. a pickled attnviz model), reported beside the foreign ones, at the
    stage the model says they were placed in."""
    placed = getattr(model, "attnviz_blocks", None) or {}
    found = []
    for path in sorted(own, key=lambda p: probe.order.get(p, len(probe.order))):
        if any(other != path and under(path, {other}) for other in own):
            continue  # a block inside another block belongs to the outer one
        taps = tuple(
            TapSpec(tap.label, tap.kind, tap.axes, name, "as_is", tap.norm, tap.over)
            for name, tap in modules[path].named_modules()
            if isinstance(tap, Tap)
        )
        block = modules[path]
        stage = placed.get(path, stage_of(probe, path))
        found.append(ForeignModule(path, block.block_name or type(block).__name__, "attnviz", taps, stage, 0))
    return found


def _merge_by_layer(found: list[ForeignModule], probe: Probe) -> list[ForeignModule]:
    """One entry per layer (taps hosted by a container's parent share it), with call counts, in forward order."""
    merged: dict[str, ForeignModule] = {}
    for m in found:
        calls = probe.calls.get(m.path, 0)
        if m.path in merged:
            old = merged[m.path]
            m = ForeignModule(m.path, old.type, old.how, old.taps + m.taps, old.stage or m.stage, calls)
        merged[m.path] = ForeignModule(m.path, m.type, m.how, m.taps, m.stage, calls)
    return sorted(merged.values(), key=lambda m: probe.order.get(m.path, len(probe.order)))


def _unrecognised(modules: dict[str, nn.Module], covered: set[str], untappable: list[str]) -> list[tuple[str, str]]:
    """(path, class name) of the modules that look like attention (or were recognised but cannot be tapped) and
    that no recognised module covers; the outermost of nested ones only."""
    found = [
        (path, type(module).__name__)
        for path, module in modules.items()
        if path
        and (ATTENTION_NAME.search(type(module).__name__) or path in untappable)
        and not isinstance(module, Tap)
        and (path in untappable or not any(under(path, {c}) or c.startswith(path + ".") for c in covered))
    ]
    return [(p, n) for p, n in found if not under(p.rpartition(".")[0], {q for q, _ in found})]
