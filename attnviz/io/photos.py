"""Reading photos: any file Pillow reads, upright 8-bit RGB, with one-line errors for everything that is not a
usable image (missing, empty, corrupt, too large for the pixel limit, too small to draw on)."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from attnviz.env import MAX_PIXELS, positive_whole_number
from attnviz.errors import ImageError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
"""File suffixes taken as images when a folder is given."""
ImageInput = str | os.PathLike[str] | Image.Image
"""An image file, or a PIL image already in memory."""
MAX_PIXELS_ENV = MAX_PIXELS
MAX_ASPECT = 50
"""The longest strip drawn: the longer side at most this many times the shorter (a 1:50 strip is drawn 14 px wide
beside 720 px of height; beyond it the photo would vanish into a line)."""

_HIGH_DEPTH_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
_ALPHA_MODES = frozenset({"P", "PA", "RGBA", "RGBa", "LA", "La"})
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError)


def read_image(image: ImageInput) -> tuple[Path, Image.Image]:
    """(the path that names it, the RGB photo) for an image file or a PIL image ("image" when it has no file)."""
    if isinstance(image, Image.Image):
        name = getattr(image, "filename", "") or "image.png"
        return Path(name), to_rgb(image)
    return Path(image), load_image(image)


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Read an image file as an upright 8-bit RGB image.

    EXIF orientation is applied; transparency is composited on white; 16-bit and float images are stretched
    over their own value range; animated images give their first frame.

    Args:
        path: Any file Pillow can read.

    Returns:
        The image in mode "RGB", at least 2x2 pixels.

    Raises:
        ImageError: The file is missing, empty, not an image, corrupt, too large or too small.

    Note:
        The pixel limit is Pillow's `Image.MAX_IMAGE_PIXELS`, or `ATTNVIZ_MAX_PIXELS` when set; it is set for
        the call and restored after, so do not load images from several threads while changing either.
    """
    file = Path(path)
    _check_file(file)
    limit = _pixel_limit()
    saved_limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = limit
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = _decode(file, limit)
    finally:
        Image.MAX_IMAGE_PIXELS = saved_limit
    check_big_enough(image.size, str(file))
    return image


def _check_file(file: Path) -> None:
    if not file.exists():
        raise ImageError(f"image file not found: {file}", "check the path")
    if file.is_dir():
        raise ImageError(f"{file} is a directory, not an image file", "pass the path of one image file")
    if file.stat().st_size == 0:
        raise ImageError(f"image file is empty: {file}", "the file has 0 bytes; re-export or re-download it")


def _pixel_limit() -> int | None:
    value = positive_whole_number(MAX_PIXELS_ENV, "200000000", ImageError)
    return Image.MAX_IMAGE_PIXELS if value is None else value


def _decode(file: Path, limit: int | None) -> Image.Image:
    try:
        with Image.open(file) as opened:
            opened.load()  # decode everything now, so a truncated file fails here and not later
            return to_rgb(ImageOps.exif_transpose(opened))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = found.group(1) if found else "more"
        raise ImageError(
            f"{file} has {pixels} pixels, more than the limit of {limit} (decompression-bomb guard)",
            f"if you trust the file, set {MAX_PIXELS_ENV} to a larger number",
        ) from exc
    except UnidentifiedImageError as exc:
        raise ImageError(f"{file} is not an image Pillow can read", "use a PNG, JPEG, WebP, GIF, BMP or TIFF") from exc
    except _DECODE_ERRORS as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ImageError(f"{file} is truncated or corrupt: {reason}", "re-export or re-download the image") from exc


def check_big_enough(size: tuple[int, int], name: str) -> None:
    """Refuse an image too small to draw on, or a strip too thin to draw readably (longer side over MAX_ASPECT times
    the shorter)."""
    width, height = size
    if width < 2 or height < 2:
        raise ImageError(f"{name} is {width}x{height} pixels, too small to overlay attention on", "use 2x2 or more")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise ImageError(
            f"{name} is {width}x{height} pixels, a strip too thin to draw attention on (attnviz draws images whose "
            f"longer side is at most {MAX_ASPECT} times the shorter)",
            f"crop it into pieces of at most 1:{MAX_ASPECT}",
        )


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert an image of any Pillow mode to 8-bit RGB (alpha on white, high bit depth stretched to 0..255)."""
    if image.mode == "RGB":
        return image
    if image.mode in _HIGH_DEPTH_MODES:
        return _stretch_to_8bit(image).convert("RGB")
    if image.mode in _ALPHA_MODES:
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def _stretch_to_8bit(image: Image.Image) -> Image.Image:
    values = np.asarray(image, dtype=np.float64)
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if high <= low:  # a constant image has no range to stretch; it comes out black
        return Image.new("L", image.size, 0)
    scaled = (np.nan_to_num(values, nan=low) - low) * (255.0 / (high - low))
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")
