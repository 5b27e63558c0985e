"""`attnviz asff-weights DET IMAGE`: a detector's ASFF fusion weights on a photo, per level, per pixel and per box."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from attnviz.cli import options as opt
from attnviz.cli.common import err, guarded, out, report
from attnviz.errors import UsageError
from attnviz.models import DETECTOR_STRIDES as STRIDES
from attnviz.models import LEVEL_NAMES

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from attnviz.asff_analysis import DetectorAnalysis, LevelMap, LoadedDetector

TILE_WIDTH = 360
FONT = 17  # caption font size on TILE_WIDTH tiles
DETECTION_WIDTH = (480, 960)  # the detections are drawn on the photo scaled into this width range


@guarded
def asff_weights(
    det: Annotated[
        Path,
        typer.Argument(
            help="Detector file: det.pt from `attnviz fit-det`, a pickled model (needs --trust), or 'demo' for the "
            "shipped demo detector.",
            show_default=False,
        ),
    ],
    image: Annotated[Path, typer.Argument(help="Image file.", show_default=False)],
    score: Annotated[float, typer.Option("--score", help="Draw detections with at least this score (0-1).")] = 0.3,
    iou: Annotated[float, typer.Option("--iou", help="Overlap above which NMS drops the weaker box.")] = 0.5,
    max_detections: Annotated[int, typer.Option("--max-detections", help="Most boxes drawn.")] = 50,
    trust: opt.TrustOpt = False,
    size: Annotated[
        int | None,
        typer.Option(
            "--size",
            help="Side of the square input (default: the detector's training size; 416 for a pickled model).",
        ),
    ] = None,
    preprocess: opt.PreprocessOpt = "letterbox",
    out_dir: opt.OutOpt = Path("attnviz-out"),
    fmt: opt.FormatOpt = "png",
    cmap: opt.CmapOpt = "viridis",
    alpha: opt.AlphaOpt = 0.55,
    device: opt.DeviceOpt = "auto",
    as_json: opt.JsonOpt = False,
) -> None:
    """Draw where each ASFF module takes its features from: the three weight maps of every fusion level on the
    photo, the dominant source level per pixel, the detections with the mean weight of each level inside each box,
    and the level shares by object size.

    A pickled model (as YOLO-style repositories save them) needs --trust; its ASFF-like modules are found by
    structure and only their maps are drawn (its outputs are not decoded).
    """
    from attnviz.asff_analysis import analyse_detector, load_detector
    from attnviz.images import load_image
    from attnviz.io.shipped import detector_path
    from attnviz.models.foreign import file_slug
    from attnviz.pipeline import resolve_device
    from attnviz.render.save import save

    opt.check_common(size=size, preprocess=preprocess, fmt=fmt, alpha=alpha, device=device, cmap=cmap)
    opt.check_out_dir(out_dir)
    if not 0.0 <= score <= 1.0 or not 0.0 < iou <= 1.0:
        raise UsageError("--score must be in 0..1 and --iou in (0, 1]", f"got --score {score} --iou {iou}")
    if max_detections < 1:
        raise UsageError(f"--max-detections must be at least 1, got {max_detections}")
    det = detector_path(det)
    if not det.exists():
        raise UsageError(f"detector file not found: {det}", "check the path, or train one with attnviz fit-det")
    photo = load_image(image)  # a bad image fails before the detector is read
    loaded = load_detector(det, trust=trust, device=resolve_device(device))
    if not as_json:
        style = "dim" if loaded.trained else "yellow"
        note = "" if loaded.trained else " (untrained: the maps show the mechanics, not learned fusion)"
        err.print(f"[{style}]detector: {escape(loaded.source)}{note}[/]")
    analysis = analyse_detector(
        loaded, image, size=size, mode=preprocess, score=score, iou=iou, max_detections=max_detections, image=photo
    )
    side = loaded.input_size(size)
    name = file_slug(det.stem)
    pictures: list[tuple[str, Any]] = [
        ("asff_levels", levels_picture(analysis, side, cmap=cmap, alpha=alpha)),
        ("asff_dominant", dominant_picture(analysis, side)),
    ]
    if analysis.detections is not None:
        pictures.append(("asff_detections", detections_picture(analysis, score)))
        pictures.append(("asff_shares", shares_chart(analysis, loaded, side)))
    written = [save(picture, opt.output_path(out_dir, image.stem, name, what, fmt), fmt) for what, picture in pictures]
    if analysis.detections is None and not as_json:
        err.print("[yellow]detections are drawn only for attnviz detectors; this model's outputs are not decoded[/]")
    elif analysis.detections and not as_json:
        out.print(detections_table(analysis, score))
    elif not as_json:
        err.print(f"no detections with score ≥ {score:g} (a lower --score shows weaker ones)", markup=False)
    report(written, summary(analysis, loaded, det, image, side, preprocess), as_json=as_json)


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
    from PIL import Image

    photo = analysis.image
    height = max(1, round(photo.height * width / photo.width))
    return photo.resize((width, height), Image.Resampling.BILINEAR)


def levels_picture(analysis: DetectorAnalysis, side: int, *, cmap: str, alpha: float) -> Image.Image:
    """One row per ASFF module (fine output level first): a header, then each source level's weight on the photo,
    all on one 0-1 colour scale (drawn once under the grid)."""
    import numpy as np

    from attnviz.render.detection import captioned, colorbar_strip, stack, text_tile
    from attnviz.render.overlay import grid, overlay

    photo = _thumbnail(analysis, TILE_WIDTH)
    tiles = []
    for index, level in enumerate(analysis.levels):
        row = []
        for k, cells in enumerate(level.planes):
            heat = analysis.on_photo(cells, photo.size)
            finite = heat[np.isfinite(heat)]
            low, high = (float(finite.min()), float(finite.max())) if finite.size else (float("nan"),) * 2
            values = f"mean {float(finite.mean()) if finite.size else float('nan'):.2f} ({low:.2f}-{high:.2f})"
            picture = overlay(photo, heat, cmap=cmap, alpha=alpha, vmin=0.0, vmax=1.0)
            row.append(captioned(picture, f"from {_source_label(level, k)}\n{values}", font_size=FONT))
        header = text_tile(_header(level, index, side), (TILE_WIDTH // 2, row[0].height), font_size=FONT)
        tiles += [header, *row]
    table = grid(tiles, 4)
    bar = colorbar_strip(cmap, table.width, "fusion weight (softmax over the three source levels):", font_size=FONT)
    return stack([table, bar])


def _dominant_labels(analysis: DetectorAnalysis, level: LevelMap, size: tuple[int, int]) -> np.ndarray:
    """(H, W) index of the source level with the largest weight at each pixel of the photo; -1 where unseen."""
    import numpy as np

    stacked = np.stack([analysis.on_photo(cells, size) for cells in level.planes])
    seen = np.isfinite(stacked).all(axis=0)
    labels = np.argmax(np.nan_to_num(stacked, nan=-1.0), axis=0)
    return np.where(seen, labels, -1)


def dominant_picture(analysis: DetectorAnalysis, side: int) -> Image.Image:
    """Per ASFF module, each pixel coloured by the source level that dominates it, with a legend."""
    from attnviz.render.detection import LEVEL_COLORS, captioned, category_overlay, legend, stack, text_strip
    from attnviz.render.overlay import grid

    photo = _thumbnail(analysis, TILE_WIDTH)
    tiles = []
    for index, level in enumerate(analysis.levels):
        labels = _dominant_labels(analysis, level, photo.size)
        seen = max(1, int((labels >= 0).sum()))
        shares = ", ".join(f"{_short_label(level, k)} {100 * (labels == k).sum() / seen:.0f}%" for k in range(3))
        h, w = level.grid
        caption = f"{level.layer} → level {index} ({h}x{w})\n{shares}"
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
    from attnviz.render.detection import LEVEL_COLORS, draw_boxes, legend, stack, text_strip

    low, high = DETECTION_WIDTH
    width = min(high, max(low, analysis.image.width))
    photo = _thumbnail(analysis, width)
    scale = width / analysis.image.width
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
    names = [f"{n} (stride {s})" for n, s in zip(LEVEL_NAMES, STRIDES, strict=True)]
    font = max(13, width // 45)
    return stack(
        [
            text_strip(head, drawn.width, font_size=font),
            drawn,
            legend(list(zip(LEVEL_COLORS, names, strict=True)), drawn.width, font_size=font),
        ]
    )


def bucket_shares(analysis: DetectorAnalysis) -> list[tuple[str, int, list[float] | None]]:
    """(size bucket, number of boxes, mean level weights or None) for small, medium and large detections."""
    import numpy as np

    from attnviz.models.detector import SIZE_BUCKETS

    found = analysis.detections or []
    rows = []
    for bucket in SIZE_BUCKETS:
        weights = [d.weights for d in found if d.bucket == bucket]
        rows.append((bucket, len(weights), [float(v) for v in np.mean(weights, axis=0)] if weights else None))
    return rows


def shares_chart(analysis: DetectorAnalysis, loaded: LoadedDetector, side: int) -> Any:
    from attnviz.render.detection import level_share_chart

    assert loaded.config is not None
    small, medium = loaded.config.level_bounds
    strides = loaded.config.strides
    return level_share_chart(
        bucket_shares(analysis),
        [f"from {n} (stride {s})" for n, s in zip(("fine", "mid", "coarse"), strides, strict=True)],
        title=f"Where the fusion draws from, by object size ({analysis.path.name})",
        note=f"size: the box's longer side in the {side}x{side} input; small < {small} px, medium < {medium} px, "
        "large beyond (the level whose head detects it)",
    )


# -------------------------------------------------------------------------------------------- terminal and JSON


def detections_table(analysis: DetectorAnalysis, score: float) -> Table:
    title = f"{analysis.path.name}: detections (score ≥ {score:g}) and the mean fusion weights inside each box"
    table = Table(title=title)
    for column in ("#", "class", "score", "box x0,y0,x1,y1", "size (input px)", "level", "fine", "mid", "coarse"):
        left = column in ("class", "box x0,y0,x1,y1", "size (input px)")
        table.add_column(column, justify="left" if left else "right", overflow="fold")
    for i, d in enumerate(analysis.detections or []):
        table.add_row(
            str(i + 1),
            d.name,
            f"{d.score:.2f}",
            ",".join(f"{v:.0f}" for v in d.box),
            f"{d.bucket} {d.side:.0f}",
            str(d.level),
            *(f"{w:.2f}" for w in d.weights),
        )
    return table


def summary(
    analysis: DetectorAnalysis, loaded: LoadedDetector, det: Path, image: Path, side: int, preprocess: str
) -> dict[str, Any]:
    import numpy as np

    levels = []
    for level in analysis.levels:
        flat = level.planes.reshape(3, -1)
        dominant = np.bincount(flat.argmax(axis=0), minlength=3) / flat.shape[1]
        names = LEVEL_NAMES if level.order_known else ("input 0", "input 1", "input 2")
        levels.append(
            {
                "layer": level.layer,
                "type": level.type,
                "grid": list(level.grid),
                "stride": level.stride(side),
                "source_strides": level.source_strides,
                "order_known": level.order_known,
                "mean_weights": {n: round(float(v), 4) for n, v in zip(names, flat.mean(axis=1), strict=True)},
                "dominant_share": {n: round(float(v), 4) for n, v in zip(names, dominant, strict=True)},
            }
        )
    result: dict[str, Any] = {
        "detector": str(det),
        "source": loaded.source,
        "trained": loaded.trained,
        "image": str(image),
        "input_size": side,
        "preprocess": preprocess,
        "modules": [m.summary() for m in loaded.modules],
        "levels": levels,
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
