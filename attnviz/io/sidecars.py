"""attnviz weights files: a safetensors file plus a JSON sidecar saying what model it belongs to.

    cbam.safetensors   the tensors (the whole model, or only the blocks and head on top of a shared base)
    cbam.json          {"format": "attnviz-weights/1", "block": "cbam", "backbone": "resnet18", "stages": [...],
                        "input_size": 160, "classes": [...], "base": "resnet18_scenes.safetensors" | null, ...}

A file with a `base` holds only what differs from the shared base file (attention blocks and classifier head);
loading reads the base first, then the file on top, so many blocks can share one backbone on disk.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attnviz.errors import CheckpointError

if TYPE_CHECKING:
    from torch import nn

FORMAT = "attnviz-weights/1"


@dataclass
class WeightsInfo:
    """What the sidecar of a weights file says."""

    path: Path
    block: str | None
    backbone: str
    stages: tuple[int, ...]
    input_size: int
    classes: list[str]
    base: Path | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def sidecar_path(weights: str | os.PathLike[str]) -> Path:
    return Path(weights).with_suffix(".json")


def read_sidecar(weights: str | os.PathLike[str]) -> WeightsInfo | None:
    """The sidecar of `weights`, or None when the file has none (a plain state dict) or a JSON file of another kind
    sits there.

    Raises:
        CheckpointError: the sidecar cannot be read, or one of its fields is not valid; the message names the
            sidecar and the field.
    """
    path = sidecar_path(weights)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CheckpointError(f"cannot read the sidecar {path}: {reason}", _FIX.format(name=path.name)) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return None
    _check_fields(data, path)
    base = data.get("base")
    return WeightsInfo(
        path=Path(weights),
        block=data.get("block"),
        backbone=data["backbone"],
        stages=tuple(data["stages"]),
        input_size=data["input_size"],
        classes=list(data["classes"]),
        base=_find_base(path.parent, base) if base else None,
        metrics=dict(data.get("metrics") or {}),
        extra={k: v for k, v in data.items() if k not in _KNOWN},
    )


_FIX = "fix that in {name}, or remove it to load the weights as a plain state dict"


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_fields(data: dict[str, Any], path: Path) -> None:
    """Refuse the first field of a sidecar that is missing or not what attnviz writes, naming the sidecar and the
    field: a sidecar is a file, and its mistakes must not read as if the user had typed them."""
    from attnviz.blocks.catalog import block_names
    from attnviz.images import MAX_SIZE, MIN_SIZE
    from attnviz.models import BACKBONES, STAGES

    stages = data.get("stages")
    checks = (
        (
            "block",
            data.get("block") is None or data.get("block") in block_names(),
            "a block name attnviz knows, or null",
        ),
        ("backbone", data.get("backbone") in BACKBONES, f"one of {', '.join(BACKBONES)}"),
        (
            "stages",
            isinstance(stages, list) and bool(stages) and all(_is_whole(s) and s in STAGES for s in stages),
            f"a list of stage numbers from {STAGES[0]} to {STAGES[-1]}",
        ),
        (
            "input_size",
            _is_whole(data.get("input_size")) and MIN_SIZE <= data["input_size"] <= MAX_SIZE,
            f"a whole number of pixels from {MIN_SIZE} to {MAX_SIZE}",
        ),
        (
            "classes",
            isinstance(data.get("classes"), list)
            and bool(data["classes"])
            and all(isinstance(c, str) for c in data["classes"]),
            "a list of class names",
        ),
        (
            "base",
            data.get("base") is None or (isinstance(data["base"], str) and bool(data["base"])),
            "a file name or null",
        ),
        ("metrics", data.get("metrics") is None or isinstance(data["metrics"], dict), "an object"),
    )
    for name, valid, expected in checks:
        if not valid:
            found = json.dumps(data[name]) if name in data else "nothing (the field is missing)"
            found = found if len(found) <= 60 else found[:57] + "..."
            raise CheckpointError(f'{path}: "{name}" must be {expected}, got {found}', _FIX.format(name=path.name))


def _relative_base(weights: Path, base: Path) -> str:
    """The base as the sidecar stores it: relative to the weights' folder (just its name when they sit together)."""
    try:
        return Path(os.path.relpath(Path(base).resolve(), Path(weights).resolve().parent)).as_posix()
    except ValueError:  # another drive on Windows
        return str(Path(base).resolve())


def _find_base(folder: Path, base: str) -> Path:
    """Where the sidecar's base is: relative to its folder, else a shipped base of that name (a part trained on the
    shipped base and moved elsewhere still loads)."""
    where = folder / base
    if where.is_file():
        return where
    from attnviz.errors import AttnvizError
    from attnviz.io.shipped import data_dir

    try:
        shipped = data_dir("weights") / Path(base).name
    except AttnvizError:
        return where
    return shipped if shipped.is_file() else where


_KNOWN = {"format", "block", "backbone", "stages", "input_size", "classes", "base", "metrics"}


def write_sidecar(info: WeightsInfo) -> Path:
    """Write `info` next to its weights file, atomically; returns the sidecar path."""
    from attnviz.io.atomic import atomic_write

    data = {
        "format": FORMAT,
        "block": info.block,
        "backbone": info.backbone,
        "stages": list(info.stages),
        "input_size": info.input_size,
        "classes": info.classes,
        "base": _relative_base(info.path, info.base) if info.base else None,
        "metrics": info.metrics,
        **info.extra,
    }
    text = json.dumps(data, indent=2, sort_keys=False).encode("utf-8")
    return atomic_write(sidecar_path(info.path), lambda handle: handle.write(text))


def load_weights(model: nn.Module, weights: str | os.PathLike[str], info: WeightsInfo | None) -> None:
    """Load an attnviz weights file into `model`: the base first (without its head) when the file sits on one."""
    from attnviz.io.checkpoints import apply_state_dict, extract_state_dict, read_checkpoint
    from attnviz.models import HEAD_PREFIXES

    if info is not None and info.base is not None and not info.base.is_file():
        sidecar = sidecar_path(info.path)
        raise CheckpointError(
            f'{sidecar}: "base" names {info.base}, which does not exist',
            "put the base weights there, or fix the field",
        )
    state = extract_state_dict(read_checkpoint(weights), str(weights))
    if info is not None and info.base is not None:
        base = extract_state_dict(read_checkpoint(info.base), str(info.base))
        state = {**{k: v for k, v in base.items() if not k.startswith(HEAD_PREFIXES)}, **state}
    apply_state_dict(model, state, str(weights))
