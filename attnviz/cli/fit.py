"""`attnviz fit BLOCK`: train a backbone with the block on scenes or an ImageFolder; checkpoints every epoch."""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from attnviz.cli import options as opt
from attnviz.cli.common import err, guarded, out, run_training
from attnviz.errors import UsageError
from attnviz.options import TRAINABLE_KINDS

if TYPE_CHECKING:
    from attnviz.training.classifier import EpochResult, FitConfig


@guarded
def fit(
    block: opt.BlockArg,
    out_file: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Weights file to write (.safetensors + .json); default BLOCK_BACKBONE.safetensors here.",
            show_default=False,
        ),
    ] = None,
    data: Annotated[
        str, typer.Option("--data", help="'synthetic' (procedural scenes) or an ImageFolder directory.")
    ] = ("synthetic"),
    epochs: Annotated[int, typer.Option("--epochs", help="Passes over the training data.")] = 10,
    backbone: opt.BackboneOpt = "resnet18",
    stages: opt.StagesOpt = "1,2,3,4",
    size: Annotated[int, typer.Option("--size", help="Side of the square training input, in pixels.")] = 128,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per step.")] = 64,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (AdamW, one-cycle schedule).")] = 3e-3,
    train_size: Annotated[int, typer.Option("--train-size", help="Synthetic training scenes per epoch.")] = 8000,
    val_size: Annotated[int, typer.Option("--val-size", help="Synthetic validation scenes.")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Seed for initialisation and data order.")] = 0,
    base: Annotated[
        Path | None,
        typer.Option("--base", help="Shared backbone weights to start from; frozen, only blocks and head train."),
    ] = None,
    pretrained: opt.PretrainedOpt = False,
    train_backbone: Annotated[
        bool,
        typer.Option(
            "--train-backbone",
            help="Also train a --pretrained or --base backbone (frozen by default); the file then holds the whole "
            "model.",
        ),
    ] = False,
    train_stages: Annotated[
        str | None,
        typer.Option(
            "--train-stages",
            help="Also train the convs of these stages of a --base or --pretrained backbone (e.g. 1,2,3), the rest "
            "stays frozen; a --base part file then holds them too.",
            show_default=False,
        ),
    ] = None,
    match_weight: Annotated[
        float,
        typer.Option(
            "--match-weight",
            help="Weight of the loss that keeps each --train-stages stage's output close to the base's (0: off).",
        ),
    ] = 10.0,
    half: Annotated[bool, typer.Option("--half", help="Store the weights as fp16.")] = False,
    workers: Annotated[int, typer.Option("--workers", help="Data loading processes.")] = 1,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the checkpoint beside --out.")] = False,
    device: opt.DeviceOpt = "auto",
    as_json: opt.JsonOpt = False,
) -> None:
    """Train the block (and the head, and a backbone without pretrained weights) and write its weights.

    BLOCK "none" trains the plain backbone: a shared base that `--base` can start every block from.
    """
    if block != "none":
        opt.check_block_kinds(block, TRAINABLE_KINDS, "fit")
    for name, value, low in (
        ("--epochs", epochs, 1),
        ("--batch-size", batch_size, 2),
        ("--train-size", train_size, 2),
        ("--val-size", val_size, 1),
        ("--size", size, 32),
        ("--workers", workers, 0),
        ("--match-weight", match_weight, 0),
    ):
        if value < low or not math.isfinite(value):
            raise UsageError(f"{name} must be at least {low}, got {value}")
    if not (math.isfinite(lr) and lr > 0):
        raise UsageError(f"--lr must be a positive number, got {lr}")
    if train_stages is not None and not (base or pretrained):
        raise UsageError(
            "--train-stages picks which stages of a --base or --pretrained backbone train; without one, all train",
            "add --base FILE (or --pretrained), or leave --train-stages out",
        )
    if train_stages is not None and train_backbone:
        raise UsageError("--train-stages and --train-backbone both say what trains", "give one of them")
    if data != "synthetic" and not Path(data).is_dir():
        raise UsageError(f"--data must be 'synthetic' or an ImageFolder directory; {data!r} is neither")

    from attnviz.io.sidecars import sidecar_path
    from attnviz.loading import resolve_device
    from attnviz.training.checks import check_classifier_fit, check_outputs, replacing_note
    from attnviz.training.classifier import FitConfig
    from attnviz.training.classifier import fit as run_fit
    from attnviz.training.loop import checkpoint_path

    config = FitConfig(
        block=None if block == "none" else block,
        backbone=backbone,
        stages=opt.parse_stages(stages),
        data=data,
        size=size,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        train_size=train_size,
        val_size=val_size,
        seed=seed,
        pretrained=pretrained,
        train_backbone=train_backbone,
        train_stages=opt.parse_stages(train_stages, "train_stages") if train_stages is not None else (),
        match_weight=match_weight,
        base=str(base) if base else None,
        workers=workers,
        half=half,
    )
    if out_file is None:
        out_file = Path(f"{block}_{backbone}.safetensors")
    weights = out_file.with_suffix(".safetensors")
    replaced = check_outputs(weights, sidecar=sidecar_path(weights), resume=resume)
    check_classifier_fit(config, weights, resume=resume)  # refused now, not after the first progress line
    if replaced:
        err.print(replacing_note(replaced), markup=False)
    command = _command_line(block, out_file, config)
    result = run_training(
        lambda on_batch, on_epoch: run_fit(
            config,
            out_file,
            resume=resume,
            device=resolve_device(device),
            on_batch=on_batch,
            on_epoch=on_epoch,
            command=command,
        ),
        epochs=epochs,
        images_per_epoch=(train_size // batch_size) * batch_size if data == "synthetic" else None,
        checkpoint=checkpoint_path(out_file),
        resumed=resume,
        shown={"loss": "loss", "accuracy": "acc"},
        summary=lambda done: _epoch_line(done, epochs),
        quiet=as_json,
    )
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "weights": str(result.weights),
                    "sidecar": str(result.sidecar),
                    "history": [vars(h) for h in result.history],
                }
            )
        )
        return
    err.print(f"wrote {result.weights} and {result.sidecar} (val accuracy {result.final.val_accuracy:.3f})")


def _epoch_line(done: EpochResult, epochs: int) -> str:
    """The line that sums up a finished epoch."""
    return (
        f"epoch {done.epoch + 1}/{epochs}: loss {done.train_loss:.3f}, train acc {done.train_accuracy:.3f}, "
        f"val acc {done.val_accuracy:.3f}, {done.images_per_second:.0f} img/s"
    )


def _command_line(block: str, out_file: Path, config: FitConfig) -> str:
    """The full `attnviz fit` command that reproduces `config` (every option spelled out)."""
    parts = [
        "attnviz",
        "fit",
        block,
        "--out",
        str(out_file),
        "--data",
        config.data,
        "--epochs",
        str(config.epochs),
        "--backbone",
        config.backbone,
        "--stages",
        ",".join(map(str, config.stages)),
        "--size",
        str(config.size),
        "--batch-size",
        str(config.batch_size),
        "--lr",
        f"{config.lr:g}",
        "--train-size",
        str(config.train_size),
        "--val-size",
        str(config.val_size),
        "--seed",
        str(config.seed),
        "--workers",
        str(config.workers),
    ]
    if config.base:
        parts += ["--base", config.base]
    if config.train_stages:
        parts += [
            "--train-stages",
            ",".join(map(str, config.train_stages)),
            "--match-weight",
            f"{config.match_weight:g}",
        ]
    for flag, on in (
        ("--pretrained", config.pretrained),
        ("--train-backbone", config.train_backbone),
        ("--half", config.half),
    ):
        if on:
            parts.append(flag)
    return " ".join(shlex.quote(p) for p in parts)
