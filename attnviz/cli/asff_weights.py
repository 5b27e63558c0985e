"""`attnviz asff-weights DET IMAGE...`: a detector's ASFF fusion weights on photos, per level, per pixel and per box."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from attnviz.cli import batch
from attnviz.cli import options as opt
from attnviz.cli.common import err, guarded, out

if TYPE_CHECKING:
    from attnviz.detection.views import TableData
    from attnviz.pipeline import Outcome


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
    images: Annotated[list[Path], typer.Argument(help="Image files or folders of images.", show_default=False)],
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
    batch_size: opt.BatchSizeOpt = None,
    workers: opt.WorkersOpt = None,
) -> None:
    """Draw where each ASFF module takes its features from: the three weight maps of every fusion level on the
    photo, the dominant source level per pixel, the detections with the mean weight of each level inside each box,
    and the level shares by object size.

    A pickled model (as YOLO-style repositories save them) needs --trust; its ASFF-like modules are found by
    structure and only their maps are drawn (its outputs are not decoded).
    """
    from attnviz.detection.checks import check_asff_options, detector_file

    opt.check_common(size=size, preprocess=preprocess, fmt=fmt, alpha=alpha, device=device, cmap=cmap)
    opt.check_out_dir(out_dir)
    check_asff_options(score=score, iou=iou, max_detections=max_detections)
    batch.check_batch(batch_size, workers)
    det = detector_file(det)
    inputs = batch.gather(images, out_dir)  # a single bad image fails before the detector is read

    from attnviz.batch import AsffTask, Writing
    from attnviz.detection.files import load_detector
    from attnviz.loading import resolve_device

    loaded = load_detector(det, trust=trust, device=resolve_device(device))
    if not as_json:
        style = "dim" if loaded.trained else "yellow"
        note = "" if loaded.trained else " (untrained: the maps show the mechanics, not learned fusion)"
        err.print(f"[{style}]detector: {escape(loaded.source)}{note}[/]")
    task = AsffTask(
        loaded,
        Writing(out_dir, fmt),
        size=size,
        preprocess=preprocess,
        score=score,
        iou=iou,
        max_detections=max_detections,
        cmap=cmap,
        alpha=alpha,
    )

    def say_detections(outcome: Outcome) -> None:
        decoded, table = outcome.note
        if as_json:
            return
        if not decoded:
            err.print(
                "[yellow]detections are drawn only for attnviz detectors; this model's outputs are not decoded[/]"
            )
        elif table is not None:
            out.print(rich_table(table))
        else:
            err.print(f"no detections with score ≥ {score:g} (a lower --score shows weaker ones)", markup=False)

    batch.draw(
        "asff-weights",
        task,
        inputs,
        head={},
        batch_size=batch_size,
        workers=workers,
        as_json=as_json,
        flat_json=True,
        on_drawn=say_detections,
    )


def rich_table(data: TableData) -> Table:
    """The Rich table of a TableData: left-aligned text columns, right-aligned numbers, long cells folded."""
    table = Table(title=data.title)
    for column in data.columns:
        table.add_column(column, justify="left" if column in data.left else "right", overflow="fold")
    for row in data.rows:
        table.add_row(*row)
    return table
