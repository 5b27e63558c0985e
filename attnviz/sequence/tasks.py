"""Procedural tasks whose right answers are known, and reading the user's own input for them.

Reversal: a string of digits is read back to front, so output step i copies source position S - 1 - i; the right
alignment of an attention matrix (output steps x source positions) is the anti-diagonal.

Multi-sine series: every node (series) is a sine of a known period plus a weaker sine of another period and noise,
so what a gate over nodes x time repeats with can be compared with the period the node was built from.

Nothing here imports torch.
"""

from __future__ import annotations

import csv
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attnviz.errors import UsageError

DIGITS = "0123456789"
PAD, BOS, EOS = 10, 11, 12
TOKENS = (*DIGITS, "<pad>", "<s>", "</s>")
"""The reverser's vocabulary: the ten digits, then padding, start and end of sequence."""
MIN_DIGITS, MAX_DIGITS = 3, 12
"""The lengths the reverser was trained on, and so the lengths it accepts."""
EXAMPLE_DIGITS = "4096153827"
"""The digit line drawn when none is given."""

PERIODS = (6, 8, 12, 16, 24)
"""Periods (in time steps) a node's main sine is drawn from."""
WINDOW = 144
"""Time steps of a procedural series window."""
HORIZON = 8
"""Steps ahead the forecaster predicts."""
MIN_STEPS, MAX_STEPS = 16, 2000
MAX_NODES = 16
"""Bounds of a series the gate picture accepts (more nodes than this are unreadable as rows)."""


@dataclass(frozen=True)
class Reversal:
    """One reversal example.

    Attributes:
        source: The digits read.
        target: The digits written: `source` back to front.
        alignment: For each output step, the source position it copies (S - 1 - i).
    """

    source: str
    target: str
    alignment: tuple[int, ...]


def reversal(digits: str) -> Reversal:
    """The reversal example of `digits` (already checked to be digits)."""
    size = len(digits)
    return Reversal(digits, digits[::-1], tuple(size - 1 - i for i in range(size)))


def parse_digits(text: str) -> str:
    """A digit line as the user typed it ("4096153827", "4 0 9 6", "40-96") -> the digits alone.

    Raises:
        UsageError: a character that is not a digit, space, comma or dash, or a length outside what the model knows.
    """
    digits = re.sub(r"[\s,\-]", "", text)
    bad = next((c for c in digits if c not in DIGITS), None)
    if bad is not None:
        raise UsageError(f"additive reads a line of digits, got {bad!r} in {text!r}", f"e.g. {EXAMPLE_DIGITS}")
    if not MIN_DIGITS <= len(digits) <= MAX_DIGITS:
        raise UsageError(
            f"additive reverses {MIN_DIGITS} to {MAX_DIGITS} digits (the lengths it was trained on), got {len(digits)}",
            f"give a line of {MIN_DIGITS}-{MAX_DIGITS} digits, e.g. {EXAMPLE_DIGITS}",
        )
    return digits


def random_digits(rng: np.random.Generator, length: int, count: int) -> np.ndarray:
    """(count, length) random digits 0-9."""
    return rng.integers(0, 10, size=(count, length))


def decoder_inputs(targets: np.ndarray) -> np.ndarray:
    """Teacher forcing: <s> followed by every target digit (the decoder's input at each step)."""
    start = np.full((targets.shape[0], 1), BOS, dtype=targets.dtype)
    return np.concatenate([start, targets], axis=1)


def decoder_targets(targets: np.ndarray) -> np.ndarray:
    """What the decoder must write at each step: the target digits, then </s>."""
    end = np.full((targets.shape[0], 1), EOS, dtype=targets.dtype)
    return np.concatenate([targets, end], axis=1)


@dataclass(frozen=True)
class Series:
    """Series over time for the temporal gate.

    Attributes:
        values: (N nodes, T steps) floats.
        names: One name per node, for the picture's rows.
        periods: For procedural series, each node's main period (None for the user's own series).
        source: Where the series came from (a file path, or "multi-sine example").
    """

    values: np.ndarray
    names: tuple[str, ...]
    periods: tuple[int, ...] | None = None
    source: str = "multi-sine example"


def multi_sine(
    rng: np.random.Generator, count: int, nodes: int, steps: int, *, noise: float = 0.3
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`count` windows of `nodes` series, `steps` + HORIZON long.

    Each node is sin(2 pi t / P + phase) with P from PERIODS, plus 0.4 sin of another period from PERIODS, plus
    Gaussian noise of standard deviation `noise`.

    Returns:
        (noisy (count, nodes, steps + HORIZON), clean (the same without noise), main periods (count, nodes)).
    """
    total = steps + HORIZON
    time = np.arange(total, dtype=np.float64)
    main = rng.choice(PERIODS, size=(count, nodes))
    offset = rng.integers(1, len(PERIODS), size=(count, nodes))
    second = np.asarray(PERIODS)[(np.searchsorted(PERIODS, main) + offset) % len(PERIODS)]
    phases = rng.uniform(0, 2 * math.pi, size=(count, nodes, 2))
    clean = np.sin(2 * math.pi * time / main[..., None] + phases[..., :1])
    clean += 0.4 * np.sin(2 * math.pi * time / second[..., None] + phases[..., 1:])
    noisy = clean + rng.normal(0.0, noise, size=clean.shape)
    return noisy.astype(np.float32), clean.astype(np.float32), main


def forecast_windows(
    rng: np.random.Generator, count: int, nodes: int, steps: int = WINDOW
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The forecaster's task: (noisy inputs (count, nodes, steps) standardised per series, the clean next HORIZON
    steps on the same scale, the main periods (count, nodes))."""
    noisy, clean, periods = multi_sine(rng, count, nodes, steps)
    past = noisy[..., :steps]
    mean, spread = past.mean(axis=-1, keepdims=True), past.std(axis=-1, keepdims=True)
    future = (clean[..., steps:] - mean) / spread
    return ((past - mean) / spread).astype(np.float32), future.astype(np.float32), periods


def example_series(nodes: int = 6, steps: int = WINDOW, seed: int = 7) -> Series:
    """The series drawn when no CSV is given: one procedural window, each node named by its main period."""
    noisy, _, periods = multi_sine(np.random.default_rng(seed), 1, nodes, steps)
    known = tuple(int(p) for p in periods[0])
    names = tuple(f"node {n} (period {p})" for n, p in enumerate(known))
    return Series(noisy[0, :, :steps], names, known)


def read_series_csv(path: str | os.PathLike[str]) -> Series:
    """A CSV of series: one row per time step, one column per node, an optional header row of node names.

    Raises:
        UsageError: the file is missing or unreadable, a cell is not a finite number, rows differ in length, or
            there are too few steps or too many nodes to draw.
    """
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"series file not found: {file}", "give a CSV with one row per time step, one column per node")
    try:
        rows = [row for row in csv.reader(file.read_text(encoding="utf-8").splitlines()) if any(c.strip() for c in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"cannot read {file} as CSV ({type(exc).__name__})", "save it as UTF-8 text") from None
    if not rows:
        raise UsageError(f"{file} holds no rows", "one row per time step, one column per node")
    header = None if _numeric(rows[0]) else rows.pop(0)
    width = len(header) if header is not None else len(rows[0])
    values = np.empty((len(rows), width), dtype=np.float32)
    for number, row in enumerate(rows, start=2 if header is not None else 1):
        if len(row) != width:
            raise UsageError(f"{file} line {number} has {len(row)} columns, the first has {width}", "one per node")
        if not _numeric(row):
            raise UsageError(f"{file} line {number} holds a cell that is not a finite number: {row}")
        values[number - (2 if header is not None else 1)] = [float(c) for c in row]
    _check_series_shape(file, values.shape)
    names = tuple(n.strip() or f"node {i}" for i, n in enumerate(header)) if header else None
    return Series(values.T.copy(), names or tuple(f"node {i}" for i in range(width)), None, str(file))


def _numeric(row: list[str]) -> bool:
    try:
        return all(math.isfinite(float(cell)) for cell in row)
    except ValueError:
        return False


def _check_series_shape(file: Path, shape: tuple[int, ...]) -> None:
    steps, nodes = shape
    if not MIN_STEPS <= steps <= MAX_STEPS:
        raise UsageError(f"{file} has {steps} time steps; the gate picture draws {MIN_STEPS} to {MAX_STEPS}")
    if not 1 <= nodes <= MAX_NODES:
        raise UsageError(f"{file} has {nodes} columns; the gate picture draws 1 to {MAX_NODES} nodes (series)")


def standardise(values: np.ndarray) -> np.ndarray:
    """Each node's series to mean 0 and standard deviation 1 over time (a constant series stays at 0)."""
    mean = values.mean(axis=-1, keepdims=True)
    spread = values.std(axis=-1, keepdims=True)
    return ((values - mean) / np.where(spread > 0, spread, 1.0)).astype(np.float32)
