"""`show`: each drawn block's spatial-type maps (spatial, Coordinate Attention's product, ASFF levels) overlaid on
the photo, one row per block, with the photo for reference and, when asked, the stage's CAM beside it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from attnviz.analysis import Analysis
from attnviz.loading import LoadedModel
from attnviz.maps import AttentionMap, coordinate_outer, level_planes, plane
from attnviz.options import KINDS as COMMAND_KINDS
from attnviz.render.layout import equal_heights, grid, grid_columns, stack, text_strip
from attnviz.render.overlay import colorize, overlay, value_range
from attnviz.views.base import DEFAULT_STYLE, Picture, Style, View
from attnviz.views.common import (
    CAPTION_FONT,
    blank_like,
    describe,
    full_width,
    prediction,
    range_note,
    scale_limits,
    stage_representatives,
    tile,
    tile_width,
)

if TYPE_CHECKING:
    from attnviz.cam import CamRunner

KINDS = COMMAND_KINDS["show"]
"""The kinds of attention `show` draws."""
CONTOUR_LEGEND = (
    "Contours: the solid white line encloses where a map reaches 50% of its drawn range, the dashed one 75% "
    "(a level that would cover a fifth of a noisy map is left out)."
)
CAPTURED = (*KINDS, "channel", "selection")
"""What `show` captures: also the small channel and selection weights of the same blocks, so that --json and
--save-raw hold everything the blocks computed (GAM's channel half too); matrices are left to `matrix`."""


def draw(
    analysis: Analysis,
    loaded: LoadedModel,
    style: Style = DEFAULT_STYLE,
    *,
    every_block: bool = False,
    cams: dict[int, CamRunner] | None = None,
    cam_name: str = "CAM",
    each: bool = False,
    heat_only: bool = False,
) -> View:
    """The `show` picture of one analysed image, and the summary of every map captured.

    Args:
        analysis: The image through the model (`attnviz.analyse`).
        loaded: The model.
        style: Colormap, opacity, contour, colour bar and colour scale of the overlays.
        every_block: Draw every block, not only the last block of each stage.
        cams: Per stage, a CAM runner (`attnviz.cam.cam_for_layer`) whose map is drawn beside the stage's.
        cam_name: The CAM's name in captions.
        each: Also one picture per map: the overlay at the photo's full resolution (`<layer>_<map>`; a photo over
            MAX_FULL_PIXELS is scaled down to that many pixels).
        heat_only: Also one transparent layer per map at the photo's full resolution, the heat alone in the
            colormap with the style's opacity (`<layer>_<map>_heat`), to put over the photo elsewhere.
    """
    width = tile_width(analysis.image.size)
    rows = panels(analysis, loaded, width, every_block=every_block, cams=cams, cam_name=cam_name)
    limits = scale_limits([(stage, p.cells) for stage, row in rows for p in row if not p.fixed], style)
    photo = analysis.thumbnail(width)
    tiles = [[tile(_overlay(photo, p, style, limits.get(stage, {})), p.caption) for p in row] for stage, row in rows]
    picture = show_picture(analysis, tiles)
    if style.contour:
        picture = stack([picture, text_strip(CONTOUR_LEGEND, picture.width, font_size=CAPTION_FONT)])
    pictures: dict[str, Picture] = {"show": picture}
    if each or heat_only:
        pictures.update(_full_size(analysis, loaded, style, every_block, cams, cam_name, each, heat_only))
    summary = {
        "image": str(analysis.path),
        "prediction": prediction(analysis, loaded),
        "maps": [m.summary() for m in analysis.recording],
    }
    return View(pictures, summary, loaded.name, analysis.path.stem, analysis, loaded)


@dataclass
class Panel:
    """One map to draw over the photo.

    Attributes:
        heat: The map on the photo's pixels (at the width asked for).
        cells: The map at its own resolution: its range is the one captioned, printed in --json and coloured.
        caption: What it is, for its tile.
        key: Its piece of a file name ("layer3-1-attn_spatial").
        fixed: The value range it is always drawn with (ASFF level weights, CAMs: 0-1), or {} for the style's.
    """

    heat: np.ndarray
    cells: np.ndarray
    caption: str
    key: str
    fixed: dict[str, float] = field(default_factory=dict)

    def limits(self, scaled: dict[str, float]) -> dict[str, float]:
        """The value range it is drawn with: fixed, else the scale's, else its own cells' (so the colour bar shows
        the numbers the caption gives, not those of the interpolated picture)."""
        if self.fixed:
            return self.fixed
        low, high = value_range(self.cells)
        return {"vmin": low, "vmax": high, **scaled}


def panels(
    analysis: Analysis,
    loaded: LoadedModel,
    width: int | None,
    *,
    every_block: bool,
    cams: dict[int, CamRunner] | None = None,
    cam_name: str = "CAM",
) -> list[tuple[int | None, list[Panel]]]:
    """(stage, panels) per drawn block: one panel per spatial-type map (spatial, coordinate product, ASFF level),
    followed, with `cams`, by the CAM of the block's stage for the predicted class; maps drawn on the photo
    `width` pixels wide (None: at its own size)."""
    by_layer = {
        layer: maps for layer, maps in analysis.recording.by_layer().items() if any(m.kind in KINDS for m in maps)
    }
    rows = []
    for layer in stage_representatives(loaded, list(by_layer), every_block=every_block):
        row = _spatial_panels(analysis, loaded, by_layer[layer], width)
        stage = loaded.stage_of(layer)
        if row and cams and stage in cams:
            row.append(_cam_panel(analysis, loaded, cams[stage], stage, cam_name, width))
        if row:
            rows.append((stage, row))
    return rows


def _overlay(photo: Image.Image, panel: Panel, style: Style, limits: dict[str, float]) -> Image.Image:
    value_range = panel.limits(limits)
    return overlay(
        photo,
        panel.heat,
        cmap=style.cmap,
        alpha=style.alpha,
        contour=style.contour,
        colorbar=style.colorbar,
        **value_range,
    )


def _full_size(
    analysis: Analysis,
    loaded: LoadedModel,
    style: Style,
    every_block: bool,
    cams: dict[int, CamRunner] | None,
    cam_name: str,
    each: bool,
    heat_only: bool,
) -> dict[str, Image.Image]:
    """Per map, the overlay and/or the transparent heat layer at the photo's full resolution (scaled down to
    MAX_FULL_PIXELS for larger photos)."""
    width = full_width(analysis.image.size)
    rows = panels(analysis, loaded, width, every_block=every_block, cams=cams, cam_name=cam_name)
    limits = scale_limits([(stage, p.cells) for stage, row in rows for p in row if not p.fixed], style)
    pictures: dict[str, Image.Image] = {}
    for stage, row in rows:
        for panel in row:
            value_range = panel.limits(limits.get(stage, {}))
            if each:
                pictures[panel.key] = _overlay(analysis.thumbnail(width), panel, style, limits.get(stage, {}))
            if heat_only:
                pictures[f"{panel.key}_heat"] = heat_layer(panel.heat, style, **value_range)
    return pictures


def heat_layer(heat: np.ndarray, style: Style, **value_range: float) -> Image.Image:
    """The heat alone as an RGBA image: the colormap's colours at the style's opacity, transparent where unseen."""
    rgba = colorize(heat, style.cmap, **value_range)
    rgba[..., 3] = np.where(rgba[..., 3] > 0, round(255 * style.alpha), 0).astype(np.uint8)
    return Image.fromarray(rgba, "RGBA")


def _cam_panel(
    analysis: Analysis, loaded: LoadedModel, runner: CamRunner, stage: int, name: str, width: int | None
) -> Panel:
    """The stage's CAM for the class the model predicts."""
    assert analysis.tensor is not None
    predicted = analysis.output.argmax(1)
    cells = runner(analysis.tensor, predicted)[0]
    classes = loaded.weights_info.classes if loaded.weights_info else None
    label = classes[int(predicted[0])] if classes else f"class {int(predicted[0])}"
    caption = f"stage {stage} · {name} of the prediction ({label})"
    heat = analysis.on_photo(cells, width)
    return Panel(heat, cells, caption, f"stage{stage}_{name.lower()}", {"vmin": 0.0, "vmax": 1.0})


def _spatial_panels(
    analysis: Analysis, loaded: LoadedModel, maps: list[AttentionMap], width: int | None
) -> list[Panel]:
    """A Panel for each spatial-type map of one block."""
    row = []
    for m in maps:
        key = f"{m.layer.replace('.', '-')}_{m.label}" + (f"-{m.call}" if m.call else "")
        if m.kind == "spatial":
            cells = plane(m)[0]
            caption = f"{describe(m, loaded)} · {range_note(cells)}"
            row.append(Panel(analysis.on_photo(cells, width), cells, caption, key))
        elif m.kind == "level":
            for level, cells in enumerate(level_planes(m)[0]):
                heat = analysis.on_photo(cells, width)
                caption = f"{describe(m, loaded)} · level {level}"
                row.append(Panel(heat, cells, caption, f"{key}-level{level}", {"vmin": 0.0, "vmax": 1.0}))
    coordinate = [m for m in maps if m.kind == "coordinate"]
    for h_map, w_map in zip(coordinate[::2], coordinate[1::2], strict=False):
        cells = coordinate_outer(h_map, w_map)[0]
        where = describe(h_map, loaded).rsplit(" · ", 1)[0]
        key = f"{h_map.layer.replace('.', '-')}_coordinate"
        caption = f"{where} · a_h x a_w · {range_note(cells)}"
        row.append(Panel(analysis.on_photo(cells, width), cells, caption, key))
    return row


def show_picture(analysis: Analysis, rows: list[list[Image.Image]]) -> Image.Image:
    """Lay out the overlays with the photo for reference, every tile the same size and lined up.

    Blocks with one map each go in rows after the photo (up to 5 tiles a row, fewer for wide photos); blocks with
    several maps (Triplet's three branches) get a row each, led by the photo.
    """
    photo = tile(
        analysis.thumbnail(tile_width(analysis.image.size)),
        f"{analysis.path.name} ({analysis.image.width}x{analysis.image.height})",
    )
    if all(len(row) == 1 for row in rows):
        tiles = equal_heights([photo, *(row[0] for row in rows)])
        return grid(tiles, grid_columns(len(tiles), (max(t.width for t in tiles), tiles[0].height)))
    width = 1 + max(len(row) for row in rows)
    tiles = []
    for row in rows:
        tiles += [photo, *row] + [blank_like(photo)] * (width - 1 - len(row))
    return grid(equal_heights(tiles), width)
