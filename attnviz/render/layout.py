"""Layout primitives for composite pictures: text strips and tiles, captions, legends, colour bars, stacking.

Pure functions like the rest of `attnviz.render`: strings and PIL images in, PIL images out, white backgrounds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from attnviz.render.overlay import colormap_lut
from attnviz.render.text import load_font, text_size, wrap

RGB = tuple[int, int, int]
CAPTION_EMS = 12
"""The least width of a captioned image, in font sizes (about 24 characters a line)."""


def legend(entries: Sequence[tuple[RGB, str]], width: int, *, font_size: int | None = None) -> Image.Image:
    """A white strip, `width` px wide, with a colour swatch and a label per entry, wrapped onto lines as needed."""
    size = font_size or max(12, min(28, width // 40))
    font = load_font(size)
    pad, swatch, gap = size // 2, size, size
    placed: list[list[tuple[RGB, str, int]]] = [[]]
    x = pad
    for colour, text in entries:
        item = swatch + pad // 2 + text_size(font, text)[0]
        if placed[-1] and x + item > width - pad:
            placed.append([])
            x = pad
        placed[-1].append((colour, text, x))
        x += item + gap
    line = round(size * 1.5)
    strip = Image.new("RGB", (width, pad * 2 + line * len(placed)), "white")
    draw = ImageDraw.Draw(strip)
    for row, items in enumerate(placed):
        y = pad + row * line + (line - swatch) // 2
        for colour, text, left in items:
            draw.rectangle([left, y, left + swatch, y + swatch], fill=colour, outline="black")
            draw.text((left + swatch + pad // 2, y + swatch // 2), text, fill="black", font=font, anchor="lm")
    return strip


def text_strip(text: str, width: int, *, font_size: int, color: str | RGB = "black") -> Image.Image:
    """`text` word-wrapped onto a white strip `width` px wide (explicit newlines kept)."""
    font = load_font(font_size)
    pad = max(3, font_size // 3)
    lines = wrap(text, font, width - 2 * pad)
    line = round(font_size * 1.3)
    strip = Image.new("RGB", (width, 2 * pad + line * len(lines)), "white")
    draw = ImageDraw.Draw(strip)
    for i, text_line in enumerate(lines):
        draw.text((pad, pad + i * line + line // 2), text_line, fill=color, font=font, anchor="lm")
    return strip


def captioned(image: Image.Image, caption: str, *, font_size: int) -> Image.Image:
    """The image under a caption strip of its width (a fixed font size, unlike `caption_tile`'s width-bound one); an
    image narrower than CAPTION_EMS font sizes is centred on a white tile that wide, so the caption stays readable."""
    image = pad_to_width(image, CAPTION_EMS * font_size)
    return stack([text_strip(caption, image.width, font_size=font_size), image])


def pad_to_width(image: Image.Image, width: int) -> Image.Image:
    """`image` (as RGB) centred on a white tile `width` px wide when it is narrower; else `image` itself."""
    if image.width >= width:
        return image
    padded = Image.new("RGB", (width, image.height), "white")
    padded.paste(image.convert("RGB"), ((width - image.width) // 2, 0))
    return padded


def text_tile(lines: Sequence[str], size: tuple[int, int], *, font_size: int) -> Image.Image:
    """A white tile of `size` (width, height) with the lines centred vertically (e.g. a row header of a grid)."""
    strip = text_strip("\n".join(lines), size[0], font_size=font_size)
    tile = Image.new("RGB", size, "white")
    tile.paste(strip, (0, max(0, (size[1] - strip.height) // 2)))
    return tile


def colorbar_strip(
    cmap: str, width: int, label: str, *, font_size: int, vmin: float = 0.0, vmax: float = 1.0
) -> Image.Image:
    """A horizontal colour bar from `vmin` to `vmax` with its end values, led by `label`, on a white strip."""
    font = load_font(font_size)
    pad = font_size // 2
    label_w = text_size(font, label)[0]
    low, high = f"{vmin:g}", f"{vmax:g}"
    bar_h = font_size
    bar_x0 = pad + label_w + pad + text_size(font, low)[0] + pad // 2
    bar_x1 = width - pad - text_size(font, high)[0] - pad // 2
    strip = Image.new("RGB", (width, bar_h + 2 * pad), "white")
    draw = ImageDraw.Draw(strip)
    middle = pad + bar_h // 2
    draw.text((pad, middle), label, fill="black", font=font, anchor="lm")
    draw.text((bar_x0 - pad // 2, middle), low, fill="black", font=font, anchor="rm")
    draw.text((bar_x1 + pad // 2, middle), high, fill="black", font=font, anchor="lm")
    if bar_x1 > bar_x0:
        lut = colormap_lut(cmap)
        ramp = lut[np.round(np.linspace(0, len(lut) - 1, bar_x1 - bar_x0)).astype(np.intp)]
        strip.paste(Image.fromarray(np.repeat(ramp[None], bar_h, axis=0), "RGB"), (bar_x0, pad))
        draw.rectangle([bar_x0 - 1, pad - 1, bar_x1, pad + bar_h], outline="black")
    return strip


def stack(images: Sequence[Image.Image], *, background: str = "white") -> Image.Image:
    """Images one below the other, left-aligned, on a common width."""
    width = max(im.width for im in images)
    out = Image.new("RGB", (width, sum(im.height for im in images)), background)
    y = 0
    for im in images:
        out.paste(im.convert("RGB"), (0, y))
        y += im.height
    return out


def caption_tile(
    image: Image.Image, caption: str, *, width: int | None = None, font_size: int | None = None
) -> Image.Image:
    """The image with a white caption strip above it.

    Args:
        image: The tile (any mode; returned as RGB).
        caption: Text; wrapped to the tile's width, explicit newlines kept.
        width: Scale the tile to this width first (keeping its aspect ratio).
        font_size: Caption font size in pixels (default: from the tile's width, 11-40).

    Returns:
        An RGB image as wide as the (scaled) tile, taller by the caption strip.
    """
    tile = image.convert("RGB")
    if width is not None and width != tile.width:
        height = max(1, round(tile.height * width / tile.width))
        tile = tile.resize((width, height), Image.Resampling.LANCZOS)
    font_size = font_size or max(11, min(40, round(tile.width / 16)))
    font = load_font(font_size)
    margin = max(3, font_size // 3)
    lines = wrap(caption, font, tile.width - 2 * margin)
    line_height = round(font_size * 1.25)
    strip_height = margin * 2 + line_height * len(lines)
    out = Image.new("RGB", (tile.width, strip_height + tile.height), "white")
    draw = ImageDraw.Draw(out)
    for i, line in enumerate(lines):
        draw.text((margin, margin + i * line_height), line, fill="black", font=font)
    out.paste(tile, (0, strip_height))
    return out


def grid(
    tiles: list[Image.Image],
    columns: int | None = None,
    *,
    pad: int = 4,
    background: str | RGB = "white",
) -> Image.Image:
    """Lay tiles out row by row.

    Tiles may differ in size: each is scaled (aspect kept) to the median tile height first, and every column
    is as wide as its widest tile (tiles are centred in their cell).

    Args:
        tiles: Images (any mode; transparency is flattened onto `background`).
        columns: Tiles per row (default: about a square grid, ceil(sqrt(n))).
        pad: Pixels between tiles and around the border.
        background: Fill colour.

    Returns:
        An RGB image.

    Raises:
        ValueError: no tiles, or `columns` < 1.
    """
    if not tiles:
        raise ValueError("grid needs at least one tile")
    columns = columns or math.ceil(math.sqrt(len(tiles)))
    if columns < 1:
        raise ValueError(f"columns must be at least 1, got {columns}")
    height = int(np.median([t.height for t in tiles]))
    scaled = [_scale_to_height(_flatten(t, background), height) for t in tiles]
    rows = math.ceil(len(scaled) / columns)
    col_widths = [max(t.width for t in scaled[c::columns]) for c in range(min(columns, len(scaled)))]
    out = Image.new(
        "RGB", (sum(col_widths) + pad * (len(col_widths) + 1), rows * height + pad * (rows + 1)), background
    )
    for i, tile in enumerate(scaled):
        row, col = divmod(i, columns)
        x = pad + sum(col_widths[:col]) + col * pad + (col_widths[col] - tile.width) // 2
        out.paste(tile, (x, pad + row * (height + pad)))
    return out


def _scale_to_height(tile: Image.Image, height: int) -> Image.Image:
    if tile.height == height:
        return tile
    return tile.resize((max(1, round(tile.width * height / tile.height)), height), Image.Resampling.LANCZOS)


def _flatten(tile: Image.Image, background: str | RGB) -> Image.Image:
    if tile.mode in ("RGBA", "LA", "PA") or (tile.mode == "P" and "transparency" in tile.info):
        rgba = tile.convert("RGBA")
        base = Image.new("RGBA", rgba.size, background)
        return Image.alpha_composite(base, rgba).convert("RGB")
    return tile.convert("RGB")


def equal_heights(tiles: list[Image.Image], background: str | RGB = "white") -> list[Image.Image]:
    """Tiles padded at the top to the tallest one's height, so that captioned tiles whose captions wrap onto
    different numbers of lines line up (and `grid` does not shrink the taller ones)."""
    height = max(t.height for t in tiles)
    padded = []
    for tile in tiles:
        if tile.height == height:
            padded.append(tile)
            continue
        canvas = Image.new("RGB", (tile.width, height), background)
        canvas.paste(tile.convert("RGB"), (0, height - tile.height))
        padded.append(canvas)
    return padded


def grid_columns(count: int, tile_size: tuple[int, int], *, most: int = 5, max_aspect: float = 6.0) -> int:
    """How many of `count` tiles of `tile_size` (width, height) to put in a row: as many as fit up to `most`,
    fewer when the picture would be wider than `max_aspect` times its height (a wide photo makes a ribbon)."""
    width, height = tile_size
    for columns in range(min(count, most), 1, -1):
        rows = math.ceil(count / columns)
        if columns * width <= max_aspect * rows * height:
            return columns
    return 1
