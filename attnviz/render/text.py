"""Text in pictures: one font that has the glyphs captions use, its measured size, and wrapping to a width."""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont


@lru_cache(maxsize=1)
def _unicode_font_file() -> str | None:
    """DejaVu Sans as shipped inside matplotlib (found without importing it), or None."""
    spec = importlib.util.find_spec("matplotlib")
    for root in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(root) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if candidate.is_file():
            return str(candidate)
    return None


@lru_cache(maxsize=16)
def load_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """A font `size` px tall.

    DejaVu Sans (from matplotlib's data) first: Pillow's built-in Aileron has no glyphs for the "—", "…",
    "×" and Greek letters that layer names and captions use. Then Pillow's default, then its bitmap font.
    """
    size = max(8, int(size))
    path = _unicode_font_file()
    try:
        if path is not None:
            return ImageFont.truetype(path, size)
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # pragma: no cover - Pillow < 10.1 or no FreeType
        return ImageFont.load_default()


def text_size(font: ImageFont.FreeTypeFont | ImageFont.ImageFont, text: str) -> tuple[int, int]:
    left, top, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def wrap(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int) -> list[str]:
    """Greedy word wrap of `text` into lines no wider than `width` px (a single long word is cut with '…')."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if text_size(font, candidate)[0] <= width or not line:
                line = candidate
            else:
                lines.append(line)
                line = word
        lines.append(line)
    fitted = []
    for line in lines:
        while len(line) > 1 and text_size(font, line)[0] > width:
            line = line[:-2] + "…"
        fitted.append(line)
    return fitted
