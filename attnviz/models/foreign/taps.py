"""Tap mechanics for foreign modules: what a tap catches (`TapSpec`), the `ForeignTap` that catches it, and adding
and removing such taps.

A ForeignTap is inert until `capture` connects it: capture then puts a forward hook on the submodule that produces
the attention and removes it on exit. The hook returns nothing, so outputs are bit-identical; taps have no
parameters or buffers, so state dicts are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from attnviz.blocks.base import Tap

TAP_PREFIX = "attnviz_tap_"
"""Child-name prefix of the ForeignTaps `add_tap` attaches."""

CHANNEL = ("batch", "channel")
PLANE = ("batch", "height", "width")
SELECTION = ("batch", "branch", "channel")


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
    """The output unchanged."""
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
        """Each call of the owner counts the calls of the source afresh."""
        self._seen = 0

    def _on_source(self, module: nn.Module, _args: tuple[Any, ...], output: torch.Tensor) -> None:
        """Record the tensor of the tapped call of the source."""
        index, self._seen = self._seen, self._seen + 1
        if self.call is None or index == self.call:
            self(TRANSFORMS[self.transform](module, output))  # returns None: the source's output is untouched

    def extra_repr(self) -> str:
        """The Tap's description plus where the tensor comes from."""
        call = f", call={self.call}" if self.call is not None else ""
        return f"{super().extra_repr()}, source={self.source}, transform={self.transform}{call}"


def add_tap(host: nn.Module, spec: TapSpec) -> TapSpec:
    """Attach a ForeignTap for `spec` to `host`; a label `host` already has gets a number ("channel2").

    Returns:
        The spec as attached, with its label made unique.
    """
    label, index = spec.label, 1
    while hasattr(host, TAP_PREFIX + label):
        index += 1
        label = f"{spec.label}{index}"
    spec = replace(spec, label=label)
    host.add_module(TAP_PREFIX + label, ForeignTap(spec))
    return spec


def detach_taps(model: nn.Module) -> None:
    """Remove every ForeignTap `attach_taps` added (the model is then exactly as it was)."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, ForeignTap):
                delattr(module, name)
