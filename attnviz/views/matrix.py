"""`matrix`: where a query pixel looks, per head, for self-attention (MHSA, DANet, criss-cross, ECA+MHSA and
foreign self-attention), and the full query x key matrices when asked."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from attnviz.analysis import Analysis
from attnviz.loading import LoadedModel
from attnviz.maps import AttentionMap, criss_cross_plane, matrix_rows, query_plane
from attnviz.options import KINDS as COMMAND_KINDS
from attnviz.render.overlay import mark_point, overlay
from attnviz.views.base import DEFAULT_STYLE, Picture, Style, View
from attnviz.views.common import describe, prediction, scale_limits, stage_representatives, tile, tile_grid, tile_width

KINDS = COMMAND_KINDS["matrix"]
"""The kinds of attention `matrix` draws."""


def draw(
    analysis: Analysis,
    loaded: LoadedModel,
    style: Style = DEFAULT_STYLE,
    *,
    points: Sequence[tuple[float, float]],
    heatmaps: bool = False,
    every_block: bool = False,
) -> View:
    """Per query point and head, the attention row over the photo; with `heatmaps` (and always for channel
    self-attention), each head's full matrix.

    Args:
        analysis: The image through the model, captured for `KINDS` (only the query rows, unless `heatmaps`).
        loaded: The model.
        style: Colormap and opacity of the overlays.
        points: Query pixels (x, y) of the photo.
        heatmaps: Also draw the full query x key matrix of each head.
        every_block: Draw every block, not only the last block of each stage.
    """
    from attnviz.render.panels import matrix_heatmaps

    pictures: dict[str, Picture] = {}
    tiles = query_tiles(analysis, loaded, points, style, every_block=every_block)
    if tiles:
        pictures["matrix"] = tile_grid(tiles)
    drawn = stage_representatives(loaded, analysis.recording.layers(), every_block=every_block)
    for m in analysis.recording:
        full = m.queries is None and m.tokens in ("grid", "channel")
        if m.layer in drawn and full and (heatmaps or m.tokens == "channel"):
            unit = "channel" if m.tokens == "channel" else "token"
            figure = matrix_heatmaps(matrix_rows(m)[0], title=describe(m, loaded), unit=unit)
            pictures[f"heatmap_{m.layer.replace('.', '-')}_{m.label}"] = figure
    summary = {
        "image": str(analysis.path),
        "prediction": prediction(analysis, loaded),
        "queries": [list(p) for p in points],
        "maps": [m.summary() for m in analysis.recording],
    }
    return View(pictures, summary, loaded.name, analysis.path.stem, analysis, loaded)


def centre(image_size: tuple[int, int]) -> list[tuple[float, float]]:
    """The default query: the photo's centre pixel."""
    width, height = image_size
    return [(width // 2, height // 2)]


def query_tiles(
    analysis: Analysis,
    loaded: LoadedModel,
    points: Sequence[tuple[float, float]],
    style: Style,
    *,
    every_block: bool,
) -> list[Image.Image]:
    """For each grid matrix (and criss-cross map) and each query point: where that pixel looks, per head."""
    width = tile_width(analysis.image.size)
    photo = analysis.thumbnail(width)
    scale = photo.width / analysis.image.width
    layers = stage_representatives(loaded, analysis.recording.layers(), every_block=every_block)
    panels = []
    for m in analysis.recording:
        if m.layer not in layers or m.kind != "matrix" or m.tokens not in ("grid", "row_col"):
            continue
        for x, y in points:
            for head, cells in _query_planes(analysis, m, x, y):
                head_note = f" · head {head}" if head is not None else ""
                caption = f"{describe(m, loaded)}{head_note} · query {x:g},{y:g}"
                panels.append((loaded.stage_of(m.layer), analysis.on_photo(cells, width), caption, (x, y)))
    limits = scale_limits([(stage, heat) for stage, heat, _, _ in panels], style)
    tiles = []
    for stage, heat, caption, (x, y) in panels:
        drawn = overlay(photo, heat, cmap=style.cmap, alpha=style.alpha, colorbar=style.colorbar, **limits[stage])
        tiles.append(tile(mark_point(drawn, (x * scale, y * scale)), caption))
    return tiles


def _query_planes(analysis: Analysis, m: AttentionMap, x: float, y: float) -> list[tuple[int | None, np.ndarray]]:
    from attnviz.images import original_to_cell
    from attnviz.options import pixel_centre

    x, y = pixel_centre(x, y)
    if m.tokens == "row_col":
        _, h, w, _ = m.shape
        cell = original_to_cell(x, y, analysis.geometry, h, w, analysis.placement)
        return [] if cell is None else [(None, criss_cross_plane(m, *cell)[0])]
    assert m.grid is not None
    cell = original_to_cell(x, y, analysis.geometry, *m.grid, analysis.placement)
    if cell is None:
        return []
    planes = query_plane(m, cell[0] * m.grid[1] + cell[1])[0]
    heads = m.heads if m.heads is not None else list(range(planes.shape[0]))
    return [(heads[i] if len(heads) > 1 else None, planes[i]) for i in range(planes.shape[0])]
