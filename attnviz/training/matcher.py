"""Keeping retrained stages close to what the plain base computes there (`fit --train-stages`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


class StageMatcher:
    """A loss that keeps the outputs of retrained stages close to what the plain base computes there.

    Blocks that transform features (SK's convs, ShuffleAttention's channel shuffle, S2-MLP's shifts, CoT) wreck
    what a trained backbone computes, and the frozen stages after them cannot follow: with only the classification
    loss, SK in stages 1-3 of the scenes base stayed at chance after an epoch even with those stages training. Asking
    each retrained stage to reproduce the base's output (mean squared error relative to the output's mean square,
    averaged over the stages, times `weight`) brought it to 80% in 60 steps.

    Args:
        model: The model being trained (with blocks).
        teacher: The plain base, frozen, in eval mode.
        paths: Module paths (the same in both models) whose outputs are matched.
        weight: Factor of the loss.
    """

    def __init__(self, model: nn.Module, teacher: nn.Module, paths: list[str], weight: float) -> None:
        self.teacher, self.weight = teacher, weight
        self._student: dict[str, torch.Tensor] = {}
        self._target: dict[str, torch.Tensor] = {}
        self._handles = [
            module.get_submodule(path).register_forward_hook(self._keeper(store, path))
            for module, store in ((model, self._student), (teacher, self._target))
            for path in paths
        ]

    @staticmethod
    def _keeper(store: dict[str, torch.Tensor], path: str) -> Callable[..., None]:
        def keep(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            store[path] = output

        return keep

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """The loss for the student's latest forward on `images`."""
        with torch.no_grad():
            self.teacher(images)
        terms = [
            (self._student[path] - target).pow(2).mean() / target.pow(2).mean().clamp_min(1e-12)
            for path, target in self._target.items()
        ]
        self._student.clear()
        self._target.clear()
        return self.weight * torch.stack(terms).mean()

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
