"""Fitting the ASFF detector (`attnviz.detection.model`) on procedural detection scenes, with checkpoints.

The same shape as `attnviz.train.fit`: `fit_detector(config, out)` trains on fresh `DetectionDataset` scenes every
epoch (square, several objects from 8 px to half the image, flipped at random), validates every epoch (loss and
mAP@0.5 on fixed validation scenes), writes a resumable checkpoint every epoch (`<out>.ckpt`, readable with
`torch.load(weights_only=True)`, and by `attnviz asff-weights` as a detector), and finally the detector file
`<out>` (det.pt: {config, state_dict, classes, metrics, training}, see `attnviz.detection.files`). A
KeyboardInterrupt leaves the checkpoint of the last finished epoch and re-raises. AdamW with a one-cycle schedule
over all epochs; a resumed run that asks for more epochs stretches what is left.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from attnviz.detection import DETECTOR_BACKBONES
from attnviz.detection.checks import given
from attnviz.detection.files import detector_checkpoint
from attnviz.detection.loss import build_targets, detector_loss
from attnviz.detection.model import Detector, DetectorConfig, decode
from attnviz.errors import UsageError, option
from attnviz.training.loop import (
    checkpoint_path,
    epoch_state,
    load_checkpoint,
    one_cycle,
    restore,
    save_checkpoint,
    seed_everything,
    with_epoch,
)

GRAD_CLIP = 10.0  # the focal loss of an untrained head can spike; clipping keeps the first steps sane
VAL_SCORE = 0.01  # detections scored for the validation mAP


@dataclass
class DetFitConfig:
    """Everything that defines a detector training run (stored in checkpoints and in det.pt)."""

    backbone: str = "resnet18"
    channels: int = 64
    size: int = 256
    epochs: int = 30
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    train_size: int = 4000
    val_size: int = 200
    max_objects: int = 6
    seed: int = 0
    pretrained: bool = False
    base: str | None = None
    asff: bool = True
    workers: int = 1
    half: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain values, as stored in checkpoints and in det.pt's "training"."""
        return asdict(self)

    def detector_config(self, num_classes: int) -> DetectorConfig:
        """The detector this run trains, for `num_classes` classes."""
        return DetectorConfig(
            backbone=self.backbone,
            channels=self.channels,
            num_classes=num_classes,
            input_size=self.size,
            asff=self.asff,
        )


RESUME_KEYS = ("backbone", "channels", "size", "max_objects", "asff", "pretrained", "base")
"""Options a resumed run must share with its checkpoint (the rest may change, e.g. more epochs)."""


FIT_MINIMA = (
    ("epochs", 1),
    ("batch_size", 2),
    ("train_size", 2),
    ("val_size", 1),
    ("size", 64),
    ("channels", 8),
    ("max_objects", 1),
    ("workers", 0),
)
"""(DetFitConfig field, smallest value) for every count of a detector training run, in the order they are checked."""


def check_fit_options(config: DetFitConfig) -> None:
    """The options of a detector training run that can be checked without reading any file.

    Raises:
        UsageError: an unknown backbone, a count below its minimum, fewer training scenes than one batch, or both a
            base and pretrained weights for the backbone.
    """
    if config.backbone not in DETECTOR_BACKBONES:
        choices = ", ".join(DETECTOR_BACKBONES)
        raise UsageError(f"the detector has no backbone {config.backbone!r}", f"choose one of: {choices}")
    for keyword, low in FIT_MINIMA:
        value = getattr(config, keyword)
        if value < low:
            raise UsageError(f"{option(keyword)} must be at least {low}, got {value}")
    if config.train_size < config.batch_size:
        train, batch = option("train_size"), option("batch_size")
        raise UsageError(f"{train} ({config.train_size}) must be at least {batch} ({config.batch_size})")
    if config.base is not None and config.pretrained:
        raise UsageError(
            f"{option('base')} and {option('pretrained')} both give the backbone's starting weights",
            "pass one of them",
        )


@dataclass
class DetEpochResult:
    """The losses (training and validation), validation mAP@0.5 and speed of one epoch."""

    epoch: int
    train_loss: float
    heatmap_loss: float
    size_loss: float
    offset_loss: float
    val_loss: float
    val_map50: float
    images_per_second: float


@dataclass
class DetFitResult:
    """The detector file written and the history of every epoch (resumed ones included)."""

    weights: Path
    history: list[DetEpochResult] = field(default_factory=list)

    @property
    def final(self) -> DetEpochResult:
        """The last epoch."""
        return self.history[-1]


ProgressFn = Callable[[dict[str, Any]], None]
Batch = tuple[torch.Tensor, list[dict[str, torch.Tensor]]]


def make_datasets(config: DetFitConfig) -> tuple[Dataset, Dataset, list[str]]:
    """(train, validation, class names): procedural detection scenes of `config.size` pixels."""
    from attnviz.data.datasets import DetectionDataset, class_names

    options = {"max_objects": config.max_objects, "min_side": 8, "max_fraction": 0.5}
    train = DetectionDataset("train", config.train_size, config.size, augment=True, **options)
    val = DetectionDataset("val", config.val_size, config.size, augment=False, **options)
    return train, val, class_names()


def base_backbone(path: str | os.PathLike[str], backbone: str) -> tuple[dict[str, torch.Tensor], str]:
    """The backbone weights of a plain attnviz classifier file (`attnviz fit none`), to start a detector from.

    Raises:
        UsageError: the file is for another backbone, or has attention blocks in it.
        CheckpointError: the file cannot be read as weights.
    """
    from attnviz.io.checkpoints import extract_state_dict, read_checkpoint
    from attnviz.io.sidecars import read_sidecar

    info = read_sidecar(path)
    if info is not None and info.backbone != backbone:
        raise UsageError(
            f"the base {path} is a {info.backbone}, not a {backbone}",
            f"pass {given('backbone', info.backbone)}",
        )
    if info is not None and (info.block is not None or info.base is not None):
        raise UsageError(
            f"the base {path} has {info.block or 'attention'} blocks in it; a detector starts from a plain backbone",
            "pass a file made by `attnviz fit none`, e.g. weights/resnet18_scenes.safetensors",
        )
    state = extract_state_dict(read_checkpoint(path), str(path))
    return {k: v for k, v in state.items() if not k.startswith(("fc.", "classifier."))}, f"the base {path}"


def loader(dataset: Dataset, config: DetFitConfig, *, shuffle: bool) -> DataLoader:
    """Batches of `dataset` as `config` asks (shuffled and without the last partial batch for training)."""
    from attnviz.data.datasets import collate_detection

    return DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=shuffle,
        num_workers=config.workers,
        generator=torch.Generator().manual_seed(config.seed),
        drop_last=shuffle,
        collate_fn=collate_detection,
        persistent_workers=False,
    )


def load_resumable(out: str | os.PathLike[str], config: DetFitConfig) -> dict[str, Any]:
    """The checkpoint beside `out`, checked to fit `config` (memory-mapped: cheap to call before training starts).

    Raises:
        UsageError: there is no checkpoint, or it was made with other options.
    """
    return load_checkpoint(checkpoint_path(out), {key: getattr(config, key) for key in RESUME_KEYS}, mmap=True)


def check_fit(config: DetFitConfig, out: str | os.PathLike[str], *, resume: bool = False) -> None:
    """Refuse, before training starts, what `fit_detector` would refuse: the options, a base that does not fit (when
    starting afresh), or (with `resume`) a checkpoint beside `out` that is missing or made with other options.

    Raises:
        UsageError: see `check_fit_options`, `base_backbone` and `load_resumable`.
        CheckpointError: the base cannot be read as weights.
    """
    check_fit_options(config)
    if config.base is not None and not resume:
        base_backbone(config.base, config.backbone)
    if resume:
        load_resumable(out, config)


def run_epoch(
    model: Detector,
    batches: Iterator[Batch],
    *,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any = None,
    device: torch.device,
    on_batch: ProgressFn | None = None,
) -> tuple[dict[str, float], float, list[Any]]:
    """One pass over `batches`, training when an optimizer is given.

    Returns:
        (mean loss parts {"loss", "heatmap", "size", "offset"}, images per second, and without an optimizer the
        (detections, targets) pairs of every image for the mAP).
    """
    totals = {"loss": 0.0, "heatmap": 0.0, "size": 0.0, "offset": 0.0}
    seen = 0
    pairs: list[Any] = []
    start = time.perf_counter()
    config = model.config
    with torch.set_grad_enabled(optimizer is not None):
        for images, targets in batches:
            images = images.to(device, non_blocking=True)
            outputs = model(images)
            size = (images.shape[-1], images.shape[-2])
            level_targets = build_targets(
                targets, [tuple(out[0].shape[-2:]) for out in outputs], size, config, device=device
            )
            loss, parts = detector_loss(outputs, level_targets)
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
            else:
                pairs += list(zip(decode(outputs, size, score=VAL_SCORE), targets, strict=True))
            batch = images.shape[0]
            seen += batch
            for key, value in (("loss", loss.item()), *parts.items()):
                totals[key] += value * batch
            if on_batch is not None:
                elapsed = time.perf_counter() - start
                on_batch(
                    {
                        "batch_size": batch,
                        "loss": totals["loss"] / seen,
                        "images_per_second": seen / max(elapsed, 1e-9),
                    }
                )
    elapsed = time.perf_counter() - start
    return {k: v / max(seen, 1) for k, v in totals.items()}, seen / max(elapsed, 1e-9), pairs


def validation_map(pairs: list[Any]) -> float:
    """mAP@0.5 of (detections, targets) pairs from `run_epoch`."""
    from attnviz.detection.metrics import Detections, mean_average_precision

    found = [Detections(*(d[k].cpu().numpy() for k in ("boxes", "labels", "scores"))) for d, _ in pairs]
    truths = [Detections(t["boxes"].numpy(), t["labels"].numpy()) for _, t in pairs]
    value, _ = mean_average_precision(found, truths)
    return value


def fit_detector(
    config: DetFitConfig,
    out: str | os.PathLike[str],
    *,
    resume: bool = False,
    device: torch.device | None = None,
    on_batch: ProgressFn | None = None,
    on_epoch: Callable[[DetEpochResult], None] | None = None,
    command: str = "",
) -> DetFitResult:
    """Train `config` and write the detector file `<out>` (.pt); see the module docstring.

    Args:
        config: What to train.
        out: The detector file to write; the checkpoint goes beside it (`<out>.ckpt`).
        resume: Continue from that checkpoint.
        device: Where to train (CPU when None).
        on_batch: Called after every training batch with {"batch_size", "loss", "images_per_second", "epoch"}.
        on_epoch: Called after every epoch (trained, validated and checkpointed).
        command: The command line that reproduces the run, stored in the detector file.

    Raises:
        UsageError: bad options (`check_fit_options`), a base that does not fit, a checkpoint that does not, or
            nothing left to train.
        KeyboardInterrupt: re-raised after Ctrl-C; the checkpoint holds the last finished epoch.
    """
    check_fit_options(config)
    out = Path(out).with_suffix(".pt")
    device = device or torch.device("cpu")
    seed_everything(config.seed)
    train_set, val_set, classes = make_datasets(config)
    state = load_resumable(out, config) if resume else None
    init = base_backbone(config.base, config.backbone) if config.base and state is None else None
    model = Detector(
        config.detector_config(len(classes)), classes=classes, pretrained=config.pretrained, backbone_init=init
    ).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, len(train_set) // config.batch_size)
    history: list[DetEpochResult] = []
    first_epoch = 0
    if state is not None:
        first_epoch = restore(model, optimizer, state, config.epochs)
        history = [DetEpochResult(**h) for h in state["history"]]
    scheduler = one_cycle(optimizer, config.lr, config.epochs, first_epoch, steps_per_epoch)
    for epoch in range(first_epoch, config.epochs):
        train_set.set_epoch(epoch)
        model.train()
        parts, rate, _ = run_epoch(
            model,
            iter(loader(train_set, config, shuffle=True)),
            optimizer=optimizer,
            scheduler=scheduler,
            device=device,
            on_batch=with_epoch(on_batch, epoch),
        )
        model.eval()
        val_batches = iter(loader(val_set, config, shuffle=False))
        val_parts, _, pairs = run_epoch(model, val_batches, optimizer=None, device=device)
        result = DetEpochResult(
            epoch,
            parts["loss"],
            parts["heatmap"],
            parts["size"],
            parts["offset"],
            val_parts["loss"],
            validation_map(pairs),
            rate,
        )
        history.append(result)
        extra = {"detector": model.config.to_dict(), "classes": classes}
        snapshot = epoch_state(model, optimizer, scheduler, epoch, config, history, **extra)
        save_checkpoint(checkpoint_path(out), snapshot)
        if on_epoch is not None:
            on_epoch(result)
    if not history:
        raise UsageError(f"nothing to train: the checkpoint already covers all {config.epochs} epochs")
    return _write_detector(model, config, out, history, command)


def _write_detector(
    model: Detector, config: DetFitConfig, out: Path, history: list[DetEpochResult], command: str
) -> DetFitResult:
    from attnviz.io.atomic import atomic_write

    final = history[-1]
    metrics = {
        "val_map50": round(final.val_map50, 4),
        "val_loss": round(final.val_loss, 4),
        "train_loss": round(final.train_loss, 4),
        "epochs": len(history),
        "val_scenes": config.val_size,
    }
    payload = detector_checkpoint(
        model.cpu(), metrics=metrics, training={**config.to_dict(), "command": command}, half=config.half
    )
    atomic_write(out, lambda handle: torch.save(payload, handle))
    return DetFitResult(out, history)
