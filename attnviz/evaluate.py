"""Measuring whether attention lands on the object: held-out scenes with known masks, per layer.

For every spatial-type map (spatial maps, Coordinate Attention's a_h x a_w, attention-matrix rows of the pixel at
the object's centre), drawn at the image's resolution:
- pointing game: the map's maximum lies inside the object mask dilated by `tolerance` pixels;
- AUROC of the map's values as a score for "this pixel is object";
- energy ratio: the share of the map's (min-subtracted) mass inside the mask, over the mask's share of the image
  (1 = no better than spread evenly).
The same numbers are computed for Grad-CAM on the same model at the same stage, and for a uniform random map.
Why pixel level: at a coarse stage a one-cell tolerance makes even a random map hit 50-90% of the time.

For channel maps (and selection maps, SK's and S2-MLPv2's per-branch weights of each channel, read as one vector):
how class-specific the weights are: a linear probe trained on half of the images predicts the class from the weight
vector on the other half (chance = 1 / number of classes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from attnviz.capture import capture
from attnviz.maps import AttentionMap, channel_vector, coordinate_outer, plane, query_plane, selection_weights
from attnviz.models.backbones import stage_outputs

SPATIAL = ("spatial", "coordinate", "matrix")


def dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Binary dilation by a (2*pixels+1)^2 square, with numpy only."""
    out = mask.copy()
    for axis in (0, 1):
        grown = out.copy()
        for shift in range(1, pixels + 1):
            grown |= np.roll(out, shift, axis=axis) & _valid(out.shape, axis, shift)
            grown |= np.roll(out, -shift, axis=axis) & _valid(out.shape, axis, -shift)
        out = grown
    return out


def _valid(shape: tuple[int, ...], axis: int, shift: int) -> np.ndarray:
    """Mask of positions np.roll filled from inside the array (not wrapped around)."""
    valid = np.ones(shape, dtype=bool)
    index = [slice(None)] * len(shape)
    index[axis] = slice(0, shift) if shift > 0 else slice(shift, None)
    valid[tuple(index)] = False
    return valid


def pointing_hit(heat: np.ndarray, tolerant_mask: np.ndarray) -> bool:
    """Whether the map's maximum (first one, in row-major order) lies inside the tolerant mask."""
    return bool(tolerant_mask.flat[int(np.argmax(heat))])


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for the `positive` pixels (ties count half); NaN if one class is empty."""
    scores, positive = scores.ravel(), positive.ravel()
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(scores.size, dtype=np.float64)
    sorted_scores = scores[order]
    # average ranks of ties
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [scores.size]])
    average = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(average, ends - starts)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def energy_ratio(heat: np.ndarray, mask: np.ndarray) -> float:
    """Share of the min-subtracted map inside the mask, over the mask's share of the image (NaN for a flat map)."""
    energy = heat - heat.min()
    total = energy.sum()
    if total <= 0 or not mask.any():
        return float("nan")
    return float((energy[mask].sum() / total) / mask.mean())


@dataclass
class Scores:
    """Running sums of the three localisation numbers for one (layer, source)."""

    hits: int = 0
    aurocs: list[float] = field(default_factory=list)
    energies: list[float] = field(default_factory=list)
    count: int = 0

    def add(self, heat: np.ndarray, mask: np.ndarray, tolerant: np.ndarray) -> None:
        self.count += 1
        self.hits += pointing_hit(heat, tolerant)
        self.aurocs.append(auroc(heat, mask))
        self.energies.append(energy_ratio(heat, mask))

    def summary(self) -> dict[str, float]:
        return {
            "pointing": self.hits / max(self.count, 1),
            "auroc": float(np.nanmean(self.aurocs)) if self.aurocs else float("nan"),
            "energy": float(np.nanmean(self.energies)) if self.energies else float("nan"),
            "n": self.count,
        }


def upsample(cells: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A map covering the whole (square, resized) input, bilinearly upsampled to `size` (height, width)."""
    tensor = torch.from_numpy(np.ascontiguousarray(cells, dtype=np.float32))[None, None]
    return torch.nn.functional.interpolate(tensor, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def spatial_heats(maps: list[AttentionMap], index: int, mask: np.ndarray) -> Iterable[tuple[str, np.ndarray]]:
    """(layer:label, map at image resolution) for every spatial-type map of image `index` in a recording."""
    size = mask.shape
    coordinate: dict[str, list[AttentionMap]] = {}
    for m in maps:
        if m.kind == "spatial":
            yield m.name, upsample(plane(m)[index], size)
        elif m.kind == "coordinate":
            coordinate.setdefault(m.layer, []).append(m)
        elif m.kind == "matrix" and m.tokens == "grid" and m.grid is not None:
            row, col = _centre_cell(mask, m.grid)
            rows = query_plane(m, row * m.grid[1] + col)[index].mean(axis=0)
            yield f"{m.name}@centre", upsample(rows, size)
    for layer, pair in coordinate.items():
        if len(pair) >= 2:
            yield f"{layer}:a_h*a_w", upsample(coordinate_outer(pair[0], pair[1])[index], size)


def _centre_cell(mask: np.ndarray, grid: tuple[int, int]) -> tuple[int, int]:
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    cy, cx = (ys.mean() + 0.5, xs.mean() + 0.5) if ys.size else (h / 2, w / 2)
    return min(grid[0] - 1, int(cy * grid[0] / h)), min(grid[1] - 1, int(cx * grid[1] / w))


def linear_probe(features: np.ndarray, labels: np.ndarray, classes: int, *, seed: int = 0) -> float:
    """Accuracy on the second half of a softmax-regression probe trained on the first half (standardised)."""
    half = len(labels) // 2
    x = torch.from_numpy(features).float()
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

    optimizer.step(closure)
    with torch.no_grad():
        return float((probe(x[half:]).argmax(1) == y[half:]).float().mean())


@dataclass
class EvalResult:
    """Accuracy and localisation numbers: per attention map, per stage for Grad-CAM, and for a random map."""

    accuracy: float
    images: int
    classes: int
    maps: dict[str, dict[str, Any]]
    gradcam: dict[int, dict[str, float]]
    random: dict[str, float]
    channel: dict[str, dict[str, float]]
    cam_method: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "images": self.images,
            "classes": self.classes,
            "maps": self.maps,
            "gradcam": {str(k): v for k, v in self.gradcam.items()},
            "cam_method": self.cam_method,
            "random": self.random,
            "channel": self.channel,
        }

    def best_stage(self) -> dict[str, Any] | None:
        """The map that localises best (highest pointing game, then AUROC), with its stage."""
        if not self.maps:
            return None
        name = max(self.maps, key=lambda n: (self.maps[n]["pointing"], self.maps[n]["auroc"]))
        return {"map": name, **self.maps[name]}


def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    *,
    classes: int,
    tolerance: int = 4,
    cam: str | None = "gradcam",
    seed: int = 0,
    on_batch: Callable[[int], None] | None = None,
) -> EvalResult:
    """Score every layer of `model` on `batches` of (images, labels, masks); see the module docstring."""
    rng = np.random.default_rng(seed)
    per_map: dict[str, Scores] = {}
    per_stage: dict[int, Scores] = {}
    random_scores = Scores()
    vectors: dict[str, list[np.ndarray]] = {}
    labels_seen: list[np.ndarray] = []
    correct = seen = 0
    cams = _cam_runners(model, cam)
    model.eval()
    for images, labels, masks in batches:
        with torch.no_grad(), capture(model, kinds=(*SPATIAL, "channel", "selection")) as rec:
            logits = model(images)
        predicted = logits.argmax(1)
        correct += int((predicted == labels).sum())
        seen += labels.shape[0]
        labels_seen.append(labels.numpy())
        for m in rec.of_kind("channel"):
            vectors.setdefault(m.name, []).append(channel_vector(m))
        for m in rec.of_kind("selection"):
            vectors.setdefault(m.name, []).append(selection_weights(m).reshape(labels.shape[0], -1))
        cam_maps = {stage: runner(images, predicted) for stage, runner in cams.items()}
        spatial_maps = [m for m in rec if m.kind in SPATIAL]
        for i in range(labels.shape[0]):
            mask = masks[i].numpy().astype(bool)
            tolerant = dilate(mask, tolerance)
            for name, heat in spatial_heats(spatial_maps, i, mask):
                per_map.setdefault(name, Scores()).add(heat, mask, tolerant)
            for stage, cmaps in cam_maps.items():
                per_stage.setdefault(stage, Scores()).add(upsample(cmaps[i], mask.shape), mask, tolerant)
            random_scores.add(rng.random(mask.shape, dtype=np.float32), mask, tolerant)
        if on_batch is not None:
            on_batch(labels.shape[0])
    labels_all = np.concatenate(labels_seen)
    channel = {
        name: {
            "probe_accuracy": linear_probe(np.concatenate(parts), labels_all, classes, seed=seed),
            "chance": 1.0 / classes,
            "stage": _stage_of(model, name),
        }
        for name, parts in vectors.items()
    }
    maps = {name: {"stage": _stage_of(model, name), **scores.summary()} for name, scores in per_map.items()}
    return EvalResult(
        correct / max(seen, 1),
        seen,
        classes,
        maps,
        {s: sc.summary() for s, sc in sorted(per_stage.items())},
        random_scores.summary(),
        channel,
        cam,
    )


def _stage_of(model: nn.Module, map_name: str) -> int | None:
    """The stage of the block a map comes from (its tap may sit in a submodule, e.g. `layer3.0.attn.attention`)."""
    layer = map_name.split(":")[0]
    for path, stage in model.attnviz_blocks.items():
        if layer == path or layer.startswith(path + "."):
            return stage
    return None


def _cam_runners(model: nn.Module, method: str | None) -> dict[int, Callable[[torch.Tensor, torch.Tensor], np.ndarray]]:
    """Per stage, a function (images, target classes) -> (B, h, w) CAMs from the grad-cam package."""
    if not method:
        return {}
    from attnviz.cam import cam_for_layer

    return {stage: cam_for_layer(model, module, method) for stage, module in stage_outputs(model).items()}
