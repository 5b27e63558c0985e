"""`attnviz eval BLOCK`: accuracy and whether each layer's attention lands on the object, on held-out scenes."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from attnviz.blocks.catalog import block_info
from attnviz.cli import options as opt
from attnviz.cli.common import LayerPath, err, guarded, out, progress
from attnviz.errors import UsageError
from attnviz.options import TRAINABLE_KINDS


def _fmt(value: float) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


@guarded
def evaluate(
    block: Annotated[
        str,
        typer.Argument(help="Block to score, or 'all' for every block with shipped demo weights.", show_default=False),
    ],
    weights: opt.WeightsOpt = None,
    n: Annotated[int, typer.Option("--n", help="Held-out scenes to score.")] = 500,
    cam: Annotated[str, typer.Option("--cam", help="grad-cam method to compare with ('none' to skip).")] = "gradcam",
    tolerance: Annotated[int, typer.Option("--tolerance", help="Pointing-game tolerance in pixels.")] = 4,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per forward pass.")] = 50,
    size: Annotated[
        int | None,
        typer.Option(
            "--size",
            help="Side of the held-out scenes in pixels (default: the weights' training size).",
            show_default=False,
        ),
    ] = None,
    trust: opt.TrustOpt = False,
    as_json: opt.JsonOpt = False,
) -> None:
    """Score the block's maps per layer (pointing game, AUROC, energy) against Grad-CAM and a random map.

    Without --weights the shipped demo weights of the block are scored; `attnviz eval all` scores every one of them
    and prints the summary table the README shows.
    """
    if n < 2:
        raise UsageError(f"--n must be at least 2, got {n}")
    if tolerance < 0 or batch_size < 1:
        raise UsageError("--tolerance must be 0 or more and --batch-size at least 1")
    if size is not None and not 32 <= size <= 1024:
        raise UsageError(f"--size must be between 32 and 1024 pixels, got {size}")
    if block != "all":
        opt.check_block_kinds(block, TRAINABLE_KINDS, "eval")  # a mistyped block is refused before torch loads

    from attnviz.cam import check_cam

    method = None if cam == "none" else check_cam(cam)
    if block == "all":
        if weights is not None:
            raise UsageError("`attnviz eval all` scores the shipped demo weights; drop --weights")
        results = [
            _evaluate_one(name, None, n, method, tolerance, batch_size, trust, size=size, quiet=as_json)
            for name in _demo_blocks()
        ]
        if as_json:
            out.print_json(json.dumps(results))
        else:
            _print_summary(results, n)
        return
    payload = _evaluate_one(block, weights, n, method, tolerance, batch_size, trust, size=size, quiet=as_json)
    if as_json:
        out.print_json(json.dumps(payload))
    else:
        _print_tables(block, payload)


def _demo_blocks() -> list[str]:
    from attnviz.io.shipped import demo_manifest

    blocks = [e["block"] for e in demo_manifest() if e.get("kind") == "classifier" and e.get("backbone") == "resnet18"]
    if not blocks:
        raise UsageError("no demo weights are installed", "train some with attnviz fit, then pass --weights")
    return blocks


def _evaluate_one(
    block: str,
    weights: Path | None,
    n: int,
    method: str | None,
    tolerance: int,
    batch_size: int,
    trust: bool,
    *,
    size: int | None,
    quiet: bool,
) -> dict[str, object]:
    from torch.utils.data import DataLoader

    from attnviz.data.datasets import SceneDataset
    from attnviz.evaluate import evaluate as run_eval
    from attnviz.loading import load

    loaded = load(block, weights=weights, trust=trust, device="cpu")  # the blocks where the weights put them
    opt.announce(loaded, quiet=quiet)
    info = loaded.weights_info
    if info is None:
        raise UsageError(
            f"eval needs weights trained on attnviz's scenes for {block} (a .safetensors with its .json sidecar)",
            f"train some with: attnviz fit {block} --out {block}.safetensors",
        )
    dataset = SceneDataset("test", n, size or info.input_size, augment=False)
    probes = bool(set(block_info(block).kinds) & {"channel", "selection"})
    with progress(f"eval {block}", n, unit="scenes", enabled=not quiet) as meter:

        def on_batch(scored: int) -> None:
            meter.advance(scored)
            if probes and meter.done >= n:  # what evaluate does after the last batch
                meter.phase("fitting the channel-weight probes")

        result = run_eval(
            loaded.model,
            DataLoader(dataset, batch_size=batch_size),
            classes=info.num_classes,
            tolerance=tolerance,
            cam=method,
            on_batch=on_batch,
        )
    return {
        "block": block,
        "weights": str(info.path),
        "size": size or info.input_size,
        **result.to_dict(),
        "best": result.best_stage(),
    }


def _random_caption(random: dict[str, float]) -> str:
    return f"a uniform random map scores point {_fmt(random['pointing'])}, AUROC {_fmt(random['auroc'])} (same scenes)"


def _print_summary(results: list[dict[str, Any]], n: int) -> None:
    table = Table(
        title=f"Demo weights on {n} held-out scenes: where each block localises best",
        caption=_random_caption(results[0]["random"]) if results else None,
    )
    table.add_column("block", no_wrap=True)
    table.add_column("acc", justify="right", no_wrap=True)
    table.add_column("best map", min_width=16, overflow="fold")  # folds, so the table fits 80 columns
    for column in ("point", "CAM", "AUROC", "CAM"):
        table.add_column(column, justify="right", no_wrap=True)
    for r in results:
        best = r["best"] or {}
        cam = r["gradcam"].get(str(best.get("stage")), {})
        table.add_row(
            r["block"],
            _fmt(r["accuracy"]),
            LayerPath(best["map"]) if best else "-",
            _fmt(best.get("pointing")),
            _fmt(cam.get("pointing")),
            _fmt(best.get("auroc")),
            _fmt(cam.get("auroc")),
        )
    out.print(table)


def _print_tables(block: str, result: dict[str, Any]) -> None:
    out.print(f"[bold]{block}[/]: accuracy {result['accuracy']:.3f} on {result['images']} held-out scenes")
    if result["maps"]:
        table = Table(
            title="Does the attention land on the object? (pixel level)", caption=_random_caption(result["random"])
        )
        table.add_column("map", min_width=20, overflow="fold")  # folds, so the table fits 80 columns
        for column in ("stage", "point", "CAM", "AUROC", "CAM", "energy"):
            table.add_column(column, justify="right", no_wrap=True)
        for name, scores in sorted(result["maps"].items(), key=lambda kv: (kv[1]["stage"] or 0, kv[0])):
            cam = result["gradcam"].get(str(scores["stage"]), {})
            table.add_row(
                LayerPath(name),
                str(scores["stage"]),
                _fmt(scores["pointing"]),
                _fmt(cam.get("pointing")),
                _fmt(scores["auroc"]),
                _fmt(cam.get("auroc")),
                _fmt(scores["energy"]),
            )
        out.print(table)
    if result["channel"]:
        table = Table(title="How class-specific are the channel weights? (linear probe on half, tested on half)")
        for column in ("map", "stage", "probe accuracy", "chance"):
            table.add_column(column, justify="left" if column == "map" else "right", overflow="fold")
        for name, scores in result["channel"].items():
            table.add_row(LayerPath(name), str(scores["stage"]), _fmt(scores["probe_accuracy"]), _fmt(scores["chance"]))
        out.print(table)
    err.print(
        "[dim]point: pointing game, the map's peak lies on the object (mask dilated by the tolerance); AUROC: map "
        "values as a pixel-level object score; CAM: the same for the chosen CAM method at that stage; energy: map "
        "mass on the object / object area share[/]"
    )
