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
from attnviz.errors import UsageError


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
    from torch.utils.data import DataLoader

    from attnviz.asff_analysis import describe_detector
    from attnviz.data.datasets import DetectionDataset, collate_detection
    from attnviz.errors import UntrustedCheckpointError
    from attnviz.evaluate_det import evaluate_detector
    from attnviz.io.shipped import detector_path
    from attnviz.models.detector import detector_from_checkpoint, load_detector_file
    from attnviz.pipeline import resolve_device

    if n < 1 or batch_size < 1 or max_objects < 1:
        raise UsageError("--n, --batch-size and --max-objects must be at least 1")
    if not 0.0 <= score <= 1.0:
        raise UsageError(f"--score must be in 0..1, got {score}")
    hint = "eval-det scores detectors written by attnviz fit-det, on its scenes"
    det = detector_path(det)
    try:
        contents, not_detector = load_detector_file(det)
    except UntrustedCheckpointError:
        raise UsageError(f"{det} is a pickled model, not an attnviz detector file", hint) from None
    if not_detector is not None or not isinstance(contents, dict):
        raise UsageError(not_detector or f"{det} is not an attnviz detector file", hint)
    model, metrics = detector_from_checkpoint(contents, str(det))
    target = resolve_device(device)
    model.to(target)
    source, trained = describe_detector(model.config, det, metrics), bool(metrics.get("epochs"))
    if not as_json:
        err.print(f"[{'dim' if trained else 'yellow'}]detector: {escape(source)}[/]")
    dataset = DetectionDataset("test", n, model.config.input_size, max_objects=max_objects, augment=False)
    batches = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_detection)
    with progress(not as_json) as bar:
        task = bar.add_task("eval-det", total=n)
        scores = evaluate_detector(model, batches, score=score, device=target, on_batch=lambda k: bar.advance(task, k))
    result = {"detector": str(det), "source": source, "trained": trained, **scores.to_dict()}
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
