"""Localisation protocols with their rules written down: pointing game, energy-based pointing game, AUROC.

Every protocol scores one map (at the scene's resolution) against one object mask:
- pointing game: a hit when a maximal pixel of the map lies inside the object mask dilated by a tolerance (a
  square of side 2 * tolerance + 1). Ties: any maximal pixel counts (pixels within `TIE_RTOL` of the maximum's
  magnitude are maximal, so float noise of upsampling does not break a tie). A constant map is never a hit.
  Two tolerances are reported: the caller's (`tolerance`, in input pixels) and the standard 15 px at 224 px input,
  scaled to the scene's side and rounded (`standard_tolerance`: 6 px at 96, 4 px at 64).
- energy-based pointing game (Wang et al., Score-CAM, CVPR-W 2020): the share of the min-subtracted map's mass
  inside the object mask (not its box); a constant map spreads evenly, so it scores the mask's area share.
- energy ratio: that share over the mask's area share (1 = no better than spread evenly).
- AUROC of the map's values as a score for "this pixel is object" (tied values count half).
Empty masks (an object wholly hidden) are excluded from every protocol and counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

TIE_RTOL = 1e-6
"""Pixels within TIE_RTOL * max(|max|, max - min) of the maximum count as maximal (ties)."""
STANDARD_PIXELS, STANDARD_SIDE = 15, 224
"""The usual pointing-game tolerance: 15 px at a 224 px input."""
METRICS = ("pointing", "pointing_std", "energy_pointing", "auroc", "energy")


def standard_tolerance(side: int) -> int:
    """The standard 15 px at 224 px, scaled to a scene of `side` pixels and rounded to whole pixels."""
    return round(STANDARD_PIXELS * side / STANDARD_SIDE)


def protocol_description(tolerance: int, side: int, upsample: str) -> dict[str, Any]:
    """The protocols' names, parameters and rules, as written into every result."""
    return {
        "pointing": {
            "tolerance_px": tolerance,
            "rule": "hit when a maximal pixel lies in the object mask dilated by the tolerance (square)",
        },
        "pointing_std": {
            "tolerance_px": standard_tolerance(side),
            "rule": f"the same with the standard {STANDARD_PIXELS} px at {STANDARD_SIDE} px, "
            f"scaled by side/{STANDARD_SIDE} = {side}/{STANDARD_SIDE} and rounded",
        },
        "ties": f"any maximal pixel counts (within {TIE_RTOL:g} of the maximum's magnitude)",
        "constant_map": "never a pointing hit; energy spread evenly",
        "energy_pointing": "share of the min-subtracted map's mass inside the object mask",
        "energy": "energy_pointing over the mask's area share (1 = spread evenly)",
        "auroc": "map values as a pixel-level object score, tied values count half",
        "empty_masks": "excluded from every protocol and counted",
        "upsample": upsample,
        "scene_side_px": side,
    }


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


def is_constant(heat: np.ndarray) -> bool:
    """Whether the map holds one value (up to float noise)."""
    low, high = float(heat.min()), float(heat.max())
    return high - low <= TIE_RTOL * max(1.0, abs(high), abs(low))


def maximal_pixels(heat: np.ndarray) -> np.ndarray:
    """Boolean mask of the map's maximal pixels, ties included."""
    low, high = float(heat.min()), float(heat.max())
    return heat >= high - TIE_RTOL * max(abs(high), high - low)


def pointing_hit(heat: np.ndarray, tolerant_mask: np.ndarray) -> bool:
    """Whether any maximal pixel of the map lies inside the tolerant mask; never for a constant map."""
    if is_constant(heat):
        return False
    return bool((maximal_pixels(heat) & tolerant_mask).any())


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
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1  # tied scores share their average rank
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [scores.size]])
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def energy_share(heat: np.ndarray, mask: np.ndarray) -> float:
    """Energy-based pointing game: the min-subtracted map's share inside the mask (NaN for an empty mask)."""
    if not mask.any():
        return float("nan")
    energy = heat.astype(np.float64) - float(heat.min())
    total = energy.sum()
    if is_constant(heat) or total <= 0:
        return float(mask.mean())
    return float(energy[mask].sum() / total)


def energy_ratio(heat: np.ndarray, mask: np.ndarray) -> float:
    """The energy share over the mask's area share (1 = spread evenly; NaN for an empty mask)."""
    return energy_share(heat, mask) / float(mask.mean()) if mask.any() else float("nan")


@dataclass(frozen=True)
class Target:
    """One scene's object mask with both tolerant versions, made once and shared by every map scored on it."""

    mask: np.ndarray
    tolerant: np.ndarray
    tolerant_std: np.ndarray

    @classmethod
    def of(cls, mask: np.ndarray, tolerance: int) -> Target:
        mask = np.asarray(mask, dtype=bool)
        std = standard_tolerance(min(mask.shape))
        return cls(mask, dilate(mask, tolerance), dilate(mask, std))

    @property
    def empty(self) -> bool:
        return not self.mask.any()


@dataclass
class Scores:
    """Per-scene scores of one map source, in scene order (NaN where a scene's mask is empty)."""

    values: dict[str, list[float]] = field(default_factory=lambda: {metric: [] for metric in METRICS})

    def add(self, heat: np.ndarray, target: Target) -> None:
        if target.empty:
            for metric in METRICS:
                self.values[metric].append(float("nan"))
            return
        mask = target.mask
        self.values["pointing"].append(float(pointing_hit(heat, target.tolerant)))
        self.values["pointing_std"].append(float(pointing_hit(heat, target.tolerant_std)))
        self.values["energy_pointing"].append(energy_share(heat, mask))
        self.values["auroc"].append(auroc(heat, mask))
        self.values["energy"].append(energy_ratio(heat, mask))

    def __len__(self) -> int:
        return len(self.values["pointing"])

    def summary(self, scenes: slice | None = None) -> dict[str, Any]:
        """Mean of every protocol over `scenes` (all by default), the scored count and the empty masks left out."""
        part = {
            metric: np.asarray(values[scenes or slice(None)], dtype=np.float64)
            for metric, values in self.values.items()
        }
        pointing = part["pointing"]
        scored = int(np.isfinite(pointing).sum())
        result: dict[str, Any] = {metric: _mean(values) for metric, values in part.items()}
        result["n"] = scored
        result["empty_masks"] = int(pointing.size - scored)
        return result


def _mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")
