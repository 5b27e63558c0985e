"""Procedural scenes with known ground truth, for training demo weights and for measuring where attention lands.

Every scene follows from one integer seed: shapes of `SHAPES` (the class index is the position) on cluttered
backgrounds, with each object's visible mask and tight box. Nothing is stored; a dataset maps an index to a
seed with `seed_for(split, index)`, and the train, val and test seed ranges never overlap.

    >>> from attnviz.data import make_scene, seed_for
    >>> scene = make_scene(seed_for("val", 0))  # scene.image, .label, .shape, .mask, .box, .objects
    >>> x0, y0, x1, y1 = scene.box

Importing this package needs numpy and Pillow only. The torch datasets live in `attnviz.data.datasets`, imported
on demand: `from attnviz.data.datasets import SceneDataset, DetectionDataset, collate_detection`.
"""

from __future__ import annotations

from attnviz.data.files import save_sample
from attnviz.data.scenes import (
    SPLITS,
    ObjectInfo,
    Scene,
    box_iou,
    make_detection_scene,
    make_scene,
    seed_for,
    tight_box,
)
from attnviz.data.shapes import SHAPES, class_names, shape_mask

__all__ = [
    "SHAPES",
    "SPLITS",
    "ObjectInfo",
    "Scene",
    "box_iou",
    "class_names",
    "make_detection_scene",
    "make_scene",
    "save_sample",
    "seed_for",
    "shape_mask",
    "tight_box",
]
