"""`attnviz eval-det DET`: mAP@0.5 and whether bigger objects draw on coarser levels, on held-out scenes."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from attnviz.cli import options as opt
from attnviz.cli.common import err, guarded, out, progress


def _fmt(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


@guarded
def eval_det(
    det: Annotated[
        Path,
        typer.Argument(
            help="Detector file written by `attnviz fit-det`, or 'demo' for the shipped demo detector.",
            show_default=False,
        ),
    ],
    n: Annotated[int, typer.Option("--n", help="Held-out scenes to score.")] = 200,
    score: Annotated[float, typer.Option("--score", help="Lowest detection score counted for the mAP.")] = 0.01,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Scenes per forward pass.")] = 16,
    max_objects: Annotated[int, typer.Option("--max-objects", help="Most objects in one scene.")] = 6,
    device: opt.DeviceOpt = "auto",
    as_json: opt.JsonOpt = False,
) -> None:
    """Score a detector on held-out scenes (the test split, never trained on): mAP@0.5 (VOC all-point AP, mean over
    the classes present), and Spearman's rank correlation between each object's size (sqrt of its box area) and the
    mean weight of the coarsest level inside its box, read from the ASFF module of the object's level (positive:
    bigger objects draw more on coarse features). The same correlation read from the finest ASFF module, and the
    mean level shares per object size, come with it.
    """
    from attnviz.detection.checks import check_scene_options, detector_file

    check_scene_options(n=n, score=score, batch_size=batch_size, max_objects=max_objects)
    det = detector_file(det)

    from attnviz.detection.files import load_detector
    from attnviz.detection.metrics import score_scenes
    from attnviz.loading import resolve_device

    loaded = load_detector(det, native=True, device=resolve_device(device))
    if not as_json:
        err.print(f"[{'dim' if loaded.trained else 'yellow'}]detector: {escape(loaded.source)}[/]")
    with progress("eval-det", n, unit="scenes", enabled=not as_json) as meter:
        scores = score_scenes(
            loaded.model,
            n=n,
            score=score,
            batch_size=batch_size,
            max_objects=max_objects,
            device=loaded.device,
            on_batch=meter.advance,
        )
    result = {"detector": str(det), "source": loaded.source, "trained": loaded.trained, **scores.to_dict()}
    if as_json:
        out.print_json(json.dumps(result))
        return
    _print(result)


def _print(result: dict[str, Any]) -> None:
    out.print(
        f"[bold]mAP@0.5[/] {_fmt(result['map50'])} on {result['images']} held-out scenes ({result['objects']} objects)"
    )
    for key, label in (("spearman", "assigned level's ASFF"), ("spearman_finest", "finest ASFF")):
        entry = result[key]
        why = f" ({escape(entry['reason'])})" if entry["reason"] else ""
        out.print(f"[bold]Spearman[/] size vs coarse-level weight ({label}): {_fmt(entry['rho'])}{why}")
    if result["level_shares"]:
        table = Table(title="Mean fusion weight inside the boxes, by object size (ASFF of the object's level)")
        for column in ("size", "objects", "fine", "mid", "coarse"):
            table.add_column(column, justify="left" if column == "size" else "right")
        for bucket, entry in result["level_shares"].items():
            table.add_row(bucket, str(entry["objects"]), *(f"{w:.3f}" for w in entry["weights"]))
        out.print(table)
    if result["ap_per_class"]:
        table = Table(title="AP@0.5 per class")
        table.add_column("class")
        table.add_column("AP", justify="right")
        for name, ap in result["ap_per_class"].items():
            table.add_row(name, _fmt(ap))
        out.print(table)
