"""The pictures each command draws, composed from an Analysis: which maps to pick, how to caption and lay them out.

Everything here returns PIL images or matplotlib Figures; the CLI decides where they go.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from attnviz.maps import AttentionMap, channel_vector, criss_cross_plane, entropy, level_planes, query_plane
from attnviz.pipeline import Analysis, LoadedModel
from attnviz.render.overlay import caption_tile, grid, mark_point, overlay

TILE_WIDTH = 360


def stage_representatives(loaded: LoadedModel, layers: Sequence[str], *, every_block: bool) -> list[str]:
    """The layers to draw: all of them, or the last block of each stage (the stage's output)."""
    if every_block:
        return list(layers)
    last: dict[int, str] = {}
    for layer in layers:
        last[loaded.stage_of(layer) or 0] = layer
    return [last[s] for s in sorted(last)]


def describe(m: AttentionMap, loaded: LoadedModel) -> str:
    stage = loaded.stage_of(m.layer)
    where = f"stage {stage} · {m.layer}" if stage else m.layer
    dims = "x".join(str(s) for s in m.shape[1:])
    return f"{where} · {m.label} ({dims})"


def _tile(image: Image.Image, caption: str) -> Image.Image:
    if image.width != TILE_WIDTH:
        image = image.resize((TILE_WIDTH, max(1, round(image.height * TILE_WIDTH / image.width))))
    return caption_tile(image, caption)


def _range_note(values: np.ndarray) -> str:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return "nothing seen"
    low, high = float(finite.min()), float(finite.max())
    if np.isclose(low, high, rtol=1e-3, atol=0.0):
        return f"constant {low:.3g}"
    # a softmax over many positions (global context, CoT) holds values far below 0.01
    return f"{low:.2f}-{high:.2f}" if high >= 0.1 else f"{low:.2g}-{high:.2g}"


CamRunner = Callable[[torch.Tensor, torch.Tensor], np.ndarray]


def spatial_rows(
    analysis: Analysis,
    loaded: LoadedModel,
    *,
    every_block: bool,
    cmap: str,
    alpha: float,
    contour: bool = False,
    colorbar: bool = False,
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
            _tile(
                overlay(photo, heat, cmap=cmap, alpha=alpha, contour=contour, colorbar=colorbar, **value_range), caption
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
            pictures.append((heat, f"{describe(m, loaded)} · {_range_note(heat)}", {}))
        elif m.kind == "level":
            for level, cells in enumerate(level_planes(m)[0]):
                heat = analysis.on_photo(cells, TILE_WIDTH)
                pictures.append((heat, f"{describe(m, loaded)} · level {level}", {"vmin": 0.0, "vmax": 1.0}))
    coordinate = [m for m in maps if m.kind == "coordinate"]
    for h_map, w_map in zip(coordinate[::2], coordinate[1::2], strict=False):
        _, _, outer = analysis.coordinate(h_map, w_map, TILE_WIDTH)
        where = describe(h_map, loaded).rsplit(" · ", 1)[0]
        pictures.append((outer, f"{where} · a_h x a_w · {_range_note(outer)}", {}))
    return pictures


def show_picture(analysis: Analysis, rows: list[list[Image.Image]]) -> Image.Image:
    """Lay out the overlays with the photo for reference.

    Blocks with one map each go in a single row after the photo (wrapping after 5 maps); blocks with several
    maps (Triplet's three branches) get a row each, led by the photo.
    """
    photo = _tile(
        analysis.thumbnail(TILE_WIDTH), f"{analysis.path.name} ({analysis.image.width}x{analysis.image.height})"
    )
    if all(len(row) == 1 for row in rows):
        tiles = [photo, *(row[0] for row in rows)]
        return grid(tiles, min(len(tiles), 5))
    width = 1 + max(len(row) for row in rows)
    tiles = []
    for row in rows:
        tiles += [photo, *row] + [_blank_like(photo)] * (width - 1 - len(row))
    return grid(tiles, width)


def _blank_like(tile: Image.Image) -> Image.Image:
    return Image.new("RGB", tile.size, "white")


def tile_grid(tiles: list[Image.Image], columns: int | None = None) -> Image.Image:
    return grid(tiles, columns or min(4, len(tiles)))


def channel_items(analysis: Analysis, loaded: LoadedModel, layers: Sequence[str]) -> list[tuple[str, np.ndarray]]:
    """(caption, per-channel weights of image 0) for every channel map of the given layers."""
    items = []
    for m in analysis.recording:
        if m.layer in layers and m.kind == "channel":
            items.append((describe(m, loaded), channel_vector(m)[0]))
    return items


def channel_stats(weights: np.ndarray) -> dict[str, float]:
    return {
        "mean": float(weights.mean()),
        "std": float(weights.std()),
        "entropy": float(entropy(weights) / np.log(max(2, weights.size))),
        "top": [int(i) for i in np.argsort(-weights)[:5]],
    }


def query_tiles(
    analysis: Analysis,
    loaded: LoadedModel,
    points: Sequence[tuple[float, float]],
    *,
    cmap: str,
    alpha: float,
    every_block: bool,
) -> list[Image.Image]:
    """For each grid matrix (and criss-cross map) and each query point: where that pixel looks, per head."""
    tiles = []
    photo = analysis.thumbnail(TILE_WIDTH)
    scale = photo.width / analysis.image.width
    layers = stage_representatives(loaded, analysis.recording.layers(), every_block=every_block)
    for m in analysis.recording:
        if m.layer not in layers or m.kind != "matrix" or m.tokens not in ("grid", "row_col"):
            continue
        for x, y in points:
            for head, cells in _query_planes(analysis, m, x, y):
                heat = analysis.on_photo(cells, TILE_WIDTH)
                picture = mark_point(overlay(photo, heat, cmap=cmap, alpha=alpha), (x * scale, y * scale))
                head_note = f" · head {head}" if head is not None else ""
                tiles.append(_tile(picture, f"{describe(m, loaded)}{head_note} · query {x:g},{y:g}"))
    return tiles


def _query_planes(analysis: Analysis, m: AttentionMap, x: float, y: float) -> list[tuple[int | None, np.ndarray]]:
    from attnviz.images import original_to_cell

    x, y = x + 0.5, y + 0.5  # pixel (x, y) -> its centre, in the continuous coordinates of attnviz.images
    if m.tokens == "row_col":
        _, h, w, _ = m.shape
        cell = original_to_cell(x, y, analysis.geometry, h, w)
        return [] if cell is None else [(None, criss_cross_plane(m, *cell)[0])]
    assert m.grid is not None
    cell = original_to_cell(x, y, analysis.geometry, *m.grid)
    if cell is None:
        return []
    planes = query_plane(m, cell[0] * m.grid[1] + cell[1])[0]
    heads = m.heads if m.heads is not None else list(range(planes.shape[0]))
    return [(heads[i] if len(heads) > 1 else None, planes[i]) for i in range(planes.shape[0])]
