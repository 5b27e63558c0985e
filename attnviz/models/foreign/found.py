"""What a recipe-mode ForeignTap caught during one call of its module (`Found`), and what a recipe returns.

The recipes live in `recompute` (timm's self-attention, torch's MultiheadAttention) and `yolo` (the YOLO family's);
both read a `Found` and return an `Emission`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from attnviz.capture import QueryPoints

Grid = tuple[int, int]
Emission = tuple[torch.Tensor, Grid | None, list[int] | None]
"""(the tapped tensor, its token grid, the grid tokens its query axis holds when only those were computed)."""


@dataclass
class Found:
    """What a recipe-mode ForeignTap caught during one call of its module.

    Attributes:
        module: The attention module.
        outputs: The outputs of the hooked submodules, in the order the tap names them (its trigger last).
        args: The module's positional arguments.
        kwargs: The module's keyword arguments.
        params: The tap's layout parameters (e.g. "prefix", "grid").
        queries: The query points capture keeps (attnviz.capture.QueryPoints); None for every row.
    """

    module: nn.Module
    outputs: tuple[Any, ...]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    queries: QueryPoints | None = None

    def rows(self, grid: Grid) -> list[int] | None:
        """The grid tokens (row-major) of the asked query points; None when every row is wanted."""
        return self.queries.rows(grid) if self.queries is not None else None

    @property
    def module_device(self) -> torch.device | None:
        """Where the module's tensors are (its first parameter's device; None, the default, without any)."""
        parameter = next(self.module.parameters(), None)
        return parameter.device if parameter is not None else None

    def argument(self, position: int, name: str) -> Any:
        """The call's argument `name`, given by keyword or at `position`; None when not given."""
        if name in self.kwargs:
            return self.kwargs[name]
        return self.args[position] if len(self.args) > position else None


def token_index(rows: list[int] | None, count: int, device: torch.device | None) -> torch.Tensor:
    """The token indices a matrix keeps: `rows`, or all `count` of them."""
    return torch.arange(count, device=device) if rows is None else torch.tensor(rows, device=device)
