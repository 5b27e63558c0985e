"""`show`: each drawn block's spatial-type maps (spatial, Coordinate Attention's product, ASFF levels) overlaid on
the photo, one row per block, with the photo for reference and, when asked, the stage's CAM beside it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from attnviz.analysis import Analysis
from attnviz.loading import LoadedModel
from attnviz.maps import AttentionMap, level_planes
from attnviz.options import KINDS as COMMAND_KINDS
from attnviz.render.layout import grid
from attnviz.render.overlay import overlay
from attnviz.views.base import DEFAULT_STYLE, Style, View
from attnviz.views.common import TILE_WIDTH, blank_like, describe, range_note, stage_representatives, tile

if TYPE_CHECKING:
    from attnviz.cam import CamRunner

KINDS = COMMAND_KINDS["show"]
"""The kinds of attention `show` draws."""


def draw(
    analysis: Analysis,
    loaded: LoadedModel,
    style: Style = DEFAULT_STYLE,
    *,
    every_block: bool = False,
    cams: dict[int, CamRunner] | None = None,
    cam_name: str = "CAM",
) -> View:
    """The `show` picture of one analysed image, and the summary of every map captured.

    Args:
        analysis: The image through the model (`attnviz.analyse`).
        loaded: The model.
        style: Colormap, opacity, contour and colour bar of the overlays.
        every_block: Draw every block, not only the last block of each stage.
        cams: Per stage, a CAM runner (`attnviz.cam.cam_for_layer`) whose map is drawn beside the stage's.
        cam_name: The CAM's name in captions.
    """
    rows = spatial_rows(analysis, loaded, style, every_block=every_block, cams=cams, cam_name=cam_name)
    summary = {"image": str(analysis.path), "maps": [m.summary() for m in analysis.recording]}
    return View({"show": show_picture(analysis, rows)}, summary, loaded.name, analysis.path.stem, analysis)


def spatial_rows(
    analysis: Analysis,
    loaded: LoadedModel,
    style: Style,
    *,
    every_block: bool,
    cams: dict[int, CamRunner] | None = None,
    cam_name: str = "CAM",
) -> list[list[Image.Image]]:
    """One row per drawn block: one overlay per spatial-type map (spatial, coordinate product, ASFF level),
    followed, with `cams`, by the CAM of the block's stage for the predicted class."""
    photo = analysis.thumbnail(TILE_WIDTH)
    by_layer = analysis.recording.by_layer()
    rows = []
    for layer in stage_representatives(loaded, list(by_layer), every_block=every_block):
        pictures = _spatial_pictures(analysis, loaded, by_layer[layer])
        stage = loaded.stage_of(layer)
        if pictures and cams and stage in cams:
            pictures.append(_cam_picture(analysis, loaded, cams[stage], stage, cam_name))
        row = [
            tile(
                overlay(
                    photo,
                    heat,
                    cmap=style.cmap,
                    alpha=style.alpha,
                    contour=style.contour,
                    colorbar=style.colorbar,
                    **value_range,
                ),
                caption,
            )
            for heat, caption, value_range in pictures
        ]
        if row:
            rows.append(row)
    return rows


def _cam_picture(
    analysis: Analysis, loaded: LoadedModel, runner: CamRunner, stage: int, name: str
) -> tuple[np.ndarray, str, dict[str, float]]:
    """The stage's CAM for the class the model predicts, on the tile-sized photo."""
    assert analysis.tensor is not None
    predicted = analysis.output.argmax(1)
    heat = analysis.on_photo(runner(analysis.tensor, predicted)[0], TILE_WIDTH)
    classes = loaded.weights_info.classes if loaded.weights_info else None
    label = classes[int(predicted[0])] if classes else f"class {int(predicted[0])}"
    return heat, f"stage {stage} · {name} of the prediction ({label})", {"vmin": 0.0, "vmax": 1.0}


def _spatial_pictures(
    analysis: Analysis, loaded: LoadedModel, maps: list[AttentionMap]
) -> list[tuple[np.ndarray, str, dict[str, float]]]:
    """(map on the tile-sized photo, caption, fixed value range if any) for each spatial-type map of one block."""
    pictures = []
    for m in maps:
        if m.kind == "spatial":
            heat = analysis.spatial(m, TILE_WIDTH)
            pictures.append((heat, f"{describe(m, loaded)} · {range_note(heat)}", {}))
        elif m.kind == "level":
            for level, cells in enumerate(level_planes(m)[0]):
                heat = analysis.on_photo(cells, TILE_WIDTH)
                pictures.append((heat, f"{describe(m, loaded)} · level {level}", {"vmin": 0.0, "vmax": 1.0}))
    coordinate = [m for m in maps if m.kind == "coordinate"]
    for h_map, w_map in zip(coordinate[::2], coordinate[1::2], strict=False):
        _, _, outer = analysis.coordinate(h_map, w_map, TILE_WIDTH)
        where = describe(h_map, loaded).rsplit(" · ", 1)[0]
        pictures.append((outer, f"{where} · a_h x a_w · {range_note(outer)}", {}))
    return pictures


def show_picture(analysis: Analysis, rows: list[list[Image.Image]]) -> Image.Image:
    """Lay out the overlays with the photo for reference.

    Blocks with one map each go in a single row after the photo (wrapping after 5 maps); blocks with several
    maps (Triplet's three branches) get a row each, led by the photo.
    """
    photo = tile(
        analysis.thumbnail(TILE_WIDTH), f"{analysis.path.name} ({analysis.image.width}x{analysis.image.height})"
    )
    if all(len(row) == 1 for row in rows):
        tiles = [photo, *(row[0] for row in rows)]
        return grid(tiles, min(len(tiles), 5))
    width = 1 + max(len(row) for row in rows)
    tiles = []
    for row in rows:
        tiles += [photo, *row] + [blank_like(photo)] * (width - 1 - len(row))
    return grid(tiles, width)
