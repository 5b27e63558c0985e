"""The ASFF detector and what attnviz does with it: train it, score it, read its fusion weights on a photo.

    model     Detector, DetectorConfig, decode: the network (backbone, FPN/PAN, ASFF per level, CenterNet head)
    loss      its training targets and loss
    files     detector files: det.pt, fit-det checkpoints, trusted pickles; `load_detector`, the one way to read them
    foreign   ASFF-like modules of detectors attnviz did not build (YOLO-style), found by structure
    analysis  one photo through a detector: each ASFF module's level weights, and per box
    drawing   level colours, categorical level maps, boxes with level shares, share charts
    views     the pictures and summary of `attnviz asff-weights`
    api       `asff_weights(det, image, ...) -> View`, the Python front door of that command
    checks    the cheap, torch-free checks of the entry points' options
    metrics   mAP@0.5 and the object-size vs level-weight correlations of `attnviz eval-det`
    train     fitting the detector (`attnviz fit-det`)

Only names live in this module, and `asff_weights` is imported on first use, so `import attnviz.detection` (and the
CLI's choices) never pays for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

DETECTOR_BACKBONES = ("resnet18", "mobilenet_v2")
DETECTOR_STRIDES = (8, 16, 32)
"""The detector's pyramid levels, fine to coarse."""
LEVEL_NAMES = ("fine", "mid", "coarse")
"""Names of the three source levels of an ASFF module, fine to coarse."""

_LAZY = {"asff_weights": "attnviz.detection.api"}

__all__ = ["DETECTOR_BACKBONES", "DETECTOR_STRIDES", "LEVEL_NAMES", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'attnviz.detection' has no attribute {name!r}")
