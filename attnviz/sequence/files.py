"""The sequence models' weights: a safetensors file plus a JSON sidecar, and finding the shipped ones.

    additive_seq.safetensors   the model's tensors (fp16)
    additive_seq.json          {"format": "attnviz-sequence/1", "block": "additive", "model": "digit_reverser",
                                "config": {...}, "task": "...", "command": "...", "metrics": {...}}

Reading goes through `attnviz.io.checkpoints`, so a file never runs code unless `trust` is given (and then only a
pickled file does).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attnviz.errors import AttnvizError, CheckpointError, UsageError, invocation, option
from attnviz.sequence.models import MODEL_FOR_BLOCK

if TYPE_CHECKING:
    from torch import nn

FORMAT = "attnviz-sequence/1"
BUILD = "python weights/build.py sequence"
"""The command that makes the shipped files (from a source checkout)."""


@dataclass
class SequenceModel:
    """A sequence model ready to draw.

    Attributes:
        block: "additive" or "temporal_gate".
        model: The module, in eval mode, on the CPU.
        path: The weights file it came from.
        sidecar: What the sidecar says (empty for a bare state dict).
    """

    block: str
    model: nn.Module
    path: Path
    sidecar: dict[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> str:
        """One line saying what the model is and where its weights came from."""
        metrics = self.sidecar.get("metrics", {})
        score = f", validation accuracy {metrics['val_accuracy']:.3f}" if "val_accuracy" in metrics else ""
        return f"{MODEL_FOR_BLOCK[self.block]} from {self.path}{score}"


def sidecar_path(weights: Path) -> Path:
    return weights.with_suffix(".json")


def save_model(model: nn.Module, path: Path, sidecar: dict[str, Any]) -> list[Path]:
    """Write `model`'s tensors as fp16 safetensors and `sidecar` (format and config added) beside it, atomically."""
    from safetensors.torch import save

    from attnviz.io.atomic import atomic_write

    state = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    data = save(state)
    text = json.dumps({"format": FORMAT, **sidecar, "config": model.config}, indent=2) + "\n"
    return [
        atomic_write(path, lambda handle: handle.write(data)),
        atomic_write(sidecar_path(path), lambda handle: handle.write(text.encode("utf-8"))),
    ]


def read_sidecar(weights: Path) -> dict[str, Any]:
    """The sidecar beside `weights` ({} when there is none, or it belongs to something else).

    Raises:
        CheckpointError: the sidecar is not valid JSON.
    """
    path = sidecar_path(weights)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"the sidecar {path} is not valid JSON ({type(exc).__name__})") from None
    return data if isinstance(data, dict) and data.get("format") == FORMAT else {}


def shipped_weights(block: str) -> Path | None:
    """The shipped weights of `block`'s sequence model, or None when none are installed."""
    from attnviz.io.shipped import data_dir, demo_manifest

    for entry in demo_manifest():
        if entry.get("kind") == "sequence" and entry.get("block") == block:
            return data_dir("weights") / entry["file"]
    return None


def weights_for(block: str, weights: str | os.PathLike[str] | None) -> Path:
    """The weights file to draw `block` with: `weights`, else the shipped one.

    Raises:
        UsageError: `weights` does not exist.
        AttnvizError: none given and none shipped.
    """
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise UsageError(f"weights file not found: {path}", f"check the path given to {option('weights')}")
        return path
    shipped = shipped_weights(block)
    if shipped is None or not shipped.is_file():
        raise AttnvizError(
            f"no shipped weights for {block}'s {MODEL_FOR_BLOCK[block]} are installed",
            f"build them with `{BUILD}` in a source checkout, or pass {option('weights')}",
        )
    return shipped


def load_model(block: str, weights: str | os.PathLike[str] | None = None, *, trust: bool = False) -> SequenceModel:
    """Build `block`'s model from the sidecar's config and load its weights (strictly) onto the CPU.

    Raises:
        UsageError: the file is missing, or is the other block's model.
        UntrustedCheckpointError: a pickled file without `trust`.
        CheckpointError: the file does not fit the model.
    """
    from attnviz.io.checkpoints import load_state_file
    from attnviz.sequence.models import MODELS

    path = weights_for(block, weights)
    sidecar = read_sidecar(path)
    if sidecar and sidecar.get("block") != block:
        raise UsageError(
            f"{path} holds the {sidecar.get('block')} model, not the {block} one",
            f"draw it with {invocation('sequence', str(sidecar.get('block')))}",
        )
    try:
        model = MODELS[MODEL_FOR_BLOCK[block]](**sidecar.get("config", {}))
    except (TypeError, ValueError, AttnvizError) as exc:
        raise CheckpointError(f"the sidecar of {path} describes no {MODEL_FOR_BLOCK[block]} ({exc})") from None
    load_state_file(model, path, trust=trust, hint=f"give weights made for {block} by `{BUILD}`")
    return SequenceModel(block, model.eval(), path, sidecar)
