"""A detector's ASFF weights on one image: run the image under capture, gather the weights per level and per box.

`analyse_detector(loaded, image)` takes a detector read by `attnviz.detection.files.load_detector` and returns every
ASFF module's level weights (fine to coarse) and, for attnviz detectors, the detections with the mean weight of each
source level inside each box, read from the ASFF module of the level that found the box.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from attnviz.detection import LEVEL_NAMES
from attnviz.detection.files import LoadedDetector
from attnviz.detection.model import decode, size_bucket
from attnviz.errors import AttnvizError, option
from attnviz.images import Geometry, map_to_original, preprocess
from attnviz.io.photos import load_image

SAME_OBJECT_IOU = 0.7  # boxes of different classes overlapping more than this are one object: the best label is drawn


@dataclass
class LevelMap:
    """One ASFF module's fusion weights on one image.

    Attributes:
        layer: Module path ("asff.0", or the foreign module's path).
        type: Class name of the module.
        planes: (3, h, w) weights of the source levels, fine to coarse, summing to 1 over the levels per cell.
        source_strides: Input pixels per cell of each source level, fine to coarse (None when unknown).
        order_known: False when a foreign module's inputs did not show which level is which.
    """

    layer: str
    type: str
    planes: np.ndarray
    source_strides: list[float] | None
    order_known: bool = True

    @property
    def grid(self) -> tuple[int, int]:
        """(h, w) cells of the level this module outputs."""
        return int(self.planes.shape[1]), int(self.planes.shape[2])

    def stride(self, input_size: int) -> float:
        """Input pixels per cell of the level this module outputs, for a square input of `input_size`."""
        return input_size / self.grid[0]


@dataclass
class BoxResult:
    """One detection: where (input and original pixels), what, and the mean source-level weights inside it."""

    box_input: tuple[float, float, float, float]
    box: tuple[float, float, float, float]
    label: int
    name: str
    score: float
    level: int
    side: float
    bucket: str
    weights: np.ndarray

    def summary(self) -> dict[str, Any]:
        """JSON-ready: class, score, boxes (rounded), level, size and the mean weight of each source level."""
        return {
            "class": self.name,
            "label": self.label,
            "score": round(self.score, 4),
            "box": [round(v, 1) for v in self.box],
            "box_input": [round(v, 1) for v in self.box_input],
            "level": self.level,
            "side": round(self.side, 1),
            "size": self.bucket,
            "level_weights": {name: round(float(w), 4) for name, w in zip(LEVEL_NAMES, self.weights, strict=True)},
        }


@dataclass
class DetectorAnalysis:
    """One photo through a detector: the photo, how it was fed in, the ASFF maps and (attnviz detectors) the boxes.

    Attributes:
        path: The image file.
        image: The photo.
        geometry: How the photo was fitted into the square model input.
        levels: One map per ASFF module, fine output level first.
        detections: The boxes, best first; None for a foreign model, whose outputs are not decoded.
    """

    path: Path
    image: Image.Image
    geometry: Geometry
    levels: list[LevelMap]
    detections: list[BoxResult] | None

    @property
    def input_size(self) -> int:
        """Side of the square model input the photo was fed in at."""
        return self.geometry.input_size[0]

    @property
    def mode(self) -> str:
        """How the photo was fitted into the input: "resize", "crop" or "letterbox"."""
        return self.geometry.mode

    def on_photo(self, cells: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
        """A map covering the model input drawn on the photo (at `size`, width x height); NaN where unseen."""
        return map_to_original(np.asarray(cells, dtype=np.float32), self.geometry, size=size)


def analyse_detector(
    loaded: LoadedDetector,
    path: str | os.PathLike[str],
    *,
    size: int | None = None,
    mode: str = "letterbox",
    score: float = 0.3,
    iou: float = 0.5,
    max_detections: int = 100,
    image: Image.Image | None = None,
) -> DetectorAnalysis:
    """Run one image through the detector under capture (see the module docstring).

    Args:
        loaded: The detector.
        path: The image file.
        size: Side of the square input (default: the detector's training size; 416 for a foreign model).
        mode: How the photo is fitted into the input: "resize", "crop" or "letterbox".
        score: Keep detections with at least this score.
        iou: Boxes of one class overlapping more than this are suppressed.
        max_detections: Most boxes kept, best first.
        image: The photo, when already read from `path`.

    Raises:
        AttnvizError: a foreign model fails on the input, or none of its ASFF modules ran.
    """
    from attnviz.capture import capture
    from attnviz.finite import check_finite
    from attnviz.maps import level_planes

    photo = image if image is not None else load_image(path)
    side = loaded.input_size(size)
    tensor, geometry = preprocess(photo, size=side, mode=mode, mean=loaded.mean, std=loaded.std)
    layers = [m.path for m in loaded.modules]
    try:
        with torch.inference_mode(), capture(loaded.model, kinds=["level"], layers=layers) as rec:
            output = loaded.model(tensor.to(loaded.device))
    except AttnvizError:
        raise
    except Exception as exc:
        if loaded.native:
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise AttnvizError(
            f"the model failed on a 1x3x{side}x{side} input ({type(exc).__name__}: {first})",
            f"give {option('size')} the input size the model was made for",
        ) from exc
    check_finite(loaded.model, tensor.to(loaded.device), output, (m.tensor for m in rec))
    levels = _level_maps(loaded, rec, level_planes, side)
    if not levels:
        raise AttnvizError(f"none of the ASFF modules of {loaded.path} ran on the image", f"check {option('size')}")
    detections = None
    if loaded.native:
        found = decode(
            output, (side, side), score=score, iou=iou, max_detections=max_detections, agnostic_iou=SAME_OBJECT_IOU
        )[0]
        detections = _box_results(loaded, found, levels, geometry, side)
    return DetectorAnalysis(Path(path), photo, geometry, levels, detections)


def _level_maps(loaded: LoadedDetector, rec: Any, level_planes: Any, side: int) -> list[LevelMap]:
    """The first call's map of every ASFF module, fine target level first (largest map first)."""
    levels = []
    types = {m.path: m.type for m in loaded.modules}
    for m in rec:
        if m.call != 0:
            continue
        tap = rec.taps.get(m.tap)
        planes = level_planes(m)[0]
        if loaded.config is not None:
            strides: list[float] | None = [float(s) for s in loaded.config.strides]
            known = True
        else:
            sizes = getattr(tap, "source_sizes", None)
            strides = [side / h for h, _ in sizes] if sizes else None
            known = sizes is not None
        levels.append(LevelMap(m.layer, types.get(m.layer, m.block), planes, strides, known))
    return sorted(levels, key=lambda lv: -lv.grid[0] * lv.grid[1])


def _box_results(
    loaded: LoadedDetector, found: dict[str, torch.Tensor], levels: list[LevelMap], geometry: Geometry, side: int
) -> list[BoxResult]:
    from attnviz.detection.metrics import mean_in_box

    assert loaded.config is not None
    by_layer = {lv.layer: lv for lv in levels}
    results = []
    columns = [found[key].tolist() for key in ("boxes", "labels", "scores", "levels")]
    for box, label, score, level in zip(*columns, strict=True):
        x0, y0, x1, y1 = box
        ox0, oy0 = geometry.to_original(x0, y0)
        ox1, oy1 = geometry.to_original(x1, y1)
        width, height = geometry.original_size
        original = (max(0.0, ox0), max(0.0, oy0), min(float(width), ox1), min(float(height), oy1))
        if original[2] <= original[0] or original[3] <= original[1]:
            continue  # entirely in the letterbox padding: nothing of the photo is in it
        side_px = max(x1 - x0, y1 - y0)
        weights = mean_in_box(by_layer[f"asff.{level}"].planes, box, (side, side))
        name = loaded.classes[label] if label < len(loaded.classes) else f"class {label}"
        bucket = size_bucket(side_px, loaded.config)
        results.append(BoxResult(tuple(box), original, label, name, score, level, side_px, bucket, weights))
    return results
