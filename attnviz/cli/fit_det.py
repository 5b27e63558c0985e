"""`attnviz fit-det --out det.pt`: train the ASFF detector on detection scenes; checkpoints every epoch."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from attnviz.cli import options as opt
from attnviz.cli.common import err, guarded, out, run_training
from attnviz.detection import DETECTOR_BACKBONES

if TYPE_CHECKING:
    from attnviz.detection.train import DetEpochResult, DetFitConfig


@guarded
def fit_det(
    out_file: Annotated[Path, typer.Option("--out", "-o", help="Detector file to write (.pt).")] = Path("det.pt"),
    epochs: Annotated[int, typer.Option("--epochs", help="Passes over fresh training scenes.")] = 30,
    backbone: Annotated[
        str, typer.Option("--backbone", "-b", help=f"Backbone: {', '.join(DETECTOR_BACKBONES)}.")
    ] = "resnet18",
    channels: Annotated[int, typer.Option("--channels", help="Width of the neck, ASFF modules and head.")] = 64,
    size: Annotated[int, typer.Option("--size", help="Side of the square training scenes, in pixels.")] = 256,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Scenes per step.")] = 16,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (AdamW, one-cycle schedule).")] = 2e-3,
    train_size: Annotated[int, typer.Option("--train-size", help="Training scenes per epoch (fresh every epoch).")] = (
        4000
    ),
    val_size: Annotated[int, typer.Option("--val-size", help="Validation scenes (loss and mAP@0.5 per epoch).")] = 200,
    max_objects: Annotated[int, typer.Option("--max-objects", help="Most objects in one scene.")] = 6,
    seed: Annotated[int, typer.Option("--seed", help="Seed for initialisation and data order.")] = 0,
    pretrained: opt.PretrainedOpt = False,
    base: Annotated[
        Path | None,
        typer.Option(
            "--base",
            help="Start the backbone from a plain attnviz classifier (`attnviz fit none`), e.g. the shipped "
            "weights/resnet18_scenes.safetensors; everything still trains.",
            metavar="<path>",
        ),
    ] = None,
    no_asff: Annotated[
        bool, typer.Option("--no-asff", help="Leave the ASFF modules out (the ablation baseline).")
    ] = False,
    half: Annotated[bool, typer.Option("--half", help="Store the weights as fp16 (half the file size).")] = False,
    workers: Annotated[int, typer.Option("--workers", help="Data loading processes.")] = 1,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the checkpoint beside --out.")] = False,
    device: opt.DeviceOpt = "auto",
    as_json: opt.JsonOpt = False,
) -> None:
    """Train a detector (backbone, FPN/PAN, one ASFF module per level, anchor-free head) on procedural scenes with
    several objects from 8 px to half the image, and write det.pt for `attnviz asff-weights` and `attnviz eval-det`.

    Every epoch is validated and checkpointed (<out>.ckpt; continue with --resume; Ctrl-C keeps the last finished
    epoch).
    """
    from attnviz.detection.train import DetFitConfig, check_fit, fit_detector
    from attnviz.loading import resolve_device
    from attnviz.training.checks import check_outputs, replacing_note
    from attnviz.training.loop import checkpoint_path

    config = DetFitConfig(
        backbone=backbone,
        channels=channels,
        size=size,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        train_size=train_size,
        val_size=val_size,
        max_objects=max_objects,
        seed=seed,
        pretrained=pretrained,
        base=str(base) if base is not None else None,
        asff=not no_asff,
        workers=workers,
        half=half,
    )
    replaced = check_outputs(out_file, sidecar=None, resume=resume)
    check_fit(config, out_file, resume=resume)  # bad options, base or checkpoint: refused before the bar starts
    if replaced:
        err.print(replacing_note(replaced), markup=False)
    command = command_line(out_file, config)
    result = run_training(
        lambda on_batch, on_epoch: fit_detector(
            config,
            out_file,
            resume=resume,
            device=resolve_device(device),
            on_batch=on_batch,
            on_epoch=on_epoch,
            command=command,
        ),
        epochs=epochs,
        images_per_epoch=(train_size // batch_size) * batch_size,
        checkpoint=checkpoint_path(out_file),
        resumed=resume,
        shown={"loss": "loss"},
        summary=lambda done: _epoch_line(done, epochs),
        quiet=as_json,
    )
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "weights": str(result.weights),
                    "checkpoint": str(result.weights.with_suffix(".ckpt")),
                    "history": [vars(h) for h in result.history],
                }
            )
        )
        return
    err.print(f"wrote {result.weights} (val mAP@0.5 {result.final.val_map50:.3f})", markup=False)


def _epoch_line(done: DetEpochResult, epochs: int) -> str:
    """The line that sums up a finished epoch."""
    return (
        f"epoch {done.epoch + 1}/{epochs}: loss {done.train_loss:.3f} (heatmap {done.heatmap_loss:.3f}, "
        f"size {done.size_loss:.3f}, offset {done.offset_loss:.3f}), val loss {done.val_loss:.3f}, "
        f"val mAP@0.5 {done.val_map50:.3f}, {done.images_per_second:.1f} img/s"
    )


def command_line(out_file: Path, config: DetFitConfig) -> str:
    """The full `attnviz fit-det` command that reproduces `config` (every option spelled out)."""
    parts = ["attnviz", "fit-det", "--out", str(out_file)]
    for flag, value in (
        ("--epochs", config.epochs),
        ("--backbone", config.backbone),
        ("--channels", config.channels),
        ("--size", config.size),
        ("--batch-size", config.batch_size),
        ("--lr", f"{config.lr:g}"),
        ("--train-size", config.train_size),
        ("--val-size", config.val_size),
        ("--max-objects", config.max_objects),
        ("--seed", config.seed),
        ("--workers", config.workers),
    ):
        parts += [flag, str(value)]
    if config.base:
        parts += ["--base", config.base]
    for flag, on in (("--pretrained", config.pretrained), ("--no-asff", not config.asff), ("--half", config.half)):
        if on:
            parts.append(flag)
    return " ".join(shlex.quote(p) for p in parts)
