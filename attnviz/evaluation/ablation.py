"""Gate ablation: does the network use what the gate shows? Replace a block's gates and watch the prediction.

Every block sends the attention it applies through a `Tap` and multiplies (or weighs) with the tap's output, so a
forward hook that returns a replaced tensor changes what the block applies. Three replacements:
- "one": no preference: 1 for a sigmoid gate, the uniform weights (1 / N over the axes it sums to 1 over) for a
  softmax or sum-to-one one;
- "mean": the gate's mean over everything but the batch, per image (keeps its overall level, drops its pattern);
- "shuffle": the same values moved: positions permuted for gates with a place (spatial, coordinate, gate, level:
  over height, width, node and time jointly; matrices: over the keys), channels permuted for channel and selection
  weights. A block that ignored its gate's pattern would not notice.
`gate_ablation` reports, per block layer (all its taps replaced together) and for all layers at once, the drop
in the true class's mean softmax probability and in accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from attnviz.blocks.base import Tap
from attnviz.capture import evaluating, find_taps
from attnviz.errors import UsageError

ABLATIONS = ("one", "mean", "shuffle")
PLACE_AXES = ("height", "width", "node", "time")


def shuffled_axes(tap: Tap) -> tuple[str, ...]:
    """The axes a "shuffle" ablation permutes for `tap`."""
    if tap.kind == "matrix":
        return ("key",)
    if tap.kind in ("channel", "selection"):
        return ("channel",) if "channel" in tap.axes else tap.axes[-1:]
    place = tuple(axis for axis in tap.axes if axis in PLACE_AXES)
    return place or tap.axes[-1:]


def replaced(value: torch.Tensor, tap: Tap, mode: str, generator: torch.Generator) -> torch.Tensor:
    """`value` (the tap's tensor) with its gate replaced as `mode` says (see the module docstring)."""
    if mode == "one":
        if tap.norm in ("softmax", "sum_to_one"):
            count = math.prod(value.shape[tap.axes.index(axis)] for axis in tap.over)
            return torch.full_like(value, 1.0 / count)
        return torch.ones_like(value)
    if mode == "mean":
        dims = tuple(range(1, value.dim()))
        return value.mean(dim=dims, keepdim=True).expand_as(value).contiguous()
    if mode == "shuffle":
        return _permuted(value, [tap.axes.index(axis) for axis in shuffled_axes(tap)], generator)
    raise UsageError(f"unknown ablation {mode!r}", f"choose from: {', '.join(ABLATIONS)}")


def _permuted(value: torch.Tensor, dims: list[int], generator: torch.Generator) -> torch.Tensor:
    """`value` with the positions along `dims` (taken jointly) in a random order, the same for every image."""
    rest = [d for d in range(value.dim()) if d not in dims]
    moved = value.permute(*rest, *dims)
    flat = moved.reshape(*moved.shape[: len(rest)], -1)
    order = torch.randperm(flat.shape[-1], generator=generator).to(value.device)
    shuffled = flat.index_select(-1, order).reshape(moved.shape)
    return shuffled.permute(*torch.argsort(torch.tensor(rest + dims)).tolist()).contiguous()


@contextmanager
def ablated(model: nn.Module, layers: Sequence[str] | None, mode: str, *, seed: int = 0) -> Iterator[list[str]]:
    """While the with-block runs, every tap of the blocks at `layers` (all blocks for None) hands its block the
    replaced gate. Yields the tap paths replaced; the hooks go on exit, also after an exception."""
    if mode not in ABLATIONS:
        raise UsageError(f"unknown ablation {mode!r}", f"choose from: {', '.join(ABLATIONS)}")
    generator = torch.Generator().manual_seed(seed)
    handles = []
    paths = []
    for path, (tap, layer, _block) in find_taps(model).items():
        if layers is not None and layer not in layers:
            continue

        def hook(module: nn.Module, _args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
            return replaced(output, module, mode, generator)

        handles.append(tap.register_forward_hook(hook))
        paths.append(path)
    try:
        yield paths
    finally:
        for handle in handles:
            handle.remove()


def _true_class_outcome(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int
) -> tuple[float, float]:
    """(mean softmax probability of the true class, accuracy) over `images`."""
    probability = correct = 0.0
    with torch.no_grad():
        for start in range(0, len(labels), batch):
            logits = model(images[start : start + batch])
            target = labels[start : start + batch]
            probability += float(logits.softmax(1).gather(1, target[:, None]).sum())
            correct += float((logits.argmax(1) == target).sum())
    return probability / len(labels), correct / len(labels)


def gate_ablation(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    layers: Iterable[str] | None = None,
    modes: Sequence[str] = ABLATIONS,
    batch_size: int = 50,
    seed: int = 0,
) -> dict[str, Any]:
    """Drops in the true class's probability and in accuracy when each layer's gates (and all at once) are replaced.

    Args:
        model: A network with attnviz's blocks (their taps are what gets replaced).
        images: (N, 3, H, W) scenes; labels: (N,) their classes.
        layers: Block paths to ablate one at a time (default: every block with a tap).
        modes: Replacements, from ABLATIONS.
        batch_size: Images per forward pass.
        seed: Seed of the "shuffle" permutations.

    Returns:
        {"scenes", "probability", "accuracy", "layers": {layer: {mode: {"prob_drop", "acc_drop"}}}, "all": ...}.
    """
    taps = find_taps(model)
    chosen = list(layers) if layers is not None else list(dict.fromkeys(layer for _, layer, _ in taps.values()))
    with evaluating(model):
        probability, accuracy = _true_class_outcome(model, images, labels, batch_size)

        def drops(selected: Sequence[str] | None) -> dict[str, dict[str, float]]:
            result = {}
            for mode in modes:
                with ablated(model, selected, mode, seed=seed):
                    p, acc = _true_class_outcome(model, images, labels, batch_size)
                result[mode] = {"prob_drop": probability - p, "acc_drop": accuracy - acc}
            return result

        per_layer = {layer: drops([layer]) for layer in chosen}
        together = drops(chosen)
    return {
        "scenes": len(labels),
        "probability": probability,
        "accuracy": accuracy,
        "modes": list(modes),
        "layers": per_layer,
        "all": together,
    }
