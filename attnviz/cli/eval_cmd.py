"""`attnviz eval BLOCK`: accuracy, whether each layer's attention lands on the object, and whether the network uses
it, on held-out scenes, every score beside its baselines."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from attnviz.cli import options as opt
from attnviz.cli.common import guarded, out, progress
from attnviz.cli.eval_tables import print_summary as _print_summary
from attnviz.cli.eval_tables import print_tables as _print_tables
from attnviz.errors import UsageError
from attnviz.options import TRAINABLE_KINDS

__all__ = ["_print_summary", "_print_tables", "evaluate"]  # the tables stay reachable here, as before
UPSAMPLE_CHOICES = ("aligned", "tiled")


@dataclass(frozen=True)
class _Settings:
    """What every block of one `eval` run is scored with."""

    n: int
    method: str | None
    tolerance: int
    batch_size: int
    trust: bool
    size: int | None
    upsample: str | None
    faith_n: int
    steps: int
    maps: Path | None
    quiet: bool


@guarded
def evaluate(
    block: Annotated[
        str,
        typer.Argument(help="Block to score, or 'all' for every block with shipped demo weights.", show_default=False),
    ],
    weights: opt.WeightsOpt = None,
    n: Annotated[int, typer.Option("--n", help="Held-out scenes to score.")] = 500,
    cam: Annotated[str, typer.Option("--cam", help="grad-cam method to compare with ('none' to skip).")] = "gradcam",
    tolerance: Annotated[int, typer.Option("--tolerance", help="Pointing-game tolerance in input pixels.")] = 4,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per forward pass.")] = 50,
    size: Annotated[
        int | None,
        typer.Option(
            "--size",
            help="Side of the held-out scenes in pixels (default: the weights' training size).",
            show_default=False,
        ),
    ] = None,
    upsample: Annotated[
        str | None,
        typer.Option(
            "--upsample",
            help="Where map cells sit when upsampled, for every map alike: 'aligned' (receptive fields, how the "
            "drawing commands place them) or 'tiled' (half-pixel tile centres). Default: the model's own.",
            show_default=False,
        ),
    ] = None,
    faith_n: Annotated[
        int,
        typer.Option("--faith-n", help="Scenes for gate ablation and deletion/insertion curves (0 skips both)."),
    ] = 100,
    steps: Annotated[int, typer.Option("--steps", help="Steps of the deletion and insertion curves.")] = 10,
    maps: Annotated[
        Path | None,
        typer.Option(
            "--maps",
            exists=True,
            dir_okay=False,
            help="Also score maps made by another tool: a .npz of (N, h, w) arrays, one per source (see README).",
        ),
    ] = None,
    export_scenes: Annotated[
        Path | None,
        typer.Option(
            "--export-scenes",
            dir_okay=False,
            help="Write the --n held-out scenes (inputs, images, labels, masks) to this .npz and stop.",
        ),
    ] = None,
    trust: opt.TrustOpt = False,
    as_json: opt.JsonOpt = False,
) -> None:
    """Score the block's maps per layer (pointing game, AUROC, energy), its gates' use (ablation, deletion and
    insertion curves) and its channel weights (probes), beside Grad-CAM, a centre prior and a random map.

    Without --weights the shipped demo weights of the block are scored; `attnviz eval all` scores every one of them
    and prints the summary table the README shows.
    """
    from attnviz.cli import sequence as sequence_cmd  # additive and temporal_gate are scored on their own tasks

    if block in sequence_cmd.SEQUENCE_BLOCKS:
        return sequence_cmd.evaluate(block, weights=weights, n=n, trust=trust, as_json=as_json)
    if n < 2:
        raise UsageError(f"--n must be at least 2, got {n}")
    if tolerance < 0 or batch_size < 1:
        raise UsageError("--tolerance must be 0 or more and --batch-size at least 1")
    if size is not None and not 32 <= size <= 1024:
        raise UsageError(f"--size must be between 32 and 1024 pixels, got {size}")
    if faith_n < 0 or not 2 <= steps <= 100:
        raise UsageError(f"--faith-n must be 0 or more and --steps between 2 and 100, got {faith_n} and {steps}")
    if upsample is not None and upsample not in UPSAMPLE_CHOICES:
        raise UsageError(f"unknown --upsample {upsample!r}", f"choose one of: {', '.join(UPSAMPLE_CHOICES)}")
    if block != "all":
        opt.check_block_kinds(block, TRAINABLE_KINDS, "eval")  # a mistyped block is refused before torch loads
    elif weights is not None or maps is not None or export_scenes is not None:
        raise UsageError("`attnviz eval all` scores the shipped demo weights; drop --weights, --maps, --export-scenes")
    if export_scenes is not None:
        _export(block, weights, n, size, trust, export_scenes, quiet=as_json)
        return

    from attnviz.cam import check_cam

    method = None if cam == "none" else check_cam(cam)
    settings = _Settings(n, method, tolerance, batch_size, trust, size, upsample, faith_n, steps, maps, quiet=as_json)
    if block == "all":
        results = [_evaluate_one(name, None, settings) for name in _demo_blocks()]
        if as_json:
            out.print_json(json.dumps(results))
        else:
            _print_summary(results, n)
        return
    payload = _evaluate_one(block, weights, settings)
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


def _load(block: str, weights: Path | None, trust: bool, quiet: bool) -> object:
    from attnviz.loading import load

    loaded = load(block, weights=weights, trust=trust, device="cpu")  # the blocks where the weights put them
    opt.announce(loaded, quiet=quiet)
    if loaded.weights_info is None:
        raise UsageError(
            f"eval needs weights trained on attnviz's scenes for {block} (a .safetensors with its .json sidecar)",
            f"train some with: attnviz fit {block} --out {block}.safetensors",
        )
    return loaded


def _export(block: str, weights: Path | None, n: int, size: int | None, trust: bool, path: Path, quiet: bool) -> None:
    from attnviz.evaluation.external import export_scenes

    side = size or _load(block, weights, trust, quiet).weights_info.input_size
    written = export_scenes(path, n, side)
    if quiet:
        out.print_json(json.dumps({"scenes": n, "size": side, "file": str(written)}))
    else:
        out.print(f"wrote {n} held-out scenes at {side} px to {written}")


def _evaluate_one(block: str, weights: Path | None, settings: _Settings) -> dict[str, object]:
    from torch.utils.data import DataLoader

    from attnviz.data.datasets import SceneDataset
    from attnviz.evaluation.external import load_maps
    from attnviz.evaluation.run import evaluate as run_eval

    loaded = _load(block, weights, settings.trust, settings.quiet)
    info = loaded.weights_info
    external = load_maps(settings.maps, settings.n) if settings.maps is not None else None
    side = settings.size or info.input_size
    dataset = SceneDataset("test", settings.n, side, augment=False)
    with progress(f"eval {block}", settings.n, unit="scenes", enabled=not settings.quiet) as meter:
        result = run_eval(
            loaded.model,
            DataLoader(dataset, batch_size=settings.batch_size),
            classes=info.num_classes,
            tolerance=settings.tolerance,
            cam=settings.method,
            on_batch=meter.advance,
            upsample=settings.upsample or loaded.placement,
            faith_n=settings.faith_n,
            steps=settings.steps,
            external=external,
            batch_size=settings.batch_size,
            on_phase=meter.phase,
        )
    return {"block": block, "weights": str(info.path), "size": side, **result.to_dict(), "best": result.best_stage()}
