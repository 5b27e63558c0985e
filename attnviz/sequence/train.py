"""Training the two sequence models on their procedural tasks (CPU, a minute or two each).

Only weights/build.py imports this module; drawing and evaluating never do.

    >>> from attnviz.sequence.train import fit
    >>> fit("additive", Path("weights/additive_seq.safetensors"), command="python weights/build.py sequence")
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from attnviz.sequence.files import save_model
from attnviz.sequence.models import MODEL_FOR_BLOCK, DigitReverser, SeriesForecaster
from attnviz.sequence.tasks import (
    HORIZON,
    MAX_DIGITS,
    MIN_DIGITS,
    PERIODS,
    WINDOW,
    decoder_inputs,
    decoder_targets,
    forecast_windows,
    random_digits,
)

RUNS: dict[str, dict[str, Any]] = {
    "additive": {"steps": 1500, "batch": 64, "lr": 3e-3},
    "temporal_gate": {"steps": 600, "batch": 16, "lr": 3e-3, "nodes": 6},
}
"""The shipped runs: optimiser steps, batch size, peak learning rate (Adam, cosine decay)."""

Progress = Callable[[int, float], None]
"""Called with (step, loss) every 100 steps."""


def _schedule(optimiser: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A short linear warm-up, then cosine decay to 5% of the peak."""
    warm = max(1, steps // 20)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))

    return torch.optim.lr_scheduler.LambdaLR(optimiser, factor)


def _optimise(
    model: nn.Module,
    loss_of: Callable[[np.random.Generator], torch.Tensor],
    *,
    steps: int,
    lr: float,
    seed: int,
    on_progress: Progress | None,
) -> float:
    """Run `steps` Adam steps on `loss_of(rng)` with clipped gradients; return the mean loss of the last 100."""
    rng = np.random.default_rng(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = _schedule(optimiser, steps)
    model.train()
    recent: list[float] = []
    for step in range(steps):
        loss = loss_of(rng)
        optimiser.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        recent = [*recent[-99:], loss.item()]
        if on_progress is not None and (step + 1) % 100 == 0:
            on_progress(step + 1, float(np.mean(recent)))
    model.eval()
    return float(np.mean(recent))


def train_reverser(
    *, steps: int, batch: int, lr: float, seed: int = 0, on_progress: Progress | None = None
) -> tuple[DigitReverser, float]:
    """A DigitReverser trained with teacher forcing on random strings of MIN_DIGITS-MAX_DIGITS digits (one length
    per batch); returns it and its final training loss."""
    torch.manual_seed(seed)
    model = DigitReverser()
    criterion = nn.CrossEntropyLoss()

    def loss_of(rng: np.random.Generator) -> torch.Tensor:
        digits = random_digits(rng, int(rng.integers(MIN_DIGITS, MAX_DIGITS + 1)), batch)
        targets = digits[:, ::-1]
        source = torch.from_numpy(digits).long()
        logits = model(source, torch.from_numpy(decoder_inputs(targets).copy()).long())
        wanted = torch.from_numpy(decoder_targets(targets).copy()).long()
        return criterion(logits.reshape(-1, logits.shape[-1]), wanted.reshape(-1))

    return model, _optimise(model, loss_of, steps=steps, lr=lr, seed=seed, on_progress=on_progress)


def train_forecaster(
    *, steps: int, batch: int, lr: float, nodes: int, seed: int = 0, on_progress: Progress | None = None
) -> tuple[SeriesForecaster, float]:
    """A SeriesForecaster trained to predict the clean next HORIZON steps of noisy multi-sine windows."""
    torch.manual_seed(seed)
    model = SeriesForecaster()

    def loss_of(rng: np.random.Generator) -> torch.Tensor:
        inputs, future, _ = forecast_windows(rng, batch, nodes)
        return nn.functional.mse_loss(model(torch.from_numpy(inputs)), torch.from_numpy(future))

    return model, _optimise(model, loss_of, steps=steps, lr=lr, seed=seed, on_progress=on_progress)


def fit(block: str, out: Path, *, command: str, seed: int = 0, on_progress: Progress | None = None) -> dict[str, Any]:
    """Train `block`'s model with its shipped run, score it on fresh data and write `out` with its sidecar.

    Returns:
        The sidecar written.
    """
    from attnviz.sequence.evaluate import evaluate_model

    run = RUNS[block]
    started = time.monotonic()
    if block == "additive":
        model, loss = train_reverser(steps=run["steps"], batch=run["batch"], lr=run["lr"], seed=seed,
                                     on_progress=on_progress)  # fmt: skip
        task = f"reverse random strings of {MIN_DIGITS}-{MAX_DIGITS} digits (one length per batch of {run['batch']})"
    else:
        model, loss = train_forecaster(steps=run["steps"], batch=run["batch"], lr=run["lr"], nodes=run["nodes"],
                                       seed=seed, on_progress=on_progress)  # fmt: skip
        task = (
            f"forecast the clean next {HORIZON} steps of {run['nodes']} noisy multi-sine series of {WINDOW} steps "
            f"(main periods {', '.join(map(str, PERIODS))}; standardised per series)"
        )
    seconds = time.monotonic() - started
    scores = evaluate_model(block, model, n=500, seed=seed + 1000)
    sidecar = {
        "block": block,
        "model": MODEL_FOR_BLOCK[block],
        "task": task,
        "training": {**run, "seed": seed, "final_loss": round(loss, 5), "seconds": round(seconds, 1)},
        "command": command,
        "metrics": scores["metrics"],
    }
    save_model(model, out, sidecar)
    return sidecar
