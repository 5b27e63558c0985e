"""What `attnviz asff-weights` draws and reports for one photo through a detector, as a View.

    asff_levels      one row per ASFF module: each source level's weight on the photo, on one 0-1 colour scale
    asff_dominant    per ASFF module, each pixel coloured by the source level with the largest weight
    asff_detections  the boxes on the photo, each with a bar of its mean level weights (attnviz detectors only)
    asff_shares      the mean level weights inside the boxes, by object size (attnviz detectors only)

The summary is the command's `--json` result without its "files"; `detections_table` gives the rows of the table it
prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from attnviz.detection import DETECTOR_STRIDES, LEVEL_NAMES
from attnviz.views.base import View
from attnviz.views.common import MAX_TILE_HEIGHT, TILE_WIDTH

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from attnviz.detection.analysis import DetectorAnalysis, LevelMap
    from attnviz.detection.files import LoadedDetector

FONT = 17  # caption font size on TILE_WIDTH tiles
DETECTION_WIDTH = (480, 960)  # the detections are drawn on the photo scaled into this width range


def asff_view(
    analysis: DetectorAnalysis, loaded: LoadedDetector, *, score: float, cmap: str = "viridis", alpha: float = 0.55
) -> View:
    """The pictures and summary of one photo through a detector (see the module docstring).

    Args:
        analysis: What `analyse_detector` found (its input size and fitting mode are the ones drawn and reported).
        loaded: The detector it ran.
        score: The score the detections were kept at (for the captions).
        cmap: Matplotlib colormap of the weight maps.
        alpha: Opacity of the weight maps over the photo, 0-1.

    Returns:
        A View named after the detector file (`file_slug` of its stem) and the image's stem, so `view.save(out)`
        writes the files the CLI writes.
    """
    from attnviz.models.foreign import file_slug

    pictures: dict[str, Image.Image | Figure] = {
        "asff_levels": levels_picture(analysis, cmap=cmap, alpha=alpha),
        "asff_dominant": dominant_picture(analysis),
    }
    if analysis.detections is not None:
        pictures["asff_detections"] = detections_picture(analysis, score)
        pictures["asff_shares"] = shares_chart(analysis, loaded)
    return View(pictures, summary(analysis, loaded), file_slug(loaded.path.stem), analysis.path.stem, analysis, loaded)


# ------------------------------------------------------------------------------------------------------ pictures


def _source_label(level: LevelMap, k: int) -> str:
    if not level.order_known:
        return f"input {k} (order unknown)"
    stride = f" (stride {level.source_strides[k]:g})" if level.source_strides else ""
    return f"{LEVEL_NAMES[k]}{stride}"


def _short_label(level: LevelMap, k: int) -> str:
    return LEVEL_NAMES[k] if level.order_known else f"input {k}"


def _header(level: LevelMap, index: int, side: int) -> list[str]:
    """Row header of an ASFF module: its path, the level it outputs, that level's grid and stride."""
    h, w = level.grid
    return [level.layer, f"→ level {index}", f"{h}x{w} cells", f"stride {level.stride(side):g}"]


def _thumbnail(analysis: DetectorAnalysis, width: int) -> Image.Image:
    """The photo `width` px wide, or narrower where that would make it taller than MAX_TILE_HEIGHT."""
    photo = analysis.image
    width = max(1, min(width, MAX_TILE_HEIGHT * photo.width // photo.height))
    height = max(1, round(photo.height * width / photo.width))
    return photo.resize((width, height), Image.Resampling.BILINEAR)


def photo_stats(analysis: DetectorAnalysis, level: LevelMap) -> dict[str, np.ndarray]:
    """What the pictures' captions and `--json` both report of one ASFF module, measured on the photo's pixels that
    the detector saw (drawn at the tile size): per source level the mean, least and largest weight, and the share
    of pixels where it dominates. One source for both, so the numbers drawn are the numbers printed."""
    size = _thumbnail(analysis, TILE_WIDTH).size
    stacked = np.stack([analysis.on_photo(cells, size) for cells in level.planes])
    seen = np.isfinite(stacked).all(axis=0)
    values = stacked[:, seen]
    if not values.size:
        nan = np.full(3, np.nan)
        return {"mean": nan, "low": nan, "high": nan, "dominant": nan}
    dominant = np.bincount(values.argmax(axis=0), minlength=3) / values.shape[1]
    stats = {"mean": values.mean(axis=1), "low": values.min(axis=1), "high": values.max(axis=1), "dominant": dominant}
    return {name: np.round(v, 4) for name, v in stats.items()}  # as printed: the captions round the same numbers


def levels_picture(analysis: DetectorAnalysis, *, cmap: str, alpha: float) -> Image.Image:
    """One row per ASFF module (fine output level first): a header, then each source level's weight on the photo,
    all on one 0-1 colour scale (drawn once under the grid)."""
    from attnviz.render.layout import captioned, colorbar_strip, grid, stack, text_tile
    from attnviz.render.overlay import overlay

    photo = _thumbnail(analysis, TILE_WIDTH)
    tiles = []
    for index, level in enumerate(analysis.levels):
        row = []
        stats = photo_stats(analysis, level)
        for k, cells in enumerate(level.planes):
            heat = analysis.on_photo(cells, photo.size)
            values = f"mean {stats['mean'][k]:.2f} ({stats['low'][k]:.2f}-{stats['high'][k]:.2f})"
            picture = overlay(photo, heat, cmap=cmap, alpha=alpha, vmin=0.0, vmax=1.0)
            row.append(captioned(picture, f"from {_source_label(level, k)}\n{values}", font_size=FONT))
        header = text_tile(_header(level, index, analysis.input_size), (TILE_WIDTH // 2, row[0].height), font_size=FONT)
        tiles += [header, *row]
    table = grid(tiles, 4)
    bar = colorbar_strip(cmap, table.width, "fusion weight (softmax over the three source levels):", font_size=FONT)
    return stack([table, bar])


def _dominant_labels(analysis: DetectorAnalysis, level: LevelMap, size: tuple[int, int]) -> np.ndarray:
    """(H, W) index of the source level with the largest weight at each pixel of the photo; -1 where unseen."""
    stacked = np.stack([analysis.on_photo(cells, size) for cells in level.planes])
    seen = np.isfinite(stacked).all(axis=0)
    labels = np.argmax(np.nan_to_num(stacked, nan=-1.0), axis=0)
    return np.where(seen, labels, -1)


def dominant_caption(analysis: DetectorAnalysis, level: LevelMap, index: int) -> str:
    """The caption of one module's tile in the dominant-level picture: its shares, as `--json` reports them."""
    dominant = photo_stats(analysis, level)["dominant"]
    shares = ", ".join(f"{_short_label(level, k)} {100 * dominant[k]:.0f}%" for k in range(3))
    h, w = level.grid
    return f"{level.layer} → level {index} ({h}x{w})\n{shares}"


def dominant_picture(analysis: DetectorAnalysis) -> Image.Image:
    """Per ASFF module, each pixel coloured by the source level that dominates it, with a legend."""
    from attnviz.detection.drawing import LEVEL_COLORS, category_overlay
    from attnviz.render.layout import captioned, grid, legend, stack, text_strip

    photo = _thumbnail(analysis, TILE_WIDTH)
    tiles = []
    for index, level in enumerate(analysis.levels):
        labels = _dominant_labels(analysis, level, photo.size)
        caption = dominant_caption(analysis, level, index)
        tiles.append(captioned(category_overlay(photo, labels, LEVEL_COLORS), caption, font_size=FONT))
    combined = grid(tiles, len(tiles))
    first = analysis.levels[0]
    title = "Dominant source level: the level with the largest fusion weight at each pixel, per ASFF module"
    entries = [(colour, _source_label(first, k)) for k, colour in enumerate(LEVEL_COLORS)]
    return stack(
        [combined, text_strip(title, combined.width, font_size=FONT), legend(entries, combined.width, font_size=FONT)]
    )


def detections_picture(analysis: DetectorAnalysis, score: float) -> Image.Image:
    """The detections on the photo, each labelled "#i class score" over a bar of its mean level weights."""
    from attnviz.detection.drawing import LEVEL_COLORS, draw_boxes
    from attnviz.render.layout import legend, stack, text_strip

    low, high = DETECTION_WIDTH
    width = min(high, max(low, analysis.image.width))
    photo = _thumbnail(analysis, width)
    scale = photo.width / analysis.image.width
    found = analysis.detections or []
    drawn = draw_boxes(
        photo,
        [[v * scale for v in d.box] for d in found],
        [f"#{i + 1} {d.name} {d.score:.2f}" for i, d in enumerate(found)],
        shares=[list(d.weights) for d in found],
    )
    head = (
        f"{len(found)} detection{'s' if len(found) != 1 else ''} with score ≥ {score:g}. The bar under each label: "
        "the mean fusion weight inside the box from each source level (ASFF module of the level that found it)."
        if found
        else f"No detections with score ≥ {score:g} (a lower --score shows weaker ones)."
    )
    names = [f"{n} (stride {s})" for n, s in zip(LEVEL_NAMES, DETECTOR_STRIDES, strict=True)]
    font = max(13, width // 45)
    return stack(
        [
            text_strip(head, max(drawn.width, low), font_size=font),  # a tall photo's text keeps its width
            drawn,
            legend(list(zip(LEVEL_COLORS, names, strict=True)), max(drawn.width, low), font_size=font),
        ]
    )


def bucket_shares(analysis: DetectorAnalysis) -> list[tuple[str, int, list[float] | None]]:
    """(size bucket, number of boxes, mean level weights or None) for small, medium and large detections."""
    from attnviz.detection.model import SIZE_BUCKETS

    found = analysis.detections or []
    rows = []
    for bucket in SIZE_BUCKETS:
        weights = [d.weights for d in found if d.bucket == bucket]
        rows.append((bucket, len(weights), [float(v) for v in np.mean(weights, axis=0)] if weights else None))
    return rows


def shares_chart(analysis: DetectorAnalysis, loaded: LoadedDetector) -> Figure:
    """A stacked bar per object size: the mean weight of each source level inside the boxes of that size."""
    from attnviz.detection.drawing import level_share_chart

    assert loaded.config is not None
    small, medium = loaded.config.level_bounds
    strides = loaded.config.strides
    side = analysis.input_size
    return level_share_chart(
        bucket_shares(analysis),
        [f"from {n} (stride {s})" for n, s in zip(LEVEL_NAMES, strides, strict=True)],
        title=f"Where the fusion draws from, by object size ({analysis.path.name})",
        note=f"size: the box's longer side in the {side}x{side} input; small < {small} px, medium < {medium} px, "
        "large beyond (the level whose head detects it)",
    )


# ----------------------------------------------------------------------------------------------- table and JSON


@dataclass(frozen=True)
class TableData:
    """A table to print: its title, column names (those in `left` aligned left, the rest right) and text rows."""

    title: str
    columns: tuple[str, ...]
    left: tuple[str, ...]
    rows: list[list[str]]


def detections_table(analysis: DetectorAnalysis, score: float) -> TableData:
    """The detections, one row each: class, score, box on the photo, size, level and the mean level weights."""
    title = f"{analysis.path.name}: detections (score ≥ {score:g}) and the mean fusion weights inside each box"
    columns = ("#", "class", "score", "box x0,y0,x1,y1", "size (input px)", "level", *LEVEL_NAMES)
    rows = [
        [
            str(i + 1),
            d.name,
            f"{d.score:.2f}",
            ",".join(f"{v:.0f}" for v in d.box),
            f"{d.bucket} {d.side:.0f}",
            str(d.level),
            *(f"{w:.2f}" for w in d.weights),
        ]
        for i, d in enumerate(analysis.detections or [])
    ]
    return TableData(title, columns, ("class", "box x0,y0,x1,y1", "size (input px)"), rows)


def _level_summary(analysis: DetectorAnalysis, level: LevelMap, side: int) -> dict[str, Any]:
    stats = photo_stats(analysis, level)
    names = LEVEL_NAMES if level.order_known else ("input 0", "input 1", "input 2")
    return {
        "layer": level.layer,
        "type": level.type,
        "grid": list(level.grid),
        "stride": level.stride(side),
        "source_strides": level.source_strides,
        "order_known": level.order_known,
        "mean_weights": {n: round(float(v), 4) for n, v in zip(names, stats["mean"], strict=True)},
        "dominant_share": {n: round(float(v), 4) for n, v in zip(names, stats["dominant"], strict=True)},
    }


def summary(analysis: DetectorAnalysis, loaded: LoadedDetector) -> dict[str, Any]:
    """JSON-ready: the detector, the input, every ASFF module's mean and dominant level weights, and (attnviz
    detectors) every box and the level shares by object size."""
    side = analysis.input_size
    result: dict[str, Any] = {
        "detector": str(loaded.path),
        "source": loaded.source,
        "trained": loaded.trained,
        "image": str(analysis.path),
        "input_size": side,
        "preprocess": analysis.mode,
        "modules": [m.summary() for m in loaded.modules],
        "levels": [_level_summary(analysis, level, side) for level in analysis.levels],
        "detections": None,
        "shares_by_size": None,
    }
    if analysis.detections is None:
        result["note"] = "detections are drawn only for attnviz detectors"
        return result
    result["detections"] = [d.summary() for d in analysis.detections]
    result["shares_by_size"] = {
        bucket: {
            "boxes": count,
            "level_weights": dict(zip(LEVEL_NAMES, [round(v, 4) for v in shares], strict=True)) if shares else None,
        }
        for bucket, count, shares in bucket_shares(analysis)
    }
    return result
