"""What the drawing commands' views share: which blocks are drawn, how a map is captioned, tiles of one width."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from attnviz.render.layout import caption_tile, grid

if TYPE_CHECKING:
    from attnviz.loading import LoadedModel
    from attnviz.maps import AttentionMap

TILE_WIDTH = 360
"""Width of every tile of a composite picture, in pixels."""


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


def tile(image: Image.Image, caption: str) -> Image.Image:
    """`image` scaled to TILE_WIDTH with `caption` under it."""
    if image.width != TILE_WIDTH:
        image = image.resize((TILE_WIDTH, max(1, round(image.height * TILE_WIDTH / image.width))))
    return caption_tile(image, caption)


def range_note(values: np.ndarray) -> str:
    """The range of a map's finite values for its caption ("0.12-0.93", "constant 0.5", "nothing seen")."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return "nothing seen"
    low, high = float(finite.min()), float(finite.max())
    if np.isclose(low, high, rtol=1e-3, atol=0.0):
        return f"constant {low:.3g}"
    # a softmax over many positions (global context, CoT) holds values far below 0.01
    return f"{low:.2f}-{high:.2f}" if high >= 0.1 else f"{low:.2g}-{high:.2g}"


def blank_like(tile: Image.Image) -> Image.Image:
    return Image.new("RGB", tile.size, "white")


def tile_grid(tiles: list[Image.Image], columns: int | None = None) -> Image.Image:
    """Tiles in a grid of `columns` (default: up to 4)."""
    return grid(tiles, columns or min(4, len(tiles)))
