"""Fitting attention blocks: a classifier on procedural scenes (or a user's ImageFolder), with checkpoints.

`fit(config, out)` trains, validates every epoch, writes a resumable checkpoint every epoch (`<out>.ckpt`, readable
with `torch.load(weights_only=True)`), and finally the weights (`<out>`, safetensors) with their JSON sidecar
(see `attnviz.io.sidecars`). A KeyboardInterrupt saves the checkpoint of the last finished epoch and re-raises.

Which parameters train:
- with a `base` (a shared backbone trained once, e.g. the shipped one), the backbone's convolutions are frozen and
  the attention blocks, the classifier head and the backbone's batch norms train (the blocks rescale the features the
  base was trained on, and frozen batch-norm statistics would normalise them wrongly: CBAM on a fully frozen base
  reached 28% after an epoch where the base alone scores 98%); the weights file then holds only those (~0.3 MB of
  batch norms for resnet18 beside the blocks and head);
  with `train_stages` the convolutions of those stages train too (and the file holds them), each stage pulled
  towards the base's output there by a `StageMatcher` loss: blocks that transform features rather than gate them
  (SK, ShuffleAttention's channel shuffle, S2-MLP, CoT) wreck what the base computes, and a frozen base cannot
  follow (training stays at chance);
  with `train_backbone` the base is only the starting point: everything trains and the file holds the whole model;
- with `pretrained` torchvision weights the backbone is frozen too, unless `train_backbone`;
- otherwise (a backbone from scratch) everything trains.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from attnviz.errors import CheckpointError, UsageError
from attnviz.io.sidecars import WeightsInfo, read_sidecar, write_sidecar
from attnviz.models import HEAD_PREFIXES, STAGES
from attnviz.models.backbones import build_model, stage_prefixes
from attnviz.training.loop import (
    ProgressFn,
    checkpoint_path,
    epoch_state,
    load_checkpoint,
    one_cycle,
    restore,
    save_checkpoint,
    seed_everything,
    with_epoch,
)
from attnviz.training.matcher import StageMatcher


@dataclass
class FitConfig:
    """Everything that defines a training run (stored in checkpoints and sidecars)."""

    block: str | None
    backbone: str = "resnet18"
    stages: tuple[int, ...] = STAGES
    data: str = "synthetic"
    size: int = 128
    epochs: int = 10
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 5e-4
    train_size: int = 8000
    val_size: int = 1000
    seed: int = 0
    pretrained: bool = False
    train_backbone: bool = False
    train_stages: tuple[int, ...] = ()
    match_weight: float = 10.0
    base: str | None = None
    workers: int = 1
    half: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stages"] = list(self.stages)
        data["train_stages"] = list(self.train_stages)
        return data


@dataclass
class EpochResult:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    images_per_second: float


@dataclass
class FitResult:
    weights: Path
    sidecar: Path
    history: list[EpochResult] = field(default_factory=list)

    @property
    def final(self) -> EpochResult:
        return self.history[-1]


# ------------------------------------------------------------------------------------------------------------ data


def make_datasets(config: FitConfig) -> tuple[Dataset, Dataset, list[str]]:
    """(train, validation, class names) for `config.data`: "synthetic" scenes or an ImageFolder directory."""
    if config.data == "synthetic":
        from attnviz.data.datasets import SceneDataset, class_names

        train = SceneDataset("train", config.train_size, config.size, augment=True)
        val = SceneDataset("val", config.val_size, config.size, augment=False)
        return train, val, class_names()
    from attnviz.data.folder import folder_datasets

    return folder_datasets(Path(config.data), config.size, seed=config.seed)


def loader(dataset: Dataset, config: FitConfig, *, shuffle: bool) -> DataLoader:
    generator = torch.Generator().manual_seed(config.seed)
    return DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=shuffle,
        num_workers=config.workers,
        generator=generator,
        drop_last=shuffle,
        persistent_workers=False,
    )


# ----------------------------------------------------------------------------------------------------------- model


def make_model(config: FitConfig, classes: list[str]) -> tuple[nn.Module, list[str]]:
    """The model to train and the names of its frozen top-level parameter prefixes."""
    model = build_model(
        config.backbone,
        config.block,
        stages=config.stages,
        pretrained=config.pretrained,
        num_classes=len(classes),
    )
    frozen = False
    if config.base:
        info = read_sidecar(config.base)
        if info is not None and (info.backbone != config.backbone or info.classes != classes):
            raise UsageError(
                f"the base {config.base} is a {info.backbone} for {len(info.classes)} classes, "
                f"not a {config.backbone} for these {len(classes)}"
            )
        from attnviz.io.checkpoints import read_checkpoint

        state = read_checkpoint(config.base)
        own = model.state_dict()
        missing_backbone = [k for k in own if k not in state and not _is_block_key(model, k)]
        if missing_backbone:
            raise CheckpointError(f"the base {config.base} lacks backbone weights, e.g. {missing_backbone[:3]}")
        model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items() if k in own}, strict=False)
        frozen = not config.train_backbone
    elif config.pretrained and not config.train_backbone:
        frozen = True
    if frozen:
        norms = _norm_keys(model) if config.base else set()
        trained = _trained_keys(model, config)
        for name, param in model.named_parameters():
            param.requires_grad = name in trained or name in norms
    return model, [name for name, p in model.named_parameters() if not p.requires_grad]


def _trained_keys(model: nn.Module, config: FitConfig) -> set[str]:
    """State-dict keys that train on a frozen base: the blocks, the head and the stages in `config.train_stages`."""
    prefixes = stage_prefixes(model, config.backbone, config.train_stages)
    kept = (*HEAD_PREFIXES, *prefixes)
    return {key for key in model.state_dict() if _is_block_key(model, key) or key.startswith(kept)}


def _is_block_key(model: nn.Module, key: str) -> bool:
    return any(key.startswith(path + ".") for path in model.attnviz_blocks)


def _norm_keys(model: nn.Module) -> set[str]:
    """State-dict keys (parameters and statistics) of the batch norms outside the attention blocks."""
    keys = set()
    for path, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not _is_block_key(model, path + "."):
            keys.update(f"{path}.{name}" for name, _ in module.state_dict().items())
    return keys


def set_training(model: nn.Module, training: bool) -> None:
    """Train mode for what trains; modules whose parameters are all frozen stay in eval (frozen BN statistics)."""
    model.train(training)
    if not training:
        return
    for module in model.modules():
        params = list(module.parameters(recurse=False))
        if params and not any(p.requires_grad for p in params):
            module.eval()


# ------------------------------------------------------------------------------------------------------------- fit


RESUME_KEYS = ("block", "backbone", "stages", "train_stages", "size", "data", "base")
"""Options a resumed classifier run must share with the checkpoint (epochs may grow)."""


def run_epoch(
    model: nn.Module,
    batches: Iterator[tuple[torch.Tensor, ...]],
    *,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any = None,
    device: torch.device,
    on_batch: ProgressFn | None = None,
    extra_loss: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[float, float, float]:
    """One pass over `batches` (training when an optimizer is given); returns (loss, accuracy, images/s).

    `extra_loss(images)`, called right after the forward, adds a term to the training loss (e.g. `StageMatcher`).
    """
    criterion = nn.CrossEntropyLoss(label_smoothing=0.05 if optimizer else 0.0)
    total_loss, correct, seen = 0.0, 0, 0
    start = time.perf_counter()
    with torch.set_grad_enabled(optimizer is not None):
        for images, labels, *_ in batches:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            logits = model(images)
            loss = criterion(logits, labels)
            if optimizer is not None and extra_loss is not None:
                loss = loss + extra_loss(images)
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
            batch = labels.shape[0]
            total_loss += loss.item() * batch
            correct += int((logits.argmax(1) == labels).sum())
            seen += batch
            if on_batch is not None:
                elapsed = time.perf_counter() - start
                on_batch(
                    {
                        "batch_size": batch,
                        "loss": total_loss / seen,
                        "accuracy": correct / seen,
                        "images_per_second": seen / max(elapsed, 1e-9),
                    }
                )
    elapsed = time.perf_counter() - start
    return total_loss / max(seen, 1), correct / max(seen, 1), seen / max(elapsed, 1e-9)


def stage_matcher(model: nn.Module, config: FitConfig, classes: list[str]) -> StageMatcher | None:
    """The `StageMatcher` for a run that retrains `config.train_stages` of a base (None when there is nothing to
    match: no retrained stages, or a weight of 0)."""
    if not config.train_stages or config.match_weight <= 0 or not (config.base or config.pretrained):
        return None
    plain = FitConfig(**{**asdict(config), "block": None, "train_stages": (), "stages": STAGES})
    teacher, _ = make_model(plain, classes)
    for param in teacher.parameters():
        param.requires_grad = False
    device = next(model.parameters()).device
    paths = [stage_prefixes(teacher, config.backbone, (stage,))[-1][:-1] for stage in config.train_stages]
    return StageMatcher(model, teacher.to(device).eval(), paths, config.match_weight)


def fit(
    config: FitConfig,
    out: str | os.PathLike[str],
    *,
    resume: bool = False,
    device: torch.device | None = None,
    on_batch: ProgressFn | None = None,
    on_epoch: Callable[[EpochResult], None] | None = None,
    command: str = "",
) -> FitResult:
    """Train `config` and write `<out>` (safetensors) with its sidecar; see the module docstring."""
    out = Path(out).with_suffix(".safetensors")
    device = device or torch.device("cpu")
    seed_everything(config.seed)
    train_set, val_set, classes = make_datasets(config)
    model, frozen = make_model(config, classes)
    model.to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, len(train_set) // config.batch_size)
    history: list[EpochResult] = []
    first_epoch = 0
    expected = {key: config.to_dict()[key] for key in RESUME_KEYS}
    state = load_checkpoint(checkpoint_path(out), expected) if resume else None
    if state is not None:
        first_epoch = restore(model, optimizer, state, config.epochs)
        history = [EpochResult(**h) for h in state["history"]]
    scheduler = one_cycle(optimizer, config.lr, config.epochs, first_epoch, steps_per_epoch)
    matcher = stage_matcher(model, config, classes)
    for epoch in range(first_epoch, config.epochs):
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(epoch)
        set_training(model, True)
        loss, accuracy, rate = run_epoch(
            model,
            iter(loader(train_set, config, shuffle=True)),
            optimizer=optimizer,
            scheduler=scheduler,
            device=device,
            on_batch=with_epoch(on_batch, epoch),
            extra_loss=matcher,
        )
        model.eval()
        val_loss, val_accuracy, _ = run_epoch(
            model, iter(loader(val_set, config, shuffle=False)), optimizer=None, device=device
        )
        result = EpochResult(epoch, loss, accuracy, val_loss, val_accuracy, rate)
        history.append(result)
        save_checkpoint(checkpoint_path(out), epoch_state(model, optimizer, scheduler, epoch, config, history))
        if on_epoch is not None:
            on_epoch(result)
    if matcher is not None:
        matcher.close()
    if not history:
        raise UsageError(f"nothing to train: the checkpoint already covers all {config.epochs} epochs")
    return _write_weights(model, config, classes, out, history, frozen, command)


def _write_weights(
    model: nn.Module,
    config: FitConfig,
    classes: list[str],
    out: Path,
    history: list[EpochResult],
    frozen: list[str],
    command: str,
) -> FitResult:
    from safetensors.torch import save as save_bytes

    from attnviz.io.atomic import atomic_write

    state = model.state_dict()
    part = config.base and not config.train_backbone
    if part:  # only what differs from the base: the blocks, the head, the batch norms and the trained stages
        norms = _norm_keys(model)
        keep = _trained_keys(model, config) | norms
        state = {k: v for k, v in state.items() if k in keep}
    dtype = torch.float16 if config.half else None
    tensors = {k: (v.to(dtype) if dtype and v.is_floating_point() else v).contiguous() for k, v in state.items()}
    payload = save_bytes(tensors)
    atomic_write(out, lambda handle: handle.write(payload))
    final = history[-1]
    info = WeightsInfo(
        path=out,
        block=config.block,
        backbone=config.backbone,
        stages=config.stages,
        input_size=config.size,
        classes=classes,
        base=Path(config.base) if part else None,
        metrics={
            "val_accuracy": round(final.val_accuracy, 4),
            "val_loss": round(final.val_loss, 4),
            "train_accuracy": round(final.train_accuracy, 4),
            "epochs": len(history),
        },
        extra={"training": {**config.to_dict(), "frozen_parameters": len(frozen)}, "command": command},
    )
    return FitResult(out, write_sidecar(info), history)
