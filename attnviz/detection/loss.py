"""Training targets and loss of the detector in `attnviz.detection.model` (CenterNet's, per pyramid level).

Zhou, Wang, Krähenbühl. "Objects as Points", arXiv 2019 (arXiv:1904.07850).

Each object is the target of one level (`assign_level`, by its box's longer side). On that level, in the cell
(row, col) holding the box centre (cx, cy), with sx, sy the level's input pixels per cell:
  heatmap  channel `label`: a Gaussian exp(-d^2 / 2 sigma^2) over cells around (row, col), exactly 1 there,
           sigma = max(0.5, longer side in cells / 6); overlapping Gaussians of one class keep the maximum
  size     (log(w / sx), log(h / sy))
  offset   (cx / sx - col - 0.5, cy / sy - row - 0.5): the centre relative to the cell centre, in cells
loss = focal + size + offset:
  focal  = -1/N sum over every cell, class and level of
           (1 - p)^2 log p             where the target is 1 (N of them: the objects)
           (1 - y)^4 p^2 log(1 - p)    elsewhere (y: the Gaussian target, which lowers the penalty near centres)
  size, offset: L1, averaged over the objects, read at their centre cells only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from attnviz.detection.model import DetectorConfig, LevelOutput, assign_level, cell_scale

MIN_SIGMA = 0.5  # cells: even a one-cell object gets neighbours with a reduced penalty


@dataclass
class LevelTargets:
    """What one level should predict for a batch.

    Attributes:
        heatmap: (B, K, h, w) Gaussian centre targets in [0, 1], exactly 1 at the centre cells.
        index: (N, 3) long: batch index, row and column of each object's centre cell.
        size: (N, 2) log box width and height in cells.
        offset: (N, 2) centre offset from the cell centre, in cells.
    """

    heatmap: torch.Tensor
    index: torch.Tensor
    size: torch.Tensor
    offset: torch.Tensor


def build_targets(
    targets: list[dict[str, torch.Tensor]],
    grids: list[tuple[int, int]],
    input_size: tuple[int, int],
    config: DetectorConfig,
    *,
    device: torch.device | None = None,
) -> list[LevelTargets]:
    """Per level, the targets of a batch whose ground truth is `targets` (DetectionDataset's target dicts).

    Args:
        targets: Per image, "boxes" (N, 4) x0, y0, x1, y1 in input pixels and "labels" (N,).
        grids: (h, w) of each level's output.
        input_size: (width, height) of the input.
        config: The detector's config (classes and level bounds).
        device: Where the target tensors go.
    """
    batch = len(targets)
    heatmaps = [torch.zeros(batch, config.num_classes, h, w) for h, w in grids]
    index: list[list[tuple[int, int, int]]] = [[] for _ in grids]
    sizes: list[list[tuple[float, float]]] = [[] for _ in grids]
    offsets: list[list[tuple[float, float]]] = [[] for _ in grids]
    for b, target in enumerate(targets):
        for box, label in zip(target["boxes"].tolist(), target["labels"].tolist(), strict=True):
            x0, y0, x1, y1 = box
            bw, bh = x1 - x0, y1 - y0
            if bw <= 0 or bh <= 0:
                continue
            level = assign_level(max(bw, bh), config)
            h, w = grids[level]
            sx, sy = cell_scale(input_size, (h, w))
            fx, fy = (x0 + x1) / 2 / sx, (y0 + y1) / 2 / sy
            col, row = min(w - 1, max(0, int(fx))), min(h - 1, max(0, int(fy)))
            sigma = max(MIN_SIGMA, max(bw / sx, bh / sy) / 6)
            _draw_gaussian(heatmaps[level][b, int(label)], row, col, sigma)
            index[level].append((b, row, col))
            sizes[level].append((math.log(bw / sx), math.log(bh / sy)))
            offsets[level].append((fx - col - 0.5, fy - row - 0.5))
    return [
        LevelTargets(
            heatmap.to(device),
            torch.tensor(index[level], dtype=torch.long).reshape(-1, 3).to(device),
            torch.tensor(sizes[level], dtype=torch.float32).reshape(-1, 2).to(device),
            torch.tensor(offsets[level], dtype=torch.float32).reshape(-1, 2).to(device),
        )
        for level, heatmap in enumerate(heatmaps)
    ]


def _draw_gaussian(plane: torch.Tensor, row: int, col: int, sigma: float) -> None:
    """Raise `plane` (h, w) in place to a Gaussian around (row, col) where it is lower; exactly 1 at the centre."""
    h, w = plane.shape
    rows = (torch.arange(h, dtype=torch.float32) - row).square().unsqueeze(1)
    cols = (torch.arange(w, dtype=torch.float32) - col).square().unsqueeze(0)
    torch.maximum(plane, torch.exp(-(rows + cols) / (2 * sigma**2)), out=plane)
    plane[row, col] = 1.0


def focal_loss(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, int]:
    """CenterNet's penalty-reduced focal loss, summed (not averaged); and the number of positive cells."""
    logits = logits.float()
    positive = target >= 1.0
    prob = logits.sigmoid()
    pos = F.logsigmoid(logits) * (1 - prob).square()
    neg = F.logsigmoid(-logits) * prob.square() * (1 - target).pow(4)
    return -(pos[positive].sum() + neg[~positive].sum()), int(positive.sum())


def detector_loss(outputs: list[LevelOutput], targets: list[LevelTargets]) -> tuple[torch.Tensor, dict[str, float]]:
    """(total loss, its parts as floats: "heatmap", "size", "offset") for one batch."""
    heat_sum = outputs[0][0].new_zeros(())
    positives = 0
    size_errors, offset_errors = [], []
    for (heat, size, offset), target in zip(outputs, targets, strict=True):
        loss, count = focal_loss(heat, target.heatmap)
        heat_sum = heat_sum + loss
        positives += count
        if target.index.numel():
            b, row, col = target.index.unbind(1)
            size_errors.append((size[b, :, row, col].float() - target.size).abs().sum(1))
            offset_errors.append((offset[b, :, row, col].float() - target.offset).abs().sum(1))
    heatmap = heat_sum / max(1, positives)
    size_loss = torch.cat(size_errors).mean() if size_errors else heatmap.new_zeros(())
    offset_loss = torch.cat(offset_errors).mean() if offset_errors else heatmap.new_zeros(())
    total = heatmap + size_loss + offset_loss
    parts = {"heatmap": heatmap.item(), "size": size_loss.item(), "offset": offset_loss.item()}
    return total, parts
