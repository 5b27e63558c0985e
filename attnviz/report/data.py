"""What the report holds: every captured map of one analysed image, grouped by stage and block, as arrays the page
draws (see `encode` for how they travel).

Maps are kept at their own resolution (a 6x6 spatial map is 36 numbers); the page resamples them onto the photo
exactly as `attnviz.images.map_to_original` does, from the geometry stored beside them, so every layer lines up
with the photo at its own aspect whatever resize, crop or letterbox fed the model.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from attnviz.maps import (
    AttentionMap,
    channel_vector,
    coordinate_outer,
    level_planes,
    matrix_rows,
    plane,
    selection_weights,
)
from attnviz.report.encode import exact, quantised, quantised_rows

if TYPE_CHECKING:
    from attnviz.analysis import Analysis
    from attnviz.cam import CamRunner
    from attnviz.loading import LoadedModel

HEATMAP_SIDE = 256
"""Channel x channel (and sequence) matrices larger than this are averaged in blocks down to at most this side."""
MIN_QUERY_SIDE = 4
"""Coarsening never leaves fewer than this many query rows along a side of a grid."""


def geometry_of(analysis: Any) -> dict[str, Any]:
    """The geometry the page needs to put a map on the photo (as `attnviz.images.map_to_original` does)."""
    g = analysis.geometry
    return {
        "original": list(g.original_size),
        "input": list(g.input_size),
        "resized": list(g.resized_size),
        "offset": list(g.offset),
        "mode": g.mode,
        "placement": getattr(analysis, "placement", "tiled"),
    }


def collect(
    analysis: Analysis,
    loaded: LoadedModel | None = None,
    *,
    cams: dict[int, CamRunner] | None = None,
    cam_name: str = "Grad-CAM",
    query_stride: int = 1,
) -> tuple[list[dict[str, Any]], list[str]]:
    """(stages, notes): every map of `analysis` as the page's entries, grouped by stage then block.

    Args:
        analysis: The image through the model.
        loaded: The model, for the stage of each block (without it the stage is read from each map's stride).
        cams: Per stage, a CAM runner whose map for the predicted class goes beside that stage's maps.
        cam_name: The CAM's name in captions.
        query_stride: Keep the attention rows of every `query_stride`-th cell of each grid (1: every cell's).
    """
    maps = list(analysis.recording)
    owner = _owners([m.layer for m in maps], loaded)
    stage_of = _stage_finder(analysis, loaded, maps, owner)
    stages: dict[int, dict[str, list[dict[str, Any]]]] = {}
    notes: list[str] = []
    for layer in dict.fromkeys(owner(m.layer) for m in maps):
        group = [m for m in maps if owner(m.layer) == layer]
        entries = _entries(group, query_stride, notes)
        if entries:
            stages.setdefault(stage_of(layer), {})[layer] = entries
    result = []
    for stage in sorted(stages):
        blocks = [{"layer": layer, "block": _block_name(maps, layer), "maps": e} for layer, e in stages[stage].items()]
        item: dict[str, Any] = {"stage": stage, "title": f"stage {stage}" if stage else "other", "blocks": blocks}
        if cams and stage in cams:
            item["cam"] = _cam_entry(analysis, loaded, cams[stage], stage, cam_name)
        result.append(item)
    return result, notes


def _block_name(maps: Sequence[AttentionMap], layer: str) -> str:
    return next((m.block for m in maps if m.layer == layer or m.layer.startswith(layer + ".")), "")


def _owners(layers: list[str], loaded: LoadedModel | None) -> Callable[[str], str]:
    """layer -> the block it belongs to: the model's registered block path above it, else the shortest recorded
    layer above it (ECA+MHSA's `layer3.0.attn.attention` belongs to `layer3.0.attn`)."""
    known = list(getattr(loaded.model, "attnviz_blocks", {})) if loaded is not None else []
    candidates = sorted(set(known) | set(layers), key=len)

    def owner(layer: str) -> str:
        return next((c for c in candidates if layer == c or layer.startswith(c + ".")), layer)

    return owner


def _grid_of(m: AttentionMap) -> tuple[int, int] | None:
    if m.grid is not None:
        return m.grid
    if m.tokens == "row_col":
        return int(m.shape[1]), int(m.shape[2])
    h, w = m.size_of("height"), m.size_of("width")
    return (h, w) if h and w else None


def _stage_finder(
    analysis: Analysis, loaded: LoadedModel | None, maps: list[AttentionMap], owner: Callable[[str], str]
) -> Callable[[str], int]:
    """block path -> its stage: the model's own, else from the output stride of its maps (4, 8, 16, 32 -> 1-4), else
    from a `layerN` in its path; 0 when nothing tells."""
    input_h = analysis.geometry.input_size[1]

    def stage(layer: str) -> int:
        if loaded is not None and loaded.stage_of(layer):
            return int(loaded.stage_of(layer))  # type: ignore[arg-type]
        for m in maps:
            grid = _grid_of(m)
            if owner(m.layer) == layer and grid is not None and grid[0] > 1:
                return max(1, round(math.log2(input_h / grid[0])) - 1)
        found = re.search(r"layer(\d)", layer)
        return int(found.group(1)) if found else 0

    return stage


def _caption(m: AttentionMap) -> str:
    dims = "x".join(str(s) for s in m.shape[1:])
    return f"{m.layer} · {m.label} ({dims})"


def _entries(group: list[AttentionMap], query_stride: int, notes: list[str]) -> list[dict[str, Any]]:
    """The page's entries for the maps of one block, in capture order (a/h and a_w as one coordinate entry)."""
    entries: list[dict[str, Any]] = []
    coordinate = [m for m in group if m.kind == "coordinate"]
    for m in group:
        if m.kind == "spatial":
            entries.append(plane_entry(_caption(m), plane(m)[0], name=m.name))
        elif m.kind == "channel":
            values = channel_vector(m)[0]
            entries.append({"type": "bars", "name": m.name, "caption": _caption(m), "values": exact(values)})
        elif m.kind == "selection":
            weights = selection_weights(m)[0]
            branches = list(m.branches) or [f"branch {k}" for k in range(weights.shape[0])]
            entries.append(
                {
                    "type": "selection",
                    "name": m.name,
                    "caption": _caption(m),
                    "branches": branches,
                    "values": exact(weights),
                }
            )
        elif m.kind == "level":
            for level, cells in enumerate(level_planes(m)[0]):
                entries.append(plane_entry(f"{_caption(m)} · level {level}", cells, fixed=(0.0, 1.0), name=m.name))
        elif m.kind == "matrix":
            entry = matrix_entry(m, query_stride)
            if entry is None:
                notes.append(f"{m.name}: a {m.tokens} matrix of shape {m.shape} is not drawn")
            else:
                entries.append(entry)
        elif m.kind == "coordinate" and m is coordinate[0]:
            entries.extend(_coordinate_entries(coordinate))
    return entries


def plane_entry(
    caption: str, cells: np.ndarray, *, fixed: tuple[float, float] | None = None, name: str = ""
) -> dict[str, Any]:
    """A map over the photo: its cells (h x w) and, for maps always coloured over one range (0-1), that range."""
    cells = np.asarray(cells, dtype=np.float32)
    return {
        "type": "plane",
        "name": name or caption,
        "caption": caption,
        "grid": list(cells.shape),
        "cells": quantised(cells),
        "range": list(fixed) if fixed else None,
    }


def _coordinate_entries(coordinate: list[AttentionMap]) -> list[dict[str, Any]]:
    """Coordinate Attention: a_h (one value per row of cells), a_w (per column) and their product a_h x a_w."""
    entries = []
    for h_map, w_map in zip(coordinate[::2], coordinate[1::2], strict=False):
        a_h, a_w = plane(h_map)[0], plane(w_map)[0]
        product = coordinate_outer(h_map, w_map)[0]
        entries.append(
            {
                "type": "coordinate",
                "name": f"{h_map.layer}:a_h*a_w",
                "caption": f"{h_map.layer} · a_h x a_w ({'x'.join(map(str, product.shape))})",
                "a_h": plane_entry(f"{h_map.layer} · a_h", a_h, name=h_map.name),
                "a_w": plane_entry(f"{w_map.layer} · a_w", a_w, name=w_map.name),
                "product": plane_entry(f"{h_map.layer} · a_h x a_w", product),
            }
        )
    return entries


def ordinal(n: int) -> str:
    """2 -> "2nd", 3 -> "3rd", 4 -> "4th"."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def query_tokens(grid: tuple[int, int], stride: int) -> list[int]:
    """Token indices of every `stride`-th cell of a grid, starting half a stride in (row-major)."""
    h, w = grid
    return [r * w + c for r in range(stride // 2, h, stride) for c in range(stride // 2, w, stride)]


def matrix_entry(m: AttentionMap, query_stride: int = 1) -> dict[str, Any] | None:
    """A self-attention map: query rows over a grid, criss-cross rows, or a (pooled) matrix as a heatmap."""
    if m.tokens == "row_col":
        t = m.tensor.float().numpy()[0]
        h, w, keys = t.shape
        return {
            "type": "crisscross",
            "name": m.name,
            "caption": _caption(m),
            "grid": [h, w],
            "rows": quantised_rows(t.reshape(h * w, keys)),
            "note": "each pixel's weights over its own column and row",
        }
    rows = matrix_rows(m)[0]  # (heads, queries, keys)
    heads = m.heads if m.heads is not None else list(range(rows.shape[0]))
    labels = [f"head {h}" for h in heads] if "head" in m.axes and rows.shape[0] > 1 else [""]
    if m.tokens == "grid" and m.grid is not None and rows.shape[2] == m.grid[0] * m.grid[1]:
        return _rows_entry(m, rows, labels, query_stride)
    if m.tokens in ("channel", "sequence") or rows.shape[1] == rows.shape[2]:
        return _heatmap_entry(m, rows, labels)
    return None


def _rows_entry(m: AttentionMap, rows: np.ndarray, labels: list[str], query_stride: int) -> dict[str, Any]:
    assert m.grid is not None
    h, w = m.grid
    queries = m.queries
    stride = max(1, min(query_stride, h // MIN_QUERY_SIDE, w // MIN_QUERY_SIDE))
    if queries is None and stride > 1:
        queries = query_tokens((h, w), stride)
        rows = rows[:, queries]
        side_h, side_w = len(range(stride // 2, h, stride)), len(range(stride // 2, w, stride))
        note = (
            f"rows of every {ordinal(stride)} cell ({side_h}x{side_w} queries) to keep the file small; a click shows "
            "the nearest captured query"
        )
    elif queries is None:
        note = f"every cell's row ({h}x{w} queries)"
    else:
        note = (
            "the row of the one captured query only (the query asked for); `attnviz report` captures every cell's"
            if len(queries) == 1
            else f"rows of {len(queries)} captured queries only; a click shows the nearest of them"
        )
    return {
        "type": "rows",
        "name": m.name,
        "caption": _caption(m),
        "grid": [h, w],
        "heads": labels,
        "queries": queries,
        "rows": quantised_rows(rows),
        "note": note,
    }


def _heatmap_entry(m: AttentionMap, rows: np.ndarray, labels: list[str]) -> dict[str, Any]:
    heads, n, keys = rows.shape
    factor = max(1, math.ceil(max(n, keys) / HEATMAP_SIDE))
    pooled = rows
    if factor > 1:
        pn, pk = math.ceil(n / factor), math.ceil(keys / factor)
        padded = np.full((heads, pn * factor, pk * factor), np.nan, dtype=np.float32)
        padded[:, :n, :keys] = rows
        pooled = np.nanmean(padded.reshape(heads, pn, factor, pk, factor), axis=(2, 4))
    unit = "channel" if m.tokens == "channel" else "token"
    return {
        "type": "heatmap",
        "name": m.name,
        "caption": _caption(m),
        "heads": labels,
        "unit": unit,
        "size": [n, keys],
        "factor": factor,
        "cells": quantised(pooled),
        "note": f"means of {factor}x{factor} blocks of the {n}x{keys} matrix" if factor > 1 else "",
    }


def _cam_entry(
    analysis: Analysis, loaded: LoadedModel | None, runner: CamRunner, stage: int, name: str
) -> dict[str, Any]:
    """The stage's CAM for the class the model predicts, at the input's resolution, coloured over 0-1."""
    assert analysis.tensor is not None
    predicted = analysis.output.argmax(1)
    cells = runner(analysis.tensor, predicted)[0]
    classes = loaded.weights_info.classes if loaded is not None and loaded.weights_info else None
    label = classes[int(predicted[0])] if classes else f"class {int(predicted[0])}"
    return plane_entry(f"stage {stage} · {name} of the prediction ({label})", cells, fixed=(0.0, 1.0), name=name)
