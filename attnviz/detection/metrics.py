"""Scoring a detector and its ASFF weights on held-out detection scenes.

- mAP@0.5: VOC-style average precision per class (detections sorted by score, each matched greedily to the unmatched
  ground-truth box of its class and image with the highest IoU >= 0.5; AP is the area under the precision-recall
  curve with all-point interpolation, i.e. precision made monotone from the right), averaged over the classes that
  have ground truth in the scenes. A class with objects and no detection scores 0.
- Spearman's rank correlation between each ground-truth object's size (sqrt of its box area) and the mean weight of
  the coarsest source level inside its box. The weights come from the ASFF module of the object's assigned level (the
  fusion that feeds the head responsible for it), so the number says whether the fusion that serves bigger objects
  draws more on coarse features; the same correlation read from the finest ASFF module (whose map covers every
  object at the highest resolution) is reported beside it. Ties get average ranks; fewer than three objects or a
  constant variable give NaN with the reason.
- Mean level shares per size bucket (small / medium / large, the level each object is assigned to).

`score_scenes` scores a detector on held-out procedural scenes (what `attnviz eval-det` reports);
`score_batches` on any batches of (images, targets).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from attnviz.detection.checks import check_scene_options
from attnviz.detection.model import SIZE_BUCKETS, Detector, assign_level, decode

COARSEST = 2


# ------------------------------------------------------------------------------------------------------ metrics


def box_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) IoU of x0, y0, x1, y1 boxes."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 4), np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under a precision-recall curve with all-point interpolation (VOC 2010 and later)."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


@dataclass
class Detections:
    """One image's boxes: (N, 4) x0, y0, x1, y1; labels (N,); scores (N,) (ground truth has no scores)."""

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray | None = None


def mean_average_precision(
    detections: Sequence[Detections], truths: Sequence[Detections], *, iou: float = 0.5
) -> tuple[float, dict[int, float]]:
    """(mAP over the classes with ground truth, AP per such class); NaN when there is no ground truth at all."""
    classes = sorted({int(c) for t in truths for c in t.labels})
    per_class = {c: _class_ap(detections, truths, c, iou) for c in classes}
    return (float(np.mean(list(per_class.values()))) if per_class else math.nan), per_class


def _class_ap(detections: Sequence[Detections], truths: Sequence[Detections], cls: int, iou: float) -> float:
    gt = [t.boxes[t.labels == cls] for t in truths]
    total = sum(len(g) for g in gt)
    found = [
        (float(score), image, box)
        for image, d in enumerate(detections)
        for box, label, score in zip(d.boxes, d.labels, d.scores if d.scores is not None else [], strict=True)
        if int(label) == cls
    ]
    if not found:
        return 0.0
    found.sort(key=lambda item: -item[0])
    matched = [np.zeros(len(g), dtype=bool) for g in gt]
    hits = np.zeros(len(found))
    for k, (_, image, box) in enumerate(found):
        if not len(gt[image]):
            continue
        overlaps = box_iou_matrix(box[None], gt[image])[0]
        overlaps[matched[image]] = -1.0
        best = int(np.argmax(overlaps))
        if overlaps[best] >= iou:
            matched[image][best] = True
            hits[k] = 1.0
    true_positives = np.cumsum(hits)
    recall = true_positives / total
    precision = true_positives / np.arange(1, len(found) + 1)
    return average_precision(recall, precision)


def rank_average(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the average of their ranks."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    start = 0
    for end in range(1, len(values) + 1):
        if end == len(values) or sorted_values[end] != sorted_values[start]:
            ranks[order[start:end]] = (start + end + 1) / 2  # mean of ranks start+1 .. end
            start = end
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float, str | None]:
    """(Spearman's rho, None), or (NaN, why it is undefined)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 3:
        return math.nan, f"needs at least 3 objects, got {len(x)}"
    rx, ry = rank_average(x), rank_average(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = math.sqrt(float((rx**2).sum() * (ry**2).sum()))
    if denominator == 0:
        which = "object size" if not (rx != 0).any() else "the coarse-level weight"
        return math.nan, f"{which} is the same for every object"
    return float((rx * ry).sum() / denominator), None


# --------------------------------------------------------------------------------------------- weights in boxes


def mean_in_box(planes: np.ndarray, box: Sequence[float], input_size: tuple[int, int]) -> np.ndarray:
    """Mean of each (h, w) plane of `planes` (L, h, w) over the cells whose centres lie inside `box`.

    Args:
        planes: Level weights at one ASFF module's resolution, covering the whole input.
        box: x0, y0, x1, y1 in input pixels.
        input_size: (width, height) of the input.

    A box too small to hold a cell centre takes the cell holding its centre.
    """
    _, h, w = planes.shape
    sx, sy = input_size[0] / w, input_size[1] / h
    x0, y0, x1, y1 = (float(v) for v in box)
    cols = np.flatnonzero(((np.arange(w) + 0.5) * sx >= x0) & ((np.arange(w) + 0.5) * sx < x1))
    rows = np.flatnonzero(((np.arange(h) + 0.5) * sy >= y0) & ((np.arange(h) + 0.5) * sy < y1))
    if not cols.size or not rows.size:
        cols = np.array([min(w - 1, max(0, int((x0 + x1) / 2 / sx)))])
        rows = np.array([min(h - 1, max(0, int((y0 + y1) / 2 / sy)))])
    return planes[:, rows][:, :, cols].reshape(planes.shape[0], -1).mean(axis=1)


# ------------------------------------------------------------------------------------------------- evaluation


@dataclass
class DetectorScores:
    """What `score_batches` measured."""

    images: int = 0
    objects: int = 0
    map50: float = math.nan
    ap_per_class: dict[str, float] = field(default_factory=dict)
    spearman: float = math.nan
    spearman_reason: str | None = None
    spearman_finest: float = math.nan
    spearman_finest_reason: str | None = None
    level_shares: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, NaN as None (the `--json` result of eval-det, less the detector)."""

        def number(value: float) -> float | None:
            return None if math.isnan(value) else round(value, 4)

        return {
            "images": self.images,
            "objects": self.objects,
            "map50": number(self.map50),
            "ap_per_class": {k: number(v) for k, v in self.ap_per_class.items()},
            "spearman": {
                "rho": number(self.spearman),
                "reason": self.spearman_reason,
                "weights_from": "the ASFF module of each object's assigned level",
            },
            "spearman_finest": {
                "rho": number(self.spearman_finest),
                "reason": self.spearman_finest_reason,
                "weights_from": "the finest ASFF module",
            },
            "level_shares": self.level_shares,
        }


def score_batches(
    model: Detector,
    batches: Iterable[tuple[torch.Tensor, list[dict[str, torch.Tensor]]]],
    *,
    score: float = 0.01,
    device: torch.device | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> DetectorScores:
    """mAP@0.5, size vs coarse-weight correlations and level shares of `model` over `batches` (see module docs)."""
    from attnviz.capture import capture
    from attnviz.maps import level_planes

    device = device or torch.device("cpu")
    config = model.config
    found: list[Detections] = []
    truths: list[Detections] = []
    sizes: list[float] = []
    coarse: list[float] = []
    coarse_finest: list[float] = []
    shares: dict[str, list[np.ndarray]] = {bucket: [] for bucket in SIZE_BUCKETS}
    for images, targets in batches:
        size = (images.shape[-1], images.shape[-2])
        with torch.inference_mode(), capture(model, kinds=["level"]) as rec:
            outputs = model(images.to(device))
        planes = {m.layer: level_planes(m) for m in rec if m.call == 0}
        for b, result in enumerate(decode(outputs, size, score=score)):
            found.append(Detections(*(result[k].cpu().numpy() for k in ("boxes", "labels", "scores"))))
            truth = Detections(targets[b]["boxes"].numpy(), targets[b]["labels"].numpy())
            truths.append(truth)
            if not planes:
                continue
            for box in truth.boxes:
                side = float(max(box[2] - box[0], box[3] - box[1]))
                level = assign_level(side, config)
                weights = mean_in_box(planes[f"asff.{level}"][b], box, size)
                sizes.append(math.sqrt(max(0.0, float((box[2] - box[0]) * (box[3] - box[1])))))
                coarse.append(float(weights[COARSEST]))
                coarse_finest.append(float(mean_in_box(planes["asff.0"][b], box, size)[COARSEST]))
                shares[SIZE_BUCKETS[level]].append(weights)
        if on_batch is not None:
            on_batch(images.shape[0])
    scores = DetectorScores(images=len(truths), objects=sum(len(t.labels) for t in truths))
    scores.map50, per_class = mean_average_precision(found, truths)
    scores.ap_per_class = {model.classes[c]: ap for c, ap in per_class.items()}
    if not config.asff:
        reason = "the detector has no ASFF modules"
        scores.spearman_reason = scores.spearman_finest_reason = reason
    else:
        scores.spearman, scores.spearman_reason = spearman(sizes, coarse)
        scores.spearman_finest, scores.spearman_finest_reason = spearman(sizes, coarse_finest)
    scores.level_shares = {
        bucket: {"objects": len(values), "weights": [round(float(v), 4) for v in np.mean(values, axis=0)]}
        for bucket, values in shares.items()
        if values
    }
    return scores


def score_scenes(
    model: Detector,
    *,
    n: int = 200,
    score: float = 0.01,
    batch_size: int = 16,
    max_objects: int = 6,
    device: torch.device | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> DetectorScores:
    """Score `model` on `n` held-out scenes (the test split, never trained on) at its training input size.

    Args:
        model: The detector, on `device`.
        n: Scenes to score.
        score: Lowest detection score counted for the mAP.
        batch_size: Scenes per forward pass.
        max_objects: Most objects in one scene.
        device: Where the model runs (CPU when None).
        on_batch: Called with the number of scenes after every batch.

    Raises:
        UsageError: a count below 1 or a score outside 0..1 (`attnviz.detection.checks.check_scene_options`).
    """
    from torch.utils.data import DataLoader

    from attnviz.data.datasets import DetectionDataset, collate_detection

    check_scene_options(n=n, score=score, batch_size=batch_size, max_objects=max_objects)
    dataset = DetectionDataset("test", n, model.config.input_size, max_objects=max_objects, augment=False)
    batches = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_detection)
    return score_batches(model, batches, score=score, device=device, on_batch=on_batch)
