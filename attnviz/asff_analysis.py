"""A detector's ASFF weights on one image: load the detector, run the image under capture, gather per level and box.

`load_detector(path)` reads an attnviz detector file (det.pt, or a fit-det checkpoint) without running code from it,
or, with `trust`, a pickled model (itself, or under "ema"/"model" as YOLO-style repositories save them) whose
ASFF-like modules are found by structure (`attnviz.models.foreign_asff`). `analyse_detector` runs one photo and
returns every ASFF module's level weights (fine to coarse) and, for attnviz detectors, the detections with the mean
weight of each source level inside each box, read from the ASFF module of the level that found the box.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from attnviz.errors import AttnvizError, UsageError
from attnviz.images import IMAGENET_MEAN, IMAGENET_STD, Geometry, load_image, map_to_original, preprocess
from attnviz.models import LEVEL_NAMES
from attnviz.models.detector import Detector, DetectorConfig, size_bucket
from attnviz.models.foreign_asff import FusionModule

FOREIGN_SIZE = 416  # input side for foreign detectors when --size is not given (YOLOv3's usual test size)
SAME_OBJECT_IOU = 0.7  # boxes of different classes overlapping more than this are one object: the best label is drawn
FOREIGN_MEAN, FOREIGN_STD = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # YOLO-style repositories feed 0..1 RGB


@dataclass
class LoadedDetector:
    """A detector ready to analyse images, and what is known about it.

    `config` is None for a foreign model: its outputs are unknown, so no detections are decoded for it.
    """

    model: nn.Module
    path: Path
    source: str
    modules: list[FusionModule]
    config: DetectorConfig | None = None
    classes: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def native(self) -> bool:
        return self.config is not None

    @property
    def trained(self) -> bool:
        return bool(self.metrics.get("epochs")) or not self.native

    @property
    def mean(self) -> tuple[float, ...]:
        return IMAGENET_MEAN if self.native else FOREIGN_MEAN

    @property
    def std(self) -> tuple[float, ...]:
        return IMAGENET_STD if self.native else FOREIGN_STD

    def input_size(self, size: int | None) -> int:
        """--size if given, else the size the detector was trained at (416 for a foreign model)."""
        return size or (self.config.input_size if self.config is not None else FOREIGN_SIZE)


def load_detector(
    path: str | os.PathLike[str], *, trust: bool = False, device: torch.device | None = None
) -> LoadedDetector:
    """Read `path` and find the ASFF modules of the detector it holds.

    Raises:
        UsageError: missing file; not a detector (a classifier's weights, a bare state dict...); a pickled model
            without `trust` (UntrustedCheckpointError; nothing from the file has run); no ASFF-like module.
        CheckpointError: a corrupt or truncated file, or weights that do not fit their config.
    """
    from attnviz.models.detector import detector_from_checkpoint, load_detector_file
    from attnviz.models.foreign_asff import attach_level_taps

    path = Path(path)
    device = device or torch.device("cpu")
    contents, not_detector = load_detector_file(path, trust=trust)
    if not_detector is not None:
        raise UsageError(
            not_detector, "give a detector file written by attnviz fit-det, or a pickled model with --trust"
        )
    if isinstance(contents, dict) and not any(isinstance(contents.get(k), nn.Module) for k in ("ema", "model")):
        model, metrics = detector_from_checkpoint(contents, str(path))
        source = describe_detector(model.config, path, metrics)
    else:
        model = _module_of(contents)
        metrics = {}
        source = f"the pickled model {path} ({type(model).__name__})"
    model = model.float().eval()
    modules, unmatched = attach_level_taps(model)
    if not modules:
        raise UsageError(*_no_asff_message(path, model, unmatched))
    config = model.config if isinstance(model, Detector) else None
    classes = list(model.classes) if isinstance(model, Detector) else []
    return LoadedDetector(model.to(device), path, source, modules, config, classes, metrics, device)


def _module_of(contents: Any) -> nn.Module:
    """The model of a trusted pickle: the module itself, else its "ema" (as YOLO repositories prefer), else "model"."""
    if isinstance(contents, nn.Module):
        return contents
    for key in ("ema", "model"):
        if isinstance(contents.get(key), nn.Module):
            return contents[key]
    raise AssertionError("load_detector_file returned a dict without a module")  # pragma: no cover


def describe_detector(config: DetectorConfig, path: Path, metrics: dict[str, Any]) -> str:
    what = f"attnviz detector ({config.backbone}, {'ASFF' if config.asff else 'no ASFF'}, {config.input_size} px)"
    if not metrics.get("epochs"):
        return f"{what} from {path}, untrained"
    score = metrics.get("val_map50")
    scored = f", val mAP@0.5 {score:.3f}" if isinstance(score, float) else ""
    epochs = int(metrics["epochs"])
    return f"{what} from {path}, trained {epochs} epoch{'s' if epochs != 1 else ''}{scored}"


def _no_asff_message(path: Path, model: nn.Module, unmatched: list[tuple[str, str]]) -> tuple[str, str]:
    if isinstance(model, Detector):
        return (
            f"{path} is a detector without ASFF modules (trained with --no-asff): it has no fusion weights to draw",
            "train one with ASFF: attnviz fit-det --out det.pt",
        )
    listed = ", ".join(f"{p} ({t})" for p, t in unmatched[:3])
    named = f"; ASFF-named modules that do not fit it: {listed}" if unmatched else ""
    return (
        f"no ASFF-like module was found in {path}{named}",
        "looked for a module fusing three inputs with softmax weights from a 1x1 'weight_levels' conv to 3 channels",
    )


# ------------------------------------------------------------------------------------------------------ analysis


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
        return int(self.planes.shape[1]), int(self.planes.shape[2])

    def stride(self, input_size: int) -> float:
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
    """One photo through a detector: the photo, how it was fed in, the ASFF maps and (attnviz detectors) the boxes."""

    path: Path
    image: Image.Image
    geometry: Geometry
    levels: list[LevelMap]
    detections: list[BoxResult] | None

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

    Raises:
        AttnvizError: a foreign model fails on the input, or none of its ASFF modules ran.
    """
    from attnviz.capture import capture
    from attnviz.maps import level_planes
    from attnviz.models.detector import decode

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
            "give --size the input size the model was made for",
        ) from exc
    levels = _level_maps(loaded, rec, level_planes, side)
    if not levels:
        raise AttnvizError(f"none of the ASFF modules of {loaded.path} ran on the image", "check --size")
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
    from attnviz.evaluate_det import mean_in_box

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
