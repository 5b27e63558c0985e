"""Test helper: record what every Tap in a module emits during one call (independent of attnviz.capture)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from attnviz.blocks.base import Tap


@dataclass
class Fired:
    path: str
    tap: Tap
    value: torch.Tensor
    grid: tuple[int, int] | None


@contextmanager
def record_taps(module: nn.Module) -> Iterator[list[Fired]]:
    """Yield a list that fills with one `Fired` per tap call, in call order; hooks are removed on exit."""
    fired: list[Fired] = []
    handles = []

    def make_hook(path: str, tap: Tap) -> Callable[..., None]:
        def hook(_mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: torch.Tensor) -> None:
            grid = kwargs.get("grid", args[1] if len(args) > 1 else None)
            fired.append(Fired(path, tap, output.detach().clone(), grid))

        return hook

    for path, sub in module.named_modules():
        if isinstance(sub, Tap):
            handles.append(sub.register_forward_hook(make_hook(path, sub), with_kwargs=True))
    try:
        yield fired
    finally:
        for handle in handles:
            handle.remove()


def flatten_outputs(output: Any) -> list[torch.Tensor]:
    """Every tensor in a (possibly nested) output, in order."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        output = list(output.values())
    return [t for item in output for t in flatten_outputs(item)]
