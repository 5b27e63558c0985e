"""Write scenes to disk: the image, a mask image and a JSON file with the ground truth, each atomically."""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from attnviz.data.scenes import Scene
from attnviz.errors import UsageError


def mask_values(count: int) -> list[int]:
    """Grey levels of objects 0..count-1 in a mask image: 255 for the first, evenly spaced down to 255 / count."""
    return [round(255 * (count - i) / count) for i in range(count)]


def mask_image(scene: Scene) -> Image.Image:
    """An "L" image: 0 on the background, object i (in `scene.objects` order) at grey level `mask_values(n)[i]`.

    Later objects are drawn over earlier ones, so each pixel carries the object visible there.
    """
    height, width = scene.mask.shape
    levels = np.zeros((height, width), dtype=np.uint8)
    for obj, value in zip(scene.objects, mask_values(len(scene.objects)), strict=True):
        levels[obj.mask] = value
    return Image.fromarray(levels, "L")


def scene_record(scene: Scene) -> dict[str, object]:
    """The ground truth as JSON-ready data: size, seed, classes, and per object its label, shape, box, grey level."""
    width, height = scene.image.size
    return {
        "seed": scene.seed,
        "width": width,
        "height": height,
        "classes": list(scene.classes),
        "label": scene.label,
        "shape": scene.shape,
        "box": list(scene.box),
        "objects": [
            {"label": obj.label, "shape": obj.shape, "box": list(obj.box), "mask_value": value}
            for obj, value in zip(scene.objects, mask_values(len(scene.objects)), strict=True)
        ],
    }


def save_sample(scene: Scene, folder: str | os.PathLike[str], stem: str) -> list[Path]:
    """Write `<stem>.png` (the image), `<stem>_mask.png` (see `mask_image`) and `<stem>.json` (`scene_record`).

    Args:
        scene: A classification or detection scene.
        folder: Where to write; created if missing.
        stem: File name without suffix.

    Returns:
        The three paths written, in that order.

    Raises:
        UsageError: The stem is empty or holds a path separator, or the folder cannot be written to.
    """
    if not stem or os.sep in stem or (os.altsep and os.altsep in stem):
        raise UsageError(f"sample stem must be a plain file name, got {stem!r}")
    directory = Path(folder)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create sample folder {directory}", error.strerror) from error
    record = json.dumps(scene_record(scene), indent=2).encode() + b"\n"
    return [
        _write(directory / f"{stem}.png", _png(scene.image)),
        _write(directory / f"{stem}_mask.png", _png(mask_image(scene))),
        _write(directory / f"{stem}.json", record),
    ]


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _write(path: Path, data: bytes) -> Path:
    """Write to a temporary file next to `path`, then rename it onto `path`."""
    try:
        handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    except OSError as error:
        raise UsageError(f"cannot write to {path.parent}", error.strerror) from error
    temp = Path(handle.name)
    try:
        with handle:
            handle.write(data)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path
