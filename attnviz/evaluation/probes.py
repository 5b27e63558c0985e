"""Linear probes: how well a vector per image predicts its class, for channel weights and for their baseline.

A channel gate's weights are a function of the block's input, so a probe on them says little on its own: the
baseline is the same probe on the block's input features, average-pooled to one value per channel. Weights that
probe no better than their input add nothing a linear read-out of the features did not have.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn


def linear_probe(features: np.ndarray, labels: np.ndarray, classes: int, *, seed: int = 0) -> float:
    """Accuracy on the second half of a softmax-regression probe trained on the first half (standardised)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a problem this small runs 10-40x slower when its threads wait for a busy CPU
    try:
        return _fit_and_test(features, labels, classes, seed)
    finally:
        torch.set_num_threads(threads)


def _fit_and_test(features: np.ndarray, labels: np.ndarray, classes: int, seed: int) -> float:
    half = len(labels) // 2
    x = torch.from_numpy(np.asarray(features)).float()
    spread = x[:half].std(0, correction=1 if half > 1 else 0)  # one training image has no sample deviation
    x = (x - x[:half].mean(0)) / (spread + 1e-6)
    y = torch.from_numpy(labels).long()
    generator = torch.Generator().manual_seed(seed)
    probe = nn.Linear(x.shape[1], classes)
    with torch.no_grad():
        probe.weight.normal_(0, 0.01, generator=generator)
        probe.bias.zero_()
    optimizer = torch.optim.LBFGS(probe.parameters(), lr=0.5, max_iter=200)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(probe(x[:half]), y[:half]) + 1e-3 * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        return float((probe(x[half:]).argmax(1) == y[half:]).float().mean())


@contextmanager
def pooled_inputs(
    model: nn.Module, layers: Iterable[str], collected: dict[str, list[np.ndarray]] | None = None
) -> Iterator[dict[str, list[np.ndarray]]]:
    """While the with-block runs, collect each block's input, average-pooled to (B, C), per block path (appended to
    `collected` when given)."""
    collected = {} if collected is None else collected
    handles = []
    for layer in dict.fromkeys(layers):

        def hook(_module: nn.Module, args: tuple[Any, ...], layer: str = layer) -> None:
            if args and isinstance(args[0], torch.Tensor) and args[0].dim() == 4:
                collected.setdefault(layer, []).append(args[0].detach().float().mean(dim=(2, 3)).cpu().numpy())

        handles.append(model.get_submodule(layer).register_forward_pre_hook(hook))
    try:
        yield collected
    finally:
        for handle in handles:
            handle.remove()
