"""ASFF inside detectors attnviz did not build (YOLO-style repositories): found by structure, tapped by hooks.

A module counts as ASFF-like when
- it has a direct child `weight_levels` (else exactly one direct child Conv2d) that ends in a 1x1 conv with 3 outputs
  whose input channels split into three equal parts: the conv turning the compressed levels into fusion logits;
- three 1x1 convs feed it: children weight_level_0/1/2 (the ASFF code's names), or else at least three 1x1 convs
  among its submodules each giving a third of those input channels;
- its forward takes three inputs (three positional parameters or *args; or one sequence of maps, when the logit conv
  is named weight_levels).
attnviz's own ASFF block has its own tap and is reported as such.

YOLO-style ASFF applies `F.softmax(weight_levels(...), dim=1)` inside forward, a function with no module to hook, so a
`LevelTap` hooks `weight_levels` and applies the same softmax to the same logits while capture runs. The hook returns
nothing, so the model's outputs are unchanged; the tap has no parameters, so its state dict is too.

Level order: attnviz's level axis runs fine to coarse. A foreign module orders its inputs as it likes (the original
ASFF code passes the coarsest map first), and channel k of its weights weighs input k. At every call the tap reads the
spatial sizes of the module's three inputs (a forward pre-hook) and reorders the weights from the largest input to
the smallest. When the inputs are not three 4-D maps the module's own order is kept and marked unknown.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from attnviz.blocks.asff import ASFF
from attnviz.blocks.base import AttentionBlock, Tap
from attnviz.models.foreign import TAP_PREFIX, ForeignTap, TapSpec, detach_taps

LEVEL_AXES = ("batch", "level", "height", "width")
LEVEL_COUNT = 3
ASFF_NAME = re.compile(r"ASFF|Asff|asff|SpatialFusion|LevelFusion")
"""Class names that suggest ASFF: such a module that does not match the structure is named in the error."""


@dataclass(frozen=True)
class FusionModule:
    """One ASFF-like module.

    Attributes:
        path: Module path in the model (the layer name of its maps).
        type: Its class name.
        how: "attnviz" (attnviz's ASFF block) or "structure" (found by the shape of its submodules).
        source: Path, relative to the module, of the conv whose output is the fusion logits.
    """

    path: str
    type: str
    how: str
    source: str

    def summary(self) -> dict[str, str]:
        """JSON-ready: layer, type, how it was found, and the source of its logits."""
        return {"layer": self.path, "type": self.type, "how": self.how, "source": self.source}


class LevelTap(ForeignTap):
    """A level tap on a foreign ASFF-like module: softmax of its weight conv's logits, levels fine to coarse.

    Attributes:
        order: At the last call, the module's input index of each level, fine to coarse (None: order unknown).
        source_sizes: At the last call, the (h, w) of each level's input, fine to coarse.
    """

    def __init__(self, spec: TapSpec) -> None:
        super().__init__(spec)
        self.order: list[int] | None = None
        self.source_sizes: list[tuple[int, int]] | None = None

    def connect(self, owner: nn.Module) -> list[torch.utils.hooks.RemovableHandle]:
        """Hook `owner`'s inputs (to learn the level order) as well as its logit conv."""
        handles = [owner.register_forward_pre_hook(self._on_owner_inputs, with_kwargs=True)]
        return handles + super().connect(owner)

    def _on_owner_inputs(self, _module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        maps = _input_maps(args, kwargs)
        if maps is None:
            self.order = self.source_sizes = None
            return
        sizes = [(int(m.shape[-2]), int(m.shape[-1])) for m in maps]
        self.order = sorted(range(LEVEL_COUNT), key=lambda k: -sizes[k][0] * sizes[k][1])  # stable: ties keep order
        self.source_sizes = [sizes[k] for k in self.order]

    def _on_source(self, _module: nn.Module, _args: tuple[Any, ...], output: torch.Tensor) -> None:
        weights = F.softmax(output, dim=1)
        self(weights[:, self.order] if self.order is not None else weights)


def _input_maps(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[torch.Tensor] | None:
    """The three 4-D feature maps a module was called with (as three arguments or one sequence), else None."""
    values = [*args, *kwargs.values()]
    if len(values) == 1 and isinstance(values[0], Sequence) and not isinstance(values[0], torch.Tensor):
        values = list(values[0])
    maps = [v for v in values if isinstance(v, torch.Tensor)]
    if len(maps) != LEVEL_COUNT or any(m.dim() != 4 for m in maps):
        return None
    return maps


def _last_conv(module: nn.Module) -> nn.Conv2d | None:
    if isinstance(module, nn.Conv2d):
        return module
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1] if convs else None


def _is_logit_conv(conv: nn.Conv2d | None) -> bool:
    return (
        conv is not None
        and conv.out_channels == LEVEL_COUNT
        and conv.kernel_size == (1, 1)
        and conv.in_channels % LEVEL_COUNT == 0
    )


def _weight_source(module: nn.Module) -> str | None:
    """The child computing the fusion logits: `weight_levels`, else the only 1x1 conv child with 3 outputs."""
    children = dict(module.named_children())
    if "weight_levels" in children:
        return "weight_levels" if _is_logit_conv(_last_conv(children["weight_levels"])) else None
    convs = [name for name, child in children.items() if isinstance(child, nn.Conv2d) and _is_logit_conv(child)]
    return convs[0] if len(convs) == 1 else None


def _has_three_feeders(module: nn.Module, source: str) -> bool:
    """Whether three 1x1 convs each give a third of the logit conv's input channels."""
    conv = _last_conv(module.get_submodule(source))
    assert conv is not None
    part = conv.in_channels // LEVEL_COUNT
    children = dict(module.named_children())
    named = [children.get(f"weight_level_{i}") for i in range(LEVEL_COUNT)]
    if all(child is not None for child in named):
        return all((c := _last_conv(child)) is not None and c.out_channels == part for child in named)
    feeders = [
        m
        for path, m in module.named_modules()
        if path
        and path != source
        and not path.startswith(source + ".")
        and isinstance(m, nn.Conv2d)
        and m.kernel_size == (1, 1)
        and m.out_channels == part
    ]
    return len(feeders) >= LEVEL_COUNT


def _takes_three_inputs(module: nn.Module, source: str) -> bool:
    """Three positional parameters or *args; one parameter (a sequence of maps) only beside a `weight_levels`."""
    try:
        parameters = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):  # no signature to read: let the call decide
        return True
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters):
        return True
    positional = [
        p for p in parameters if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    return len(positional) >= LEVEL_COUNT or (len(positional) == 1 and source == "weight_levels")


def find_asff_modules(model: nn.Module) -> tuple[list[FusionModule], list[tuple[str, str]]]:
    """(ASFF-like modules in definition order, ASFF-named modules that did not match as (path, class name))."""
    found: list[FusionModule] = []
    unmatched: list[tuple[str, str]] = []
    own: list[str] = []
    for path, module in model.named_modules():
        if any(path.startswith(root + ".") for root in own):
            continue
        if isinstance(module, ASFF):
            own.append(path)
            found.append(FusionModule(path, type(module).__name__, "attnviz", "weight_logits"))
            continue
        if isinstance(module, (AttentionBlock, Tap)):
            continue
        source = _weight_source(module)
        if source is not None and _has_three_feeders(module, source) and _takes_three_inputs(module, source):
            found.append(FusionModule(path, type(module).__name__, "structure", source))
        elif path and ASFF_NAME.search(type(module).__name__):
            unmatched.append((path, type(module).__name__))
    return found, unmatched


def attach_level_taps(model: nn.Module) -> tuple[list[FusionModule], list[tuple[str, str]]]:
    """Find the ASFF-like modules of `model` and give each foreign one a LevelTap (attnviz's have their own).

    Calling it again replaces the taps of the previous call. Returns what `find_asff_modules` returns.
    """
    detach_taps(model)
    found, unmatched = find_asff_modules(model)
    for fusion in found:
        if fusion.how == "structure":
            spec = TapSpec("level", "level", LEVEL_AXES, fusion.source, "as_is", "softmax", ("level",))
            model.get_submodule(fusion.path).add_module(TAP_PREFIX + "level", LevelTap(spec))
    return found, unmatched
