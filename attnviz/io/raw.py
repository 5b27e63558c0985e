"""The numbers behind a picture (`--save-raw`): arrays to .npz with a JSON summary beside it, written as one atomic
group with the picture(s) they belong to: all of an image's files appear, or none of them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from attnviz.io.atomic import atomic_group, atomic_write

if TYPE_CHECKING:
    from attnviz.analysis import Analysis
    from attnviz.views.base import View


def _json_default(value: Any) -> Any:
    """JSON for the numpy scalars/arrays and paths that summaries tend to contain."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def save_raw(arrays: Mapping[str, np.ndarray], summary: dict[str, Any], path_stem: Path) -> tuple[Path, Path]:
    """Save the numbers behind a picture: `<stem>.npz` (compressed arrays) and `<stem>.json` (the summary).

    Args:
        arrays: Name -> array; names become the npz keys.
        summary: JSON-ready description (numpy scalars/arrays and paths are converted).
        path_stem: Target without suffix; ".npz"/".json" are appended (dots in the stem are kept).

    Returns:
        (npz path, json path), written as one atomic group: both, or neither.

    Raises:
        UsageError: the directory cannot be created or written to.
        AttnvizError: writing failed (disk full, ...); neither file is left behind.
        TypeError: `summary` holds something JSON cannot represent (nothing is written then).
    """
    stem = Path(path_stem)
    text = json.dumps(summary, indent=2, default=_json_default) + "\n"  # fails before anything is written
    plain = {name: np.asarray(value) for name, value in arrays.items()}
    with atomic_group():
        npz = atomic_write(stem.with_name(f"{stem.name}.npz"), lambda handle: np.savez_compressed(handle, **plain))
        summary_path = atomic_write(stem.with_name(f"{stem.name}.json"), lambda handle: handle.write(text.encode()))
    return npz, summary_path


def save_recording(analysis: Analysis, stem: Path) -> list[Path]:
    """Write `<stem>.npz` (one array per map, keyed by map name) and `<stem>.json`; return both paths."""
    arrays = {m.name: m.tensor.float().numpy() for m in analysis.recording}
    summary = {
        "image": str(analysis.path),
        "original_size": list(analysis.geometry.original_size),
        "input_size": list(analysis.geometry.input_size),
        "maps": [m.summary() for m in analysis.recording],
    }
    return list(save_raw(arrays, summary, stem))


def save_view(view: View, folder: Path, fmt: str, *, raw: bool) -> list[Path]:
    """Write a view's pictures to `folder` and, with `raw`, its recording beside them (`<stem>_<name>_raw.npz/.json`)
    as one atomic group: a failure halfway (a full disk) leaves none of this image's files.

    Returns:
        The pictures written, then the raw files.
    """
    with atomic_group():
        written = view.save(folder, fmt)
        if raw:
            written += save_recording(view.analysis, Path(folder) / f"{view.stem}_{view.name}_raw")
    return written
