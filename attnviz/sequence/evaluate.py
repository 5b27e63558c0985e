"""Scoring the sequence maps against the answers their tasks know.

additive: on fresh digit strings, each output step's attention row should peak on the source position it copies
(S - 1 - i for a reversal). Alignment accuracy is the share of rows whose argmax is that position; a uniform row
(1/S everywhere) picks it by chance with probability 1/S, its mass there is 1/S too.

temporal_gate: on fresh multi-sine windows, what each layer's gate (the mean over its channels, per node) repeats
with: its spectrum's strongest period over the last ANALYSED steps, against the node's known main period, and the
share of its spectral power at that period. Beside it the same for the input series itself, for the same layers of
an untrained forecaster, and for a uniform spectrum.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from attnviz.errors import UsageError, option
from attnviz.sequence.tasks import MAX_DIGITS, MIN_DIGITS, WINDOW

if TYPE_CHECKING:
    from torch import nn

ANALYSED = 96
"""Steps at the end of a WINDOW whose spectrum is read: every PERIOD divides it, and the steps before (48) are more
than the forecaster's receptive field (43), so no gate read saw the zero padding."""
EVAL_SEED = 1000
"""Seed of the evaluation data (training draws from seed 0)."""


def alignment_scores(matrices: Sequence[np.ndarray], alignments: Sequence[Sequence[int]]) -> dict[str, float]:
    """How well attention rows land on known source positions.

    Args:
        matrices: One (T, S) attention matrix per example; row i is output step i.
        alignments: Per example, the right source position of each output step with a known answer (a matrix may
            have more rows, e.g. the </s> step, which are not scored).

    Returns:
        accuracy (share of rows whose argmax is the right position), mass (mean weight on it), their values for a
        uniform row (`uniform_accuracy`, `uniform_mass`: the mean of 1/S), and the number of `rows` scored.
    """
    hits, mass, chance, rows = 0, 0.0, 0.0, 0
    for matrix, alignment in zip(matrices, alignments, strict=True):
        matrix = np.asarray(matrix, dtype=np.float64)
        for row, position in enumerate(alignment):
            hits += int(np.argmax(matrix[row]) == position)
            mass += float(matrix[row, position])
            chance += 1.0 / matrix.shape[1]
            rows += 1
    if rows == 0:
        raise ValueError("no rows to score")
    return {
        "accuracy": hits / rows,
        "mass": mass / rows,
        "uniform_accuracy": chance / rows,
        "uniform_mass": chance / rows,
        "rows": rows,
    }


def dominant_periods(signals: np.ndarray) -> np.ndarray:
    """(K,) the period (in steps) of the strongest non-zero frequency of each of K signals (K, T)."""
    power = _power(signals)
    return signals.shape[-1] / (1 + np.argmax(power, axis=-1))


def period_scores(signals: np.ndarray, periods: np.ndarray) -> dict[str, float]:
    """How strongly K signals (K, T) repeat with their known periods (K,), each a divisor of T.

    Returns:
        period_match: share of signals whose strongest period is the known one; power_share: mean share of each
        signal's spectral power (the mean removed) at the known period.
    """
    power = _power(signals)
    bins = (signals.shape[-1] // np.asarray(periods)).astype(int) - 1
    at_known = power[np.arange(len(bins)), bins]
    share = at_known / np.clip(power.sum(axis=-1), 1e-12, None)
    return {
        "period_match": float(np.mean(np.argmax(power, axis=-1) == bins)),
        "power_share": float(np.mean(share)),
    }


def _power(signals: np.ndarray) -> np.ndarray:
    """Power spectrum of each signal without its mean: (K, T // 2), frequency k + 1 in column k."""
    centred = signals - signals.mean(axis=-1, keepdims=True)
    return (np.abs(np.fft.rfft(centred, axis=-1)) ** 2)[:, 1:]


def uniform_period_scores(steps: int = ANALYSED) -> dict[str, float]:
    """A flat spectrum: every frequency as strong, so the known one is the strongest by chance only."""
    return {"period_match": 1 / (steps // 2), "power_share": 1 / (steps // 2)}


def evaluate_reverser(model: nn.Module, *, n: int, seed: int = EVAL_SEED) -> dict[str, Any]:
    """Greedy reversal of `n` fresh strings (lengths spread evenly over MIN_DIGITS-MAX_DIGITS), scored."""
    import torch

    from attnviz.sequence.tasks import EOS, random_digits

    rng = np.random.default_rng(seed)
    lengths = list(range(MIN_DIGITS, MAX_DIGITS + 1))
    matrices, alignments = [], []
    exact = tokens_right = tokens = 0
    for index, length in enumerate(lengths):
        count = n // len(lengths) + (1 if index < n % len(lengths) else 0)
        if count == 0:
            continue
        digits = random_digits(rng, length, count)
        written, weights = model.generate(torch.from_numpy(digits).long())
        wanted = np.concatenate([digits[:, ::-1], np.full((count, 1), EOS)], axis=1)
        right = written.numpy() == wanted
        exact += int(right.all(axis=1).sum())
        tokens_right += int(right.sum())
        tokens += right.size
        matrices += list(weights.numpy())
        alignments += [list(range(length - 1, -1, -1))] * count
    scores = alignment_scores(matrices, alignments)
    return {
        "strings": n,
        "lengths": [MIN_DIGITS, MAX_DIGITS],
        "sequence_accuracy": exact / n,
        "token_accuracy": tokens_right / tokens,
        "alignment": {"accuracy": scores["accuracy"], "mass": scores["mass"], "rows": scores["rows"]},
        "uniform": {"accuracy": scores["uniform_accuracy"], "mass": scores["uniform_mass"]},
    }


def gate_signals(model: nn.Module, inputs: Any) -> dict[str, np.ndarray]:
    """Each temporal gate of `model` on `inputs` (B, N, T): layer path -> (B, N, T), the mean over channels."""
    from attnviz.capture import capture
    from attnviz.maps import reduce_to

    with capture(model, kinds=["gate"]) as recording:
        model(inputs)
    return {m.layer: reduce_to(m, ("node", "time")).numpy() for m in recording}


def evaluate_forecaster(model: nn.Module, *, n: int, seed: int = EVAL_SEED) -> dict[str, Any]:
    """Forecast error and the gates' periods on `n` fresh windows of 6 nodes."""
    import torch

    from attnviz.sequence.models import SeriesForecaster
    from attnviz.sequence.tasks import forecast_windows

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    untrained = SeriesForecaster(**model.config).eval()
    gates: dict[str, list[np.ndarray]] = {}
    fresh: dict[str, list[np.ndarray]] = {}
    inputs_seen, periods_seen, errors, zero_errors = [], [], [], []
    for start in range(0, n, 100):
        arrays, targets, periods = forecast_windows(rng, min(100, n - start), 6)
        inputs, future = torch.from_numpy(arrays), torch.from_numpy(targets)
        with torch.no_grad():
            errors.append(float(torch.nn.functional.mse_loss(model(inputs), future)))
        zero_errors.append(float(future.pow(2).mean()))
        for store, net in ((gates, model), (fresh, untrained)):
            for layer, signal in gate_signals(net, inputs).items():
                store.setdefault(layer, []).append(signal[..., -ANALYSED:].reshape(-1, ANALYSED))
        inputs_seen.append(inputs.numpy()[..., -ANALYSED:].reshape(-1, ANALYSED))
        periods_seen.append(periods.reshape(-1))
    periods = np.concatenate(periods_seen)
    dilations = dict(zip(gates, model.config["dilations"], strict=True))
    return {
        "windows": n,
        "nodes": 6,
        "steps": WINDOW,
        "analysed_steps": ANALYSED,
        "forecast": {"mse": float(np.mean(errors)), "mse_of_predicting_the_mean": float(np.mean(zero_errors))},
        "gates": {
            layer: {"dilation": dilations[layer], **period_scores(np.concatenate(parts), periods)}
            for layer, parts in gates.items()
        },
        "input": period_scores(np.concatenate(inputs_seen), periods),
        "untrained": {layer: period_scores(np.concatenate(parts), periods) for layer, parts in fresh.items()},
        "uniform": uniform_period_scores(),
    }


def evaluate_model(block: str, model: nn.Module, *, n: int, seed: int = EVAL_SEED) -> dict[str, Any]:
    """`block`'s scores for `model`, plus the short `metrics` a sidecar keeps."""
    if block == "additive":
        result = evaluate_reverser(model, n=n, seed=seed)
        metrics = {
            "val_accuracy": result["sequence_accuracy"],
            "alignment_accuracy": result["alignment"]["accuracy"],
            "uniform_accuracy": result["uniform"]["accuracy"],
        }
    else:
        result = evaluate_forecaster(model, n=n, seed=seed)
        best = max(result["gates"].values(), key=lambda s: s["power_share"])
        metrics = {
            "val_mse": result["forecast"]["mse"],
            "val_mse_of_predicting_the_mean": result["forecast"]["mse_of_predicting_the_mean"],
            "best_gate_period_match": best["period_match"],
            "best_gate_power_share": best["power_share"],
        }
    return {**result, "metrics": metrics}


def evaluate(
    block: str, *, weights: str | os.PathLike[str] | None = None, n: int = 500, trust: bool = False
) -> dict[str, Any]:
    """Score `block`'s sequence model (the shipped one unless `weights`) on `n` fresh examples: what
    `attnviz eval additive|temporal_gate --json` prints.

    Raises:
        UsageError: `n` below 2, or a block that is not a sequence block.
    """
    from attnviz.sequence import SEQUENCE_BLOCKS

    if block not in SEQUENCE_BLOCKS:
        raise UsageError(f"{block!r} is not a sequence block", f"choose one of: {', '.join(SEQUENCE_BLOCKS)}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise UsageError(f"{option('n')} must be at least 2, got {n!r}")
    from attnviz.sequence.files import load_model

    loaded = load_model(block, weights, trust=trust)
    result = evaluate_model(block, loaded.model, n=n)
    return {"block": block, "weights": str(loaded.path), "source": loaded.source, **result}
