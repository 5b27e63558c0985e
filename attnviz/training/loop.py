"""The scaffold both trainers (classifier and detector) share: seeding, resumable per-epoch checkpoints, the
one-cycle schedule positioned for a resumed run, and what a finished epoch's checkpoint holds.

Checkpoints are written atomically and read as every weights file is (`attnviz.io.checkpoints.read_checkpoint`:
weights-only, archives checked before they are opened), so resuming never runs code.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attnviz.errors import CheckpointError, UsageError, option
from attnviz.io.atomic import atomic_write

ProgressFn = Callable[[dict[str, Any]], None]
"""Called after every batch with the running loss, accuracy and images/s (and, from `fit`, the epoch)."""


def with_epoch(on_batch: ProgressFn | None, epoch: int) -> ProgressFn | None:
    """`on_batch` with "epoch" (counted from 0) added to every report, so progress names a resumed run's epochs."""
    if on_batch is None:
        return None
    report = on_batch
    return lambda stats: report({**stats, "epoch": epoch})


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def checkpoint_path(out: str | os.PathLike[str]) -> Path:
    """Where the resumable checkpoint of a run writing `out` lives: beside it, with the suffix .ckpt."""
    return Path(out).with_suffix(".ckpt")


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically (a Ctrl-C mid-write leaves the previous one intact)."""
    atomic_write(path, lambda handle: torch.save(state, handle))


RESUMABLE_KEYS = {"model": dict, "optimizer": dict, "rng": torch.Tensor, "epoch": int, "config": dict, "history": list}
"""What a resumable checkpoint holds (see `epoch_state`), and the type of each."""


def load_checkpoint(path: Path, expected: dict[str, Any], *, mmap: bool = False) -> dict[str, Any]:
    """The checkpoint at `path`, read as every weights file is (`read_checkpoint`: weights-only, archives checked,
    pickles refused), checked to come from a run with the `expected` options.

    Raises:
        UsageError: there is no checkpoint, an option differs, or the file is a pickle.
        CheckpointError: the file is damaged, truncated, or not a resumable checkpoint.
    """
    from attnviz.io.checkpoints import read_checkpoint

    if not path.is_file():
        raise UsageError(f"nothing to resume: {path} does not exist", f"run without {option('resume')} to start afresh")
    state = read_checkpoint(path, mmap=mmap)
    lacking = [k for k, kind in RESUMABLE_KEYS.items() if not isinstance(_get(state, k), kind)]
    if lacking:
        found = f"a dict with keys {', '.join(map(str, list(state)[:5]))}" if isinstance(state, dict) else "no dict"
        raise CheckpointError(
            f"{path} is not a checkpoint {option('resume')} can continue (no {lacking[0]!r}; found {found})",
            f"it is written beside the output by every epoch of a run; start afresh without {option('resume')}",
        )
    saved = {"train_stages": [], **state["config"]}  # runs from before --train-stages trained none
    for key, ours in expected.items():
        if saved.get(key) != ours:
            raise UsageError(
                f"the checkpoint {path} was made with {key}={saved.get(key)!r}, not {ours!r}",
                f"resume with the same options, or start afresh without {option('resume')}",
            )
    return state


def _get(state: Any, key: str) -> Any:
    return state.get(key) if isinstance(state, dict) else None


def restore(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any], epochs: int) -> int:
    """Load a resumable checkpoint's model, optimizer and RNG state; returns the first epoch still to run.

    Raises:
        UsageError: the checkpoint already covers more than `epochs` epochs.
    """
    done = int(state["epoch"]) + 1
    if done > epochs:
        raise UsageError(
            f"nothing to train: the checkpoint already covers {done} epochs, more than {option('epochs')} {epochs}",
            f"ask for more than {done} epochs, or run without {option('resume')} to start afresh",
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"])
    return done


def one_cycle(
    optimizer: torch.optim.Optimizer, lr: float, epochs: int, first_epoch: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.OneCycleLR:
    """The one-cycle schedule over all `epochs`, positioned at `first_epoch` (a resumed run that asks for more
    epochs stretches what is left)."""
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=lr,
        total_steps=max(epochs, first_epoch + 1) * steps_per_epoch,
        pct_start=0.15,
        last_epoch=first_epoch * steps_per_epoch - 1,
    )


def epoch_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    epoch: int,
    config: Any,
    history: list[Any],
    **extra: Any,
) -> dict[str, Any]:
    """What the checkpoint of a finished epoch holds (`restore` reads it back); `extra` adds run-specific keys."""
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": torch.get_rng_state(),
        "epoch": epoch,
        "config": config.to_dict(),
        **extra,
        "history": [asdict(h) for h in history],
    }
