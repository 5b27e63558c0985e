"""Tap mechanics for foreign modules: what a tap catches (`TapSpec`), the `ForeignTap` that catches it, and adding
and removing such taps.

A ForeignTap is inert until `capture` connects it: capture then puts a forward hook on the submodule that produces
the attention and removes it on exit. The hook returns nothing, so outputs are bit-identical; taps have no
parameters or buffers, so state dicts are unchanged.

Where no submodule returns the attention (self-attention whose softmax runs inside a fused kernel or as a function),
the tap runs in recipe mode: it catches the outputs of the submodules carrying queries and keys during one call of
the module, and a recipe of `recompute` turns them into the weights; for grid tokens only the query rows capture
asks for (`select_queries`) are computed.

Where the module applies the gate with a functional call in its own forward (`x * torch.sigmoid(...)`), the tap
runs in call mode: a `functional.CallCatcher` watches that forward (and nothing else) for the k-th call of the
family and hands its output over.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from attnviz.blocks.base import Tap
from attnviz.models.foreign.functional import CallCatcher
from attnviz.models.foreign.recompute import RECIPES, Found

if TYPE_CHECKING:
    from attnviz.capture import QueryPoints

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
"""How a hooked output becomes the tapped tensor; by name, so a ForeignTap stays a plain picklable module.

One more name, "positions", is for call mode only: a softmax over the H*W positions of the module's (B, C, H, W)
input, kept when it has B*H*W values and reshaped to (B, H, W)."""

POSITIONS = "positions"


@dataclass(frozen=True)
class TapSpec:
    """One attention tensor of a foreign module: what it is and where to catch it.

    Attributes:
        label: Name of the tensor inside its module ("channel", "spatial", "h", "w", "selection", "context").
        kind: One of catalog.KINDS.
        axes: Axis names of the tapped tensor, batch first.
        source: Path, relative to the module, of the submodule whose output carries the attention.
        transform: Key of `TRANSFORMS` (how that output becomes the tapped tensor) or of `recompute.RECIPES` (the
            recipe recomputing the attention from the outputs of `inputs` and `source`, at the end of `source`).
        norm: How the values were produced (see blocks.base.NORMS).
        over: Axes a softmax sums to 1 over.
        call: Tap only this call (0-based) of `source` within each call of the module; None for every call.
        tokens: For matrix taps, what the query/key tokens are (see blocks.base.TOKENS).
        inputs: For recipes: paths (like `source`) of the submodules whose outputs the recipe reads before it.
        params: For recipes: (name, value) pairs of the module's token layout (e.g. ("prefix", 1)).
        base: Path, relative to the tap's host, of the module itself ("" when the host is the module).
        function: For a gate applied by a functional call in the own forward of `source` (`x * torch.sigmoid(y)`):
            the family of the call ("sigmoid", "softmax", see `functional.FUNCTIONS`); `call` then counts that
            forward's calls of the family, and `transform` turns the call's output into the tapped tensor.
    """

    label: str
    kind: str
    axes: tuple[str, ...]
    source: str
    transform: str
    norm: str = "sigmoid"
    over: tuple[str, ...] = ()
    call: int | None = None
    tokens: str | None = None
    inputs: tuple[str, ...] = ()
    params: tuple[tuple[str, Any], ...] = ()
    base: str = ""
    function: str | None = None

    def rebased(self, relative: str) -> TapSpec:
        """This spec for a tap hosted `relative` above its module (a container's parent): paths start there."""

        def join(path: str) -> str:
            return f"{relative}.{path}" if path else relative

        return replace(self, source=join(self.source), inputs=tuple(map(join, self.inputs)), base=join(self.base))


class ForeignTap(Tap):
    """A Tap attached to a foreign module, fed by a forward hook on one of its submodules while capture runs.

    Args:
        spec: What the tensor is and which submodule produces it.
    """

    function: str | None = None  # a class default: taps pickled before call mode existed lack the attribute

    def __init__(self, spec: TapSpec) -> None:
        super().__init__(spec.kind, spec.axes, norm=spec.norm, over=spec.over, tokens=spec.tokens, label=spec.label)
        self.source = spec.source
        self.transform = spec.transform
        self.call = spec.call
        self.inputs = spec.inputs
        self.params = dict(spec.params)
        self.base = spec.base
        self.function = spec.function
        self._seen = 0
        self._queries: QueryPoints | None = None
        self._call: tuple[tuple[Any, ...], dict[str, Any]] | None = None  # recipe mode: the module's current call
        self._caught: dict[str, Any] = {}  # recipe mode: the outputs of `inputs` in that call

    def forward(
        self, attention: torch.Tensor, grid: tuple[int, int] | None = None, rows: Sequence[int] | None = None
    ) -> torch.Tensor:
        """The attention unchanged; `rows`: the grid tokens its query axis holds when only those were computed."""
        return super().forward(attention, grid)

    def select_queries(self, queries: QueryPoints | None) -> None:
        """The query points whose rows capture keeps (see attnviz.capture.QueryPoints); None for every row."""
        self._queries = queries

    def connect(self, owner: nn.Module) -> list[torch.utils.hooks.RemovableHandle]:
        """Hook the source submodule of `owner` (this tap's parent); capture removes the returned handles."""
        self._seen = 0
        if self.transform in RECIPES:
            return self._connect_recipe(owner)
        if self.function is not None:
            return self._connect_call(owner)
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

    def _connect_call(self, owner: nn.Module) -> list[torch.utils.hooks.RemovableHandle]:
        """Watch the forward of the source for the tapped functional call (see `functional.CallCatcher`)."""
        module = owner.get_submodule(self.source)
        catcher = CallCatcher(module, self.function or "", self.call or 0, partial(self._on_call, module))
        return catcher.connect()

    def _on_call(self, module: nn.Module, output: torch.Tensor, grid: tuple[int, int] | None) -> None:
        """Record the output of the tapped functional call, when it has the shape the tap expects."""
        batch = output.shape[0] if output.dim() else 0
        if self.transform == POSITIONS:
            if grid is None or output.numel() != batch * grid[0] * grid[1]:
                return
            value = output.reshape(batch, *grid)
        elif self.transform == "plane" and (output.dim() != 4 or output.shape[1] != 1):
            return
        else:
            value = TRANSFORMS[self.transform](module, output)
        self(value)  # returns None to the catcher: the forward gets the call's output untouched

    def _connect_recipe(self, owner: nn.Module) -> list[torch.utils.hooks.RemovableHandle]:
        """Hook the module's call, the submodules the recipe reads, and its trigger (`source`)."""
        self._call, self._caught = None, {}
        module = owner.get_submodule(self.base)
        handles = [module.register_forward_pre_hook(self._on_module_call, with_kwargs=True)]
        for path in self.inputs:
            handles.append(owner.get_submodule(path).register_forward_hook(partial(self._catch, path)))
        handles.append(owner.get_submodule(self.source).register_forward_hook(partial(self._on_trigger, module)))
        return handles

    def _on_module_call(self, _module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """A new call of the module: remember its arguments, forget the last call's tensors."""
        self._call, self._caught = (args, kwargs), {}

    def _catch(self, path: str, _module: nn.Module, _args: tuple[Any, ...], output: Any) -> None:
        self._caught[path] = output

    def _on_trigger(self, module: nn.Module, _source: nn.Module, _args: tuple[Any, ...], output: Any) -> None:
        """The last tensor the recipe needs has arrived: recompute the attention and record it."""
        call, caught = self._call, self._caught
        self._call, self._caught = None, {}  # hold no tensor of this call beyond it
        if call is None or any(path not in caught for path in self.inputs):
            return  # the trigger ran outside a call of the module as tapped (e.g. called on its own)
        outputs = (*(caught[path] for path in self.inputs), output)
        found = Found(module, outputs, *call, params=self.params, queries=self._queries)
        with torch.no_grad():
            emitted = RECIPES[self.transform](found)
        if emitted is not None:
            value, grid, rows = emitted
            self(value, grid=grid, rows=rows)  # returns None to the hook: the module's tensors are untouched

    def extra_repr(self) -> str:
        """The Tap's description plus where the tensor comes from."""
        call = f", call={self.call}" if self.call is not None else ""
        function = f", function={self.function}" if self.function is not None else ""
        return f"{super().extra_repr()}, source={self.source}, transform={self.transform}{function}{call}"


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
