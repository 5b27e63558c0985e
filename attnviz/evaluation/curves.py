"""Deletion and insertion curves (Petsiuk, Das, Saenko, RISE, BMVC 2018): remove or reveal pixels in a map's order.

Deletion: the scene's pixels are replaced, most important first, by 0 in the normalised input (the data set's mean
colour); the true class's softmax probability is read after each of `steps` equal steps, from the whole scene to
none of it. A map that finds what the network uses makes it fall fast: a low area under the curve. Insertion: the
pixels are revealed in the same order onto a Gaussian blur of the scene (sigma = side / 20 px); a high area is
good. Ties in a map are broken at random (seeded), so a flat region is not revealed in raster order. The area is
the trapezoid rule over the fraction of pixels, 0..1.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from attnviz.capture import evaluating


def ranking(heat: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pixel indices (row-major) from the map's largest value to its smallest, ties in random order."""
    flat = np.asarray(heat, dtype=np.float64).ravel()
    return np.lexsort((rng.random(flat.size), -flat))


def area(curve: np.ndarray) -> float:
    """Trapezoid area under a curve sampled at equal steps over 0..1."""
    curve = np.asarray(curve, dtype=np.float64)
    return float(((curve[1:] + curve[:-1]) / 2).mean()) if curve.size > 1 else float("nan")


def blurred(images: torch.Tensor) -> torch.Tensor:
    """The insertion curve's start: a Gaussian blur with sigma = side / 20 px."""
    from torchvision.transforms.functional import gaussian_blur

    sigma = max(images.shape[-2:]) / 20
    kernel = 2 * int(np.ceil(3 * sigma)) + 1
    return gaussian_blur(images, [kernel, kernel], [sigma, sigma])


def _masks(orders: np.ndarray, fraction: float, shape: tuple[int, int]) -> torch.Tensor:
    """(N, 1, H, W) True at the first `fraction` of each scene's pixels in its order."""
    count = round(fraction * orders.shape[1])
    chosen = np.zeros(orders.shape, dtype=bool)
    np.put_along_axis(chosen, orders[:, :count], True, axis=1)
    return torch.from_numpy(chosen.reshape(len(orders), 1, *shape))


def _probability(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int) -> np.ndarray:
    out = []
    with torch.no_grad():
        for start in range(0, len(labels), batch):
            logits = model(images[start : start + batch])
            out.append(logits.softmax(1).gather(1, labels[start : start + batch, None])[:, 0].numpy())
    return np.concatenate(out)


def deletion_insertion(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    maps: dict[str, np.ndarray],
    *,
    steps: int = 10,
    batch_size: int = 50,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Per map source, the deletion and insertion AUC of the true class's probability, and both mean curves.

    Args:
        model: The classifier.
        images: (N, 3, H, W) normalised scenes; labels: (N,) their classes.
        maps: Source name -> (N, H, W) maps at the scenes' resolution, one per scene.
        steps: Equal steps from none to all of the pixels.
        batch_size: Images per forward pass.
        seed: Seed of the tie-breaking.

    Returns:
        {source: {"deletion": auc, "insertion": auc, "deletion_curve": [...], "insertion_curve": [...]}}.
    """
    rng = np.random.default_rng(seed)
    shape = tuple(images.shape[-2:])
    start = blurred(images)
    results = {}
    with evaluating(model):
        full = _probability(model, images, labels, batch_size)
        empty = _probability(model, torch.zeros_like(images), labels, batch_size)
        base = _probability(model, start, labels, batch_size)
        for name, heats in maps.items():
            orders = np.stack([ranking(heat, rng) for heat in heats])
            deletion, insertion = [full], [base]
            for step in range(1, steps):
                chosen = _masks(orders, step / steps, shape)
                deletion.append(_probability(model, images.masked_fill(chosen, 0.0), labels, batch_size))
                insertion.append(_probability(model, torch.where(chosen, images, start), labels, batch_size))
            deletion.append(empty)
            insertion.append(full)
            deletion_curve, insertion_curve = np.stack(deletion).mean(1), np.stack(insertion).mean(1)
            results[name] = {
                "deletion": area(deletion_curve),
                "insertion": area(insertion_curve),
                "deletion_curve": [round(float(v), 4) for v in deletion_curve],
                "insertion_curve": [round(float(v), 4) for v in insertion_curve],
            }
    return results
