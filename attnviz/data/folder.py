"""A user's own images in the ImageFolder layout (one sub-folder per class) as training and validation sets.

    DIR/cat/001.jpg, DIR/cat/002.png, DIR/dog/...

Every file is read with `attnviz.images.load_image` (EXIF orientation, any mode) and resized to the input size;
a fixed tenth of each class (chosen by a hash of the file name, so it never moves between runs) is validation.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch.utils.data import Dataset

from attnviz.errors import UsageError
from attnviz.images import preprocess
from attnviz.io.photos import IMAGE_SUFFIXES, load_image

VALIDATION_SHARE = 10  # percent


def _is_validation(path: Path) -> bool:
    digest = hashlib.sha1(path.name.encode("utf-8")).digest()
    return digest[0] * 100 // 256 < VALIDATION_SHARE


class FolderDataset(Dataset):
    """(image tensor, label) pairs from a list of (path, label)."""

    def __init__(self, items: list[tuple[Path, int]], size: int, *, augment: bool) -> None:
        self.items = items
        self.size = size
        self.augment = augment

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.items[index]
        tensor = preprocess(load_image(path), self.size, "resize")[0][0]
        if self.augment and bool(torch.rand(()) < 0.5):
            tensor = tensor.flip(-1)
        return tensor, label


def folder_datasets(root: Path, size: int, *, seed: int = 0) -> tuple[FolderDataset, FolderDataset, list[str]]:
    """(train, validation, class names) from an ImageFolder directory.

    Raises:
        UsageError: fewer than two class folders, or a class without images.
    """
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise UsageError(
            f"{root} needs at least two class folders (ImageFolder layout), found {len(classes)}",
            "put each class's images in its own sub-folder: DIR/cat/*.jpg, DIR/dog/*.jpg",
        )
    train, val = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UsageError(f"class folder {root / name} holds no images")
        for path in files:
            (val if _is_validation(path) else train).append((path, label))
    if not val:
        val = train[:: max(1, len(train) // 10)]
    return FolderDataset(train, size, augment=True), FolderDataset(val, size, augment=False), classes
