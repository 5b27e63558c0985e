"""Torch datasets over the procedural scenes: every item is generated in `__getitem__` from `seed_for(split, index)`.

Nothing is stored or cached, so the datasets are cheap to create and to send to DataLoader workers, and item i of
a split is the same scene in every run and on every machine. Augmentation (a horizontal flip) is the only random
part; it draws from torch's generator, so `torch.manual_seed` and DataLoader worker seeding govern it.

Every class is mirror-symmetric up to a rotation, so flipping never changes a label.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from attnviz.data.scenes import SPLITS, check_size, make_detection_scene, make_scene, seed_for
from attnviz.data.shapes import SHAPES, check_classes, class_names
from attnviz.errors import UnknownNameError, UsageError
from attnviz.images import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["DetectionDataset", "SceneDataset", "class_names", "collate_detection", "to_tensor"]

DetectionTarget = dict[str, torch.Tensor]


def to_tensor(image: Image.Image, *, normalise: bool = True) -> torch.Tensor:
    """A (3, H, W) float32 tensor of an RGB image in 0..1, ImageNet-normalised as `attnviz.images.preprocess` does."""
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / np.float32(255)).permute(2, 0, 1)
    if normalise:
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)
        pixels = (pixels - mean) / std
    return pixels.contiguous()


class _GeneratedDataset(Dataset):
    """Shared checks and indexing: `length` items of split `split`, each made from its seed."""

    def __init__(self, split: str, length: int, size: int, *, normalise: bool, augment: bool) -> None:
        if split not in SPLITS:
            raise UnknownNameError("split", split, SPLITS)
        if isinstance(length, bool) or not isinstance(length, int) or length < 0:
            raise UsageError(f"dataset length must be a non-negative integer, got {length!r}")
        self.split = split
        self.length = length
        self.size = check_size(size)
        self.normalise = normalise
        self.augment = augment
        self.offset = 0

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        """Draw fresh scenes for each epoch: epoch e serves scenes e*length ... (e+1)*length - 1 of the split."""
        self.offset = epoch * self.length

    def _seed(self, index: int) -> int:
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for a dataset of {self.length} scenes")
        return seed_for(self.split, self.offset + index % self.length)

    def _flip(self) -> bool:
        return self.augment and bool(torch.rand(()) < 0.5)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(split={self.split!r}, length={self.length}, size={self.size})"


class SceneDataset(_GeneratedDataset):
    """Classification scenes: (image, label, mask) with one object per image.

    Args:
        split: "train", "val" or "test"; the splits never share a scene.
        length: Number of scenes; item i is `make_scene(seed_for(split, i), size, classes=classes)`.
        size: Side of the square images in pixels.
        normalise: Normalise with the ImageNet mean and std (as `attnviz.images.preprocess`); else 0..1.
        augment: Flip image and mask horizontally with probability 0.5 (torch's generator).
        classes: The shape classes to draw from; labels index into it.

    Items:
        image: (3, size, size) float32; label: int; mask: (size, size) bool, the object's visible pixels.
    """

    def __init__(
        self,
        split: str = "train",
        length: int = 10_000,
        size: int = 128,
        *,
        normalise: bool = True,
        augment: bool = False,
        classes: Sequence[str] = SHAPES,
    ) -> None:
        super().__init__(split, length, size, normalise=normalise, augment=augment)
        self.classes = check_classes(classes)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        scene = make_scene(self._seed(index), self.size, classes=self.classes)
        image = to_tensor(scene.image, normalise=self.normalise)
        mask = torch.from_numpy(scene.mask.copy())
        if self._flip():
            image, mask = image.flip(-1), mask.flip(-1)
        return image, scene.label, mask


class DetectionDataset(_GeneratedDataset):
    """Detection scenes: (image, target) with 1..max_objects objects per image.

    Args:
        split: "train", "val" or "test"; the splits never share a scene.
        length: Number of scenes; item i is `make_detection_scene(seed_for(split, i), size, ...)`.
        size: Side of the square images in pixels.
        max_objects: Most objects in one scene.
        min_side: Smallest longer box side of an object, in pixels.
        max_fraction: Largest longer box side, as a fraction of the image side.
        normalise: Normalise with the ImageNet mean and std; else 0..1.
        augment: Flip image, boxes and masks horizontally with probability 0.5 (torch's generator).
        with_masks: Add each object's visible mask to the target.
        classes: The shape classes to draw from; labels index into it.

    Items:
        image: (3, size, size) float32, and a target dict: "boxes" (N, 4) float32 x0, y0, x1, y1 in pixels
        (x1, y1 exclusive), "labels" (N,) int64 class indices, and with `with_masks` "masks" (N, size, size)
        bool. Labels start at 0; torchvision's detectors reserve 0 for the background, so add 1 for those.
    """

    def __init__(
        self,
        split: str = "train",
        length: int = 10_000,
        size: int = 256,
        *,
        max_objects: int = 6,
        min_side: int = 8,
        max_fraction: float = 0.5,
        normalise: bool = True,
        augment: bool = False,
        with_masks: bool = False,
        classes: Sequence[str] = SHAPES,
    ) -> None:
        super().__init__(split, length, size, normalise=normalise, augment=augment)
        self.max_objects = max_objects
        self.min_side = min_side
        self.max_fraction = max_fraction
        self.with_masks = with_masks
        self.classes = check_classes(classes)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, DetectionTarget]:
        scene = make_detection_scene(
            self._seed(index),
            self.size,
            max_objects=self.max_objects,
            min_side=self.min_side,
            max_fraction=self.max_fraction,
            classes=self.classes,
        )
        image = to_tensor(scene.image, normalise=self.normalise)
        boxes = torch.tensor([obj.box for obj in scene.objects], dtype=torch.float32).reshape(-1, 4)
        target: DetectionTarget = {
            "boxes": boxes,
            "labels": torch.tensor([obj.label for obj in scene.objects], dtype=torch.int64),
        }
        if self.with_masks:
            target["masks"] = torch.from_numpy(np.stack([obj.mask for obj in scene.objects]))
        if self._flip():
            image = image.flip(-1)
            width = image.shape[-1]
            target["boxes"] = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)
            if self.with_masks:
                target["masks"] = target["masks"].flip(-1)
        return image, target


def collate_detection(
    batch: Sequence[tuple[torch.Tensor, DetectionTarget]],
) -> tuple[torch.Tensor, list[DetectionTarget]]:
    """Stack a batch's images into (B, 3, H, W) and keep the targets (different object counts) as a list."""
    if not batch:
        raise UsageError("cannot collate an empty batch")
    images = torch.stack([image for image, _ in batch])
    return images, [target for _, target in batch]
