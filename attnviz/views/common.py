"""What the drawing commands' views share: which blocks are drawn, how a map is captioned, tiles of one width."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from attnviz.render.layout import caption_tile, equal_heights, grid, grid_columns, pad_to_width
from attnviz.render.overlay import is_flat

if TYPE_CHECKING:
    from attnviz.analysis import Analysis
    from attnviz.loading import LoadedModel
    from attnviz.maps import AttentionMap
    from attnviz.views.base import Style

TILE_WIDTH = 360
"""Width of the photo in every tile of a composite picture, in pixels (wider for very wide photos: `tile_width`)."""
WIDE_TILE_HEIGHT = 180
"""The least height of the photo in a tile: a photo wider than 2:1 gets wider tiles (up to MAX_TILE_WIDTH)."""
MAX_TILE_WIDTH = 720
MAX_TILE_HEIGHT = 720
"""The greatest height of the photo in a tile: a photo taller than 2:1 gets narrower tiles (down to 14 px at 1:50,
attnviz.io.photos.MAX_ASPECT), so every tile of any photo fits in 720 x 720 pixels."""
MIN_CAPTION_WIDTH = 240
MAX_FULL_PIXELS = 4096 * 4096
"""The most pixels of a picture drawn at the photo's own resolution (`show --each`, `--heat-only`); a larger photo
is drawn scaled down to this many (each such picture holds several float arrays of its size)."""
"""Narrower tiles are centred on a white tile this wide, so that their captions stay readable."""
CAPTION_FONT = 20
"""Caption font size in pixels: one size for every tile of a picture, readable at the saved size."""


def stage_representatives(loaded: LoadedModel, layers: Sequence[str], *, every_block: bool) -> list[str]:
    """The layers to draw: all of them, or the last block of each stage (the stage's output)."""
    if every_block:
        return list(layers)
    last: dict[int, str] = {}
    for layer in layers:
        last[loaded.stage_of(layer) or 0] = layer
    return [last[s] for s in sorted(last)]


def describe(m: AttentionMap, loaded: LoadedModel) -> str:
    """ "stage 3 · layer3.1.attn · spatial (7x7)": where a map comes from, what it is and its shape."""
    stage = loaded.stage_of(m.layer)
    where = f"stage {stage} · {m.layer}" if stage else m.layer
    dims = "x".join(str(s) for s in m.shape[1:])
    return f"{where} · {m.label} ({dims})"


def tile_width(photo_size: tuple[int, int]) -> int:
    """Width of the photo in the tiles of a picture of a photo of `photo_size` (width, height): TILE_WIDTH, wider
    for wide photos (up to MAX_TILE_WIDTH), narrower for tall ones (at most MAX_TILE_HEIGHT tall)."""
    width, height = photo_size
    wide = max(TILE_WIDTH, min(MAX_TILE_WIDTH, round(WIDE_TILE_HEIGHT * width / height)))
    return max(1, min(wide, math.floor(MAX_TILE_HEIGHT * width / height)))


def full_width(photo_size: tuple[int, int]) -> int | None:
    """The width of the pictures drawn "at the photo's full resolution": None (the photo's own) up to
    MAX_FULL_PIXELS, else the photo scaled down to that many pixels."""
    width, height = photo_size
    if width * height <= MAX_FULL_PIXELS:
        return None
    return max(1, math.floor(width * math.sqrt(MAX_FULL_PIXELS / (width * height))))


def tile(image: Image.Image, caption: str) -> Image.Image:
    """`image` (drawn at the picture's tile width; a colour bar may widen it) with `caption` above it; a narrow image
    is centred on a white tile MIN_CAPTION_WIDTH wide."""
    return caption_tile(pad_to_width(image, MIN_CAPTION_WIDTH), caption, font_size=CAPTION_FONT)


def range_note(values: np.ndarray) -> str:
    """The range of a map's finite values for its caption ("0.12-0.93", "flat 0.5", "nothing seen")."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return "nothing seen"
    low, high = float(finite.min()), float(finite.max())
    if is_flat(low, high):
        return f"flat {low:.3g}"
    # as few digits as tell the ends apart (0.61-1.00, 0.477-0.480); a softmax over many positions (global context,
    # CoT) holds values far below 0.01, given in significant digits
    style = "f" if high >= 0.1 else "g"
    for digits in (2, 3, 4):
        ends = (f"{low:.{digits}{style}}", f"{high:.{digits}{style}}")
        if ends[0] != ends[1]:
            break
    return "-".join(ends)


def blank_like(tile: Image.Image) -> Image.Image:
    return Image.new("RGB", tile.size, "white")


def tile_grid(tiles: list[Image.Image], columns: int | None = None) -> Image.Image:
    """Tiles in a grid, lined up (padded to one height), `columns` to a row (default: as suits their shape)."""
    tiles = equal_heights(tiles)
    widest = max(t.width for t in tiles)
    return grid(tiles, columns or grid_columns(len(tiles), (widest, tiles[0].height), most=4))


def scale_limits(heats: list[tuple[int | None, np.ndarray]], style: Style) -> dict[int | None, dict[str, float]]:
    """Per stage, the value range maps without a fixed range are drawn with: `style.vmin`/`style.vmax` where
    given; with scale "shared" one range over every map, "per-stage" one per stage, "per-map" none (each its own)."""
    explicit = {k: v for k, v in (("vmin", style.vmin), ("vmax", style.vmax)) if v is not None}
    stages = {stage for stage, _ in heats}
    if style.scale == "per-map" or not heats:
        return dict.fromkeys(stages, explicit)
    groups = {stage: [h for s, h in heats if s == stage or style.scale == "shared"] for stage in stages}
    limits = {}
    for stage, group in groups.items():
        finite = np.concatenate([h[np.isfinite(h)] for h in group])
        shared = {"vmin": float(finite.min()), "vmax": float(finite.max())} if finite.size else {}
        limits[stage] = {**shared, **explicit}
    return limits


def prediction(analysis: Analysis, loaded: LoadedModel) -> dict[str, Any] | None:
    """The class the model predicts for the image, with its softmax probability (None when the model's output is
    not one row of class scores, e.g. a detector or a feature extractor)."""
    import torch

    output = analysis.output
    if not isinstance(output, torch.Tensor) or output.dim() != 2 or output.shape[1] < 2:
        return None
    probabilities = output.detach().float().softmax(1)[0]
    best = int(probabilities.argmax())
    classes = loaded.weights_info.classes if loaded.weights_info else None
    name = classes[best] if classes and best < len(classes) else None
    return {"class": best, "name": name, "probability": round(float(probabilities[best]), 4)}
