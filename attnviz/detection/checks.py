"""The cheap checks of the detector's entry points, torch-free: bad values are refused before anything heavy runs.

The CLI commands (asff-weights, eval-det) and the library functions behind them call the same checks, so a value is
refused the same way from both. Messages name each option as the caller spells it (`attnviz.errors.option`):
"--max-detections" while a CLI command runs, "max_detections=" from Python.
"""

from __future__ import annotations

import os
from pathlib import Path

from attnviz.errors import UsageError, option


def given(name: str, value: object = True) -> str:
    """An option with its value as the caller writes it: "--score 0.5" or "score=0.5"; a switch "--trust" or
    "trust=True"."""
    flag = option(name)
    if flag.endswith("="):
        return f"{flag}{value!r}"
    return flag if value is True else f"{flag} {value}"


def detector_not_found(path: Path) -> UsageError:
    """The error for a detector file that does not exist."""
    return UsageError(f"detector file not found: {path}", "check the path, or train one with attnviz fit-det")


def detector_file(det: str | os.PathLike[str]) -> Path:
    """The detector file `det` names: the path itself, or the shipped demo detector for "demo".

    Raises:
        UsageError: the file does not exist.
        AttnvizError: "demo" was asked for and no demo detector is installed.
    """
    from attnviz.io.shipped import detector_path

    path = detector_path(Path(det))
    if not path.exists():
        raise detector_not_found(path)
    return path


def check_asff_options(*, score: float, iou: float, max_detections: int) -> None:
    """The detection thresholds of asff-weights.

    Raises:
        UsageError: `score` outside 0..1, `iou` outside (0, 1], or `max_detections` below 1.
    """
    if not 0.0 <= score <= 1.0 or not 0.0 < iou <= 1.0:
        raise UsageError(
            f"{option('score')} must be in 0..1 and {option('iou')} in (0, 1]",
            f"got {given('score', score)} {given('iou', iou)}",
        )
    if max_detections < 1:
        raise UsageError(f"{option('max_detections')} must be at least 1, got {max_detections}")


def check_scene_options(*, n: int, score: float, batch_size: int, max_objects: int) -> None:
    """The options of scoring a detector on held-out scenes (eval-det).

    Raises:
        UsageError: a count below 1, or a score outside 0..1.
    """
    if n < 1 or batch_size < 1 or max_objects < 1:
        raise UsageError(f"{option('n')}, {option('batch_size')} and {option('max_objects')} must be at least 1")
    if not 0.0 <= score <= 1.0:
        raise UsageError(f"{option('score')} must be in 0..1, got {score}")
