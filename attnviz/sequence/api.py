"""`attnviz.sequence(block, input)`: the sequence blocks drawn, from Python, as `attnviz sequence` draws them.

    >>> import attnviz
    >>> view = attnviz.sequence("additive", "4096153827")     # the shipped digit reverser's alignment
    >>> view.summary["alignment"]["accuracy"]
    >>> view = attnviz.sequence("temporal_gate", "series.csv")  # the shipped forecaster's gates over your series
    >>> view.save("attnviz-out")                              # the files the CLI writes

The block and the input are checked before torch is imported.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from attnviz.blocks.catalog import block_info
from attnviz.errors import UsageError, invocation
from attnviz.sequence import SEQUENCE_BLOCKS
from attnviz.sequence.tasks import (
    EXAMPLE_DIGITS,
    MAX_NODES,
    MAX_STEPS,
    MIN_STEPS,
    Series,
    example_series,
    parse_digits,
    read_series_csv,
)

if TYPE_CHECKING:
    from attnviz.views.base import View

SequenceInput = str | os.PathLike[str] | np.ndarray | None
"""A digit line (additive); a CSV file or an (N nodes, T steps) array (temporal_gate); None for the example."""


def check_block(block: str) -> None:
    """Refuse a block `sequence` does not draw, saying which command does.

    Raises:
        UnknownNameError: not a block at all.
        UsageError: a block drawn by another command (or, like fpn, carrying no attention).
    """
    if block in SEQUENCE_BLOCKS:
        return
    info = block_info(block)
    hint = f"choose one of: {', '.join(SEQUENCE_BLOCKS)}"
    if not info.kinds:
        hint = f"{block} carries no attention of its own (its levels are drawn by asff-weights); {hint}"
    elif info.fits_backbone:
        hint = f"draw it over a photo, e.g. {invocation('show', block)}, or {hint}"
    raise UsageError(f"sequence draws {' and '.join(SEQUENCE_BLOCKS)}, not {block}", hint)


def digits_input(given: SequenceInput) -> str:
    """The digit line to reverse: `given` checked, or the example."""
    if given is None:
        return EXAMPLE_DIGITS
    if not isinstance(given, str):
        raise UsageError(f"additive reads a line of digits, got {type(given).__name__}", f"e.g. {EXAMPLE_DIGITS!r}")
    return parse_digits(given)


def series_input(given: SequenceInput) -> Series:
    """The series to gate: a CSV file, an (N, T) array, or the multi-sine example."""
    if given is None:
        return example_series()
    if isinstance(given, np.ndarray):
        values = given.astype(np.float32) if given.ndim == 2 else None
        if values is None or not np.isfinite(values).all():
            raise UsageError(f"temporal_gate reads an (N nodes, T steps) array of finite numbers, got {given.shape}")
        nodes, steps = values.shape
        if not (1 <= nodes <= MAX_NODES and MIN_STEPS <= steps <= MAX_STEPS):
            raise UsageError(
                f"temporal_gate draws 1-{MAX_NODES} nodes of {MIN_STEPS}-{MAX_STEPS} steps, got {nodes} x {steps}",
                "pass an array shaped (nodes, steps)",
            )
        return Series(values, tuple(f"node {i}" for i in range(nodes)), None, "array")
    return read_series_csv(given)


def sequence(
    block: str,
    input: SequenceInput = None,
    *,
    weights: str | os.PathLike[str] | None = None,
    trust: bool = False,
) -> View:
    """Draw a sequence block in its shipped model (or `weights`): the picture `attnviz sequence` writes.

    Args:
        block: "additive" (the alignment of a digit reverser) or "temporal_gate" (a forecaster's gates).
        input: additive: a line of 3-12 digits (default 4096153827). temporal_gate: a CSV file (one row per time
            step, one column per node, an optional header of names) or an (N, T) array (default: a multi-sine
            example whose periods are known).
        weights: Weights made by `python weights/build.py sequence` (default: the shipped ones).
        trust: Allow a pickled weights file; this runs code from the file.

    Returns:
        A View with one picture, "alignment" or "gate"; its summary is the command's `--json` result.

    Raises:
        UsageError: a block sequence does not draw, a bad input, a missing weights file.
        AttnvizError: the weights cannot be read or do not fit.
    """
    check_block(block)
    given = digits_input(input) if block == "additive" else series_input(input)

    from attnviz.sequence.analysis import analyse_digits, analyse_series
    from attnviz.sequence.files import load_model
    from attnviz.sequence.views import draw

    loaded = load_model(block, weights, trust=trust)
    analysis = analyse_digits(loaded, given) if isinstance(given, str) else analyse_series(loaded, given)
    return draw(analysis, loaded.source)
