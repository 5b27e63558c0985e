"""Gates a module applies with a functional call in its own forward (`torch.sigmoid(...)`, `x.sigmoid()`,
`F.hardsigmoid`, `F.softmax`...): seeing them in the probe's dummy forward, and catching them while capture runs.

Both use a `torch.overrides.TorchFunctionMode`, which sees every torch call made while it is on the mode stack. A
watched call is attributed to the module whose own `forward` made it: the calling Python frame (passing through
torch's thin Python wrappers such as `F.softmax`) must run the code of a running module's forward, with that module
as its `self`. A call made in a helper function the forward calls is not attributed.

- In the probe, `GateWatch` is on the stack for the whole dummy forward. It records every watched call (and every
  output of a sigmoid-like module) as a `GateCall`, and follows each gate through shape and elementwise ops to the
  multiplication that applies it, to learn the shape of the features it scales.
- While capture runs, a `CallCatcher` is on the stack only during its module's forward (a forward pre-hook pushes
  it, a forward hook that also runs after an exception pops it), so the rest of the model runs without it. It hands
  the k-th call of one family that the forward makes to the tap; outputs are returned untouched.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from types import CodeType, FrameType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

SIGMOID = "sigmoid"
SOFTMAX = "softmax"

FUNCTIONS: dict[Callable[..., Any], str] = {
    torch.sigmoid: SIGMOID,
    torch.sigmoid_: SIGMOID,
    torch.Tensor.sigmoid: SIGMOID,  # also what F.sigmoid calls
    torch.Tensor.sigmoid_: SIGMOID,
    torch.special.expit: SIGMOID,
    F.hardsigmoid: SIGMOID,
    torch.softmax: SOFTMAX,
    torch.Tensor.softmax: SOFTMAX,
    torch.special.softmax: SOFTMAX,
    F.softmax: SOFTMAX,
}
"""The functional calls watched, by the family they belong to (hard sigmoid counts as a sigmoid: values in [0, 1])."""

MULTIPLY = frozenset({torch.mul, torch.multiply, torch.Tensor.mul, torch.Tensor.mul_, torch.Tensor.multiply})
"""How a gate is applied (`x * g` and `x *= g` arrive as Tensor.mul and Tensor.mul_)."""

EXPAND = frozenset({torch.Tensor.expand, torch.Tensor.expand_as, torch.broadcast_to, torch.Tensor.broadcast_to})

_WRAPPERS = frozenset(
    getattr(f, "__code__", None) for f in (F.sigmoid, F.hardsigmoid, F.softmax, torch.overrides.handle_torch_function)
)
"""Code of the torch Python functions whose frames lie between a forward and the mode (with this file's own)."""

_FRAME_DEPTH = 12


def is_sigmoid(module: nn.Module) -> bool:
    """Whether `module` is a sigmoid-like activation (no children, no log-sigmoid)."""
    name = type(module).__name__.lower()
    return "sigmoid" in name and "log" not in name and not list(module.children())


def forward_codes(module: nn.Module) -> frozenset[CodeType]:
    """The code objects of `module`'s forward and of the forwards it overrides (`super().forward(x)` runs one of
    those with the same `self`), decorators unwrapped."""
    functions = [getattr(module.forward, "__func__", module.forward)]
    functions += [cls.__dict__["forward"] for cls in type(module).__mro__[1:] if "forward" in cls.__dict__]
    codes = (getattr(inspect.unwrap(function), "__code__", None) for function in functions)
    return frozenset(code for code in codes if code is not None)


def _calling_frame(codes: dict[CodeType, Any] | frozenset[CodeType]) -> FrameType | None:
    """The nearest frame up the stack that runs one of `codes`, reached through torch's wrappers only."""
    frame: FrameType | None = sys._getframe(1)
    for _ in range(_FRAME_DEPTH):
        if frame is None:
            return None
        if frame.f_code in codes:
            return frame
        if frame.f_code not in _WRAPPERS and frame.f_globals is not globals():
            return None
        frame = frame.f_back
    return None


def _self_of(frame: FrameType) -> Any:
    """The first argument (`self`) of the function `frame` runs."""
    code = frame.f_code
    return frame.f_locals.get(code.co_varnames[0]) if code.co_argcount else None


def _a_gate_module(module: nn.Module) -> bool:
    """Whether `module` is torch's own (nn.Sigmoid, nn.Softmax...) or sigmoid-like: its calls are its output."""
    return type(module).__module__.startswith("torch.") or is_sigmoid(module)


def _softmax_dim(args: tuple[Any, ...], kwargs: dict[str, Any], out: torch.Tensor) -> int | None:
    """The axis a softmax call normalised, non-negative; None when it was left implicit."""
    dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
    return dim % out.dim() if isinstance(dim, int) and out.dim() else None


# ------------------------------------------------------------------------------------------------ the probe


@dataclass
class GateCall:
    """One call of a gate candidate in the probe's forward.

    Attributes:
        path: The sigmoid-like module that returned it, or the module whose forward made the functional call.
        function: None for a module's output; else the family of the functional call (`SIGMOID`, `SOFTMAX`).
        index: A module's call number in the whole forward; a functional call's number among the calls of its
            family that its module's forward made (only the module's first call is recorded).
        tick: When: the count of module calls started and functional gate calls recorded, this one included.
        shape: Its shape.
        dim: For a softmax, the axis it normalised.
        scales: Shape of the 4-D features the gate (or a reshaped view of it) first multiplied, if it did.
    """

    path: str
    function: str | None
    index: int
    tick: int
    shape: tuple[int, ...]
    dim: int | None = None
    scales: tuple[int, ...] | None = None


@dataclass
class _Run:
    """One call of a module in progress."""

    path: str
    module: nn.Module
    first: bool
    counts: dict[str, int] = field(default_factory=dict)


class GateWatch(TorchFunctionMode):
    """The probe's mode: records gate candidates and the features each one scales (see the module docstring).

    The probe calls `enter` and `leave` around every module call (leave also after an exception) and
    `module_output` with every output of a sigmoid-like module.

    Attributes:
        gates: The gate candidates, in call order.
        tick: The count of module calls started and functional gate calls recorded so far.
    """

    def __init__(self) -> None:
        super().__init__()
        self.gates: list[GateCall] = []
        self.tick = 0
        self._started: set[str] = set()
        self._running: dict[CodeType, list[_Run]] = {}
        self._tracked: dict[int, tuple[torch.Tensor, GateCall]] = {}  # id -> (the tensor, kept alive; its gate)

    def enter(self, path: str, module: nn.Module) -> None:
        """A call of the module at `path` starts."""
        self.tick += 1
        run = _Run(path, module, path not in self._started)
        for code in forward_codes(module):
            self._running.setdefault(code, []).append(run)
        self._started.add(path)

    def leave(self, module: nn.Module) -> None:
        """The innermost running call of `module` ended."""
        for code in forward_codes(module):
            runs = self._running.get(code, [])
            for position in range(len(runs) - 1, -1, -1):
                if runs[position].module is module:
                    del runs[position]
                    break

    def module_output(self, path: str, index: int, output: Any) -> None:
        """Call `index` of the sigmoid-like module at `path` returned `output`."""
        if isinstance(output, torch.Tensor):
            self._add(GateCall(path, None, index, self.tick, tuple(output.shape)), output)

    def forget(self) -> None:
        """Drop the tensors kept for following gates."""
        self._tracked.clear()
        self._running.clear()

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: tuple[type, ...],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self._tracked:
            self._follow(func, args, out)
        family = FUNCTIONS.get(func)
        if family is not None and isinstance(out, torch.Tensor):
            self._record(family, args, kwargs, out)
        return out

    def _record(self, family: str, args: tuple[Any, ...], kwargs: dict[str, Any], out: torch.Tensor) -> None:
        """A watched call: count it for the module whose forward made it; record it on that module's first call."""
        frame = _calling_frame(self._running)
        if frame is None:
            return
        owner = _self_of(frame)
        run = next((r for r in reversed(self._running[frame.f_code]) if r.module is owner), None)
        if run is None:
            return
        index = run.counts.get(family, 0)
        run.counts[family] = index + 1
        if run.first and not _a_gate_module(run.module):
            dim = _softmax_dim(args, kwargs, out) if family == SOFTMAX else None
            self.tick += 1
            self._add(GateCall(run.path, family, index, self.tick, tuple(out.shape), dim), out)

    def _add(self, gate: GateCall, tensor: torch.Tensor) -> None:
        self.gates.append(gate)
        self._tracked[id(tensor)] = (tensor, gate)

    def _follow(self, func: Callable[..., Any], args: tuple[Any, ...], out: Any) -> None:
        """Follow a gate through reshapes and elementwise ops; note what the multiplication applying it scales."""
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        found = [(a, self._tracked[id(a)][1]) for a in tensors if self._tracked.get(id(a), (None,))[0] is a]
        if not found:
            return
        tensor, gate = found[0]
        if func in MULTIPLY:
            features = [a for a in tensors if all(a is not t for t, _ in found) and a.dim() == 4]
            if features and features[0].shape[0] == gate.shape[0]:  # the gate applied: its product is no gate
                gate.scales = gate.scales or tuple(features[0].shape)
                return
        if isinstance(out, torch.Tensor) and (out.numel() == tensor.numel() or func in EXPAND):
            self._tracked[id(out)] = (out, gate)


# ---------------------------------------------------------------------------------------------- capture time


class CallCatcher(TorchFunctionMode):
    """While `module`'s forward runs: hands call `call` of the `family` functions it makes to `on_call`.

    Args:
        module: The module whose own forward makes the call.
        family: `SIGMOID` or `SOFTMAX`.
        call: Which of that forward's calls of the family (0-based), counted afresh at each call of `module`.
        on_call: Called with the call's output and the (h, w) of the module's 4-D input (None if it had none).
    """

    def __init__(
        self,
        module: nn.Module,
        family: str,
        call: int,
        on_call: Callable[[torch.Tensor, tuple[int, int] | None], None],
    ) -> None:
        super().__init__()
        self.module = module
        self.codes = forward_codes(module)
        self.functions = frozenset(f for f, kind in FUNCTIONS.items() if kind == family)
        self.call = call
        self.on_call = on_call
        self.seen = 0
        self.grid: tuple[int, int] | None = None
        self.depth = 0

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: tuple[type, ...],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        if func in self.functions and isinstance(out, torch.Tensor):
            frame = _calling_frame(self.codes)
            if frame is not None and _self_of(frame) is self.module:
                index, self.seen = self.seen, self.seen + 1
                if index == self.call:
                    self.on_call(out, self.grid)  # returns nothing: `out` goes back to the forward as it is
        return out

    def connect(self) -> list[torch.utils.hooks.RemovableHandle]:
        """Push this mode at each call of the module and pop it when the call ends, also by an exception."""
        return [
            self.module.register_forward_pre_hook(self._on_enter),
            self.module.register_forward_hook(self._on_leave, always_call=True),
        ]

    def _on_enter(self, _module: nn.Module, args: tuple[Any, ...]) -> None:
        self.depth += 1
        if self.depth > 1:  # the module called inside its own forward: the mode is on the stack already
            return
        self.seen = 0
        first = args[0] if args else None
        self.grid = tuple(first.shape[-2:]) if isinstance(first, torch.Tensor) and first.dim() == 4 else None
        self.__enter__()

    def _on_leave(self, _module: nn.Module, _args: tuple[Any, ...], _output: Any) -> None:
        if self.depth == 0:  # connected while this call was already under way: nothing was pushed
            return
        self.depth -= 1
        if self.depth == 0:
            self.__exit__(None, None, None)
