"""`attnviz eval BLOCK`: accuracy and whether each layer's attention lands on the object, on held-out scenes."""

from __future__ import annotations

import json
import math
from typing import Annotated

import typer
from rich.table import Table

from attnviz.cli import options as opt
from attnviz.cli.common import err, guarded, out, progress
from attnviz.errors import UsageError


def _fmt(value: float) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


@guarded
def evaluate(
    block: opt.BlockArg,
    weights: opt.WeightsOpt = None,
    n: Annotated[int, typer.Option("--n", help="Held-out scenes to score.")] = 500,
    cam: Annotated[str, typer.Option("--cam", help="grad-cam method to compare with ('none' to skip).")] = "gradcam",
    tolerance: Annotated[int, typer.Option("--tolerance", help="Pointing-game tolerance in pixels.")] = 4,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per forward pass.")] = 50,
    backbone: opt.BackboneOpt = "resnet18",
    stages: opt.StagesOpt = "1,2,3,4",
    trust: opt.TrustOpt = False,
    device: opt.DeviceOpt = "auto",
    as_json: opt.JsonOpt = False,
) -> None:
    """Score the block's maps per layer (pointing game, AUROC, energy) against Grad-CAM and a random map."""
    from torch.utils.data import DataLoader

    from attnviz.cam import check_cam
    from attnviz.data.datasets import SceneDataset
    from attnviz.evaluate import evaluate as run_eval

    opt.check_block_kinds(block, ("channel", "spatial", "coordinate", "matrix", "selection"), "eval")
    if n < 2:
        raise UsageError(f"--n must be at least 2, got {n}")
    method = None if cam == "none" else check_cam(cam)
    loaded = opt.load(
        block,
        backbone=backbone,
        stages=stages,
        pretrained=False,
        weights=weights,
        trust=trust,
        device="cpu" if method else device,
        quiet=as_json,
    )
    if loaded.weights_info is None:
        raise UsageError(
            f"eval needs weights trained on attnviz's scenes for {block} (a .safetensors with its .json sidecar)",
            f"train some with: attnviz fit {block} --out {block}.safetensors",
        )
    info = loaded.weights_info
    dataset = SceneDataset("test", n, info.input_size, augment=False)
    with progress(not as_json) as bar:
        task = bar.add_task("eval", total=n)
        result = run_eval(
            loaded.model,
            DataLoader(dataset, batch_size=batch_size),
            classes=info.num_classes,
            tolerance=tolerance,
            cam=method,
            on_batch=lambda k: bar.advance(task, k),
        )
    payload = {
        "block": block,
        "weights": str(loaded.weights_info.path),
        **result.to_dict(),
        "best": result.best_stage(),
    }
    if as_json:
        out.print_json(json.dumps(payload))
        return
    _print_tables(block, result)


def _print_tables(block: str, result: object) -> None:
    from attnviz.evaluate import EvalResult

    assert isinstance(result, EvalResult)
    out.print(f"[bold]{block}[/]: accuracy {result.accuracy:.3f} on {result.images} held-out scenes")
    if result.maps:
        table = Table(title="Does the attention land on the object? (pixel level)")
        for column in ("map", "stage", "pointing", "Grad-CAM", "random", "AUROC", "Grad-CAM", "random", "energy"):
            table.add_column(column, justify="left" if column == "map" else "right")
        rand = result.random
        for name, scores in sorted(result.maps.items(), key=lambda kv: (kv[1]["stage"] or 0, kv[0])):
            cam = result.gradcam.get(scores["stage"], {})
            table.add_row(
                name,
                str(scores["stage"]),
                _fmt(scores["pointing"]),
                _fmt(cam.get("pointing")),
                _fmt(rand["pointing"]),
                _fmt(scores["auroc"]),
                _fmt(cam.get("auroc")),
                _fmt(rand["auroc"]),
                _fmt(scores["energy"]),
            )
        out.print(table)
    if result.channel:
        table = Table(title="How class-specific are the channel weights? (linear probe on half, tested on half)")
        for column in ("map", "stage", "probe accuracy", "chance"):
            table.add_column(column, justify="left" if column == "map" else "right")
        for name, scores in result.channel.items():
            table.add_row(name, str(scores["stage"]), _fmt(scores["probe_accuracy"]), _fmt(scores["chance"]))
        out.print(table)
    err.print(
        "[dim]pointing: the map's peak lies on the object (mask dilated by the tolerance); AUROC: map values "
        "as a pixel-level object score; energy: map mass on the object / object area share[/]"
    )
