"""Reading weights files: safetensors and weights-only torch files; pickled modules only when the user trusts them.

`torch.load(weights_only=True)` never runs code from the file; a file that needs the full unpickler (a model saved
with `torch.save(model)`) is refused unless `trust=True`, because unpickling it can execute anything. A zip archive
is checked before torch opens it (`attnviz.io.archive`: no compressed entry, nothing beyond the file's size), and
weights are checked when applied: finite, and floating point where the model's are.
"""

from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Container, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attnviz.errors import CheckpointError, UntrustedCheckpointError, UsageError, option
from attnviz.io.archive import check_zip_entries, is_zip, pickle_report

EMA_KEYS = ("ema", "model_ema", "state_dict_ema")
"""Keys of the exponential moving average of the weights: preferred when a file holds both, as YOLO's own loader
does (the EMA is what YOLO-style and timm trainers evaluate and ship)."""
STATE_DICT_KEYS = (*EMA_KEYS, "state_dict", "model_state_dict", "model", "weights", "net")
"""Keys under which training scripts commonly nest a state dict (or a pickled model), in order of preference."""


def _check_file(path: Path) -> None:
    if not path.exists():
        raise UsageError(f"weights file not found: {path}", "check the path")
    if path.is_dir():
        raise UsageError(f"{path} is a directory, not a weights file", "give the path of a .safetensors or .pt file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"weights file {path} is empty", "re-save or re-download it")


def read_checkpoint(path: str | os.PathLike[str], *, trust: bool | None = None, mmap: bool = False) -> Any:
    """Read a weights file without running code from it (unless `trust`).

    Returns a dict (a state dict, or a training checkpoint holding one), or with `trust=True` possibly a
    pickled nn.Module.

    Args:
        path: The file.
        trust: Unpickle a pickled model (runs code from the file). None: the caller has no such option, so a refusal
            does not suggest one.
        mmap: Map a zip-format torch file's tensors instead of reading them (cheap for a look at its config).

    Raises:
        UsageError: the file is missing or a directory.
        UntrustedCheckpointError: the file is a full pickle that `trust` would load and `trust` is not True.
        CheckpointError: the file is empty, corrupt, compressed, a pickle that cannot load here, or not a weights
            file.
    """
    path = Path(path)
    _check_file(path)
    if path.suffix == ".safetensors" or _looks_like_safetensors(path):
        return _read_safetensors(path)
    if not _looks_like_torch_file(path):
        raise CheckpointError(
            f"{path} is not a weights file (neither safetensors nor a file written by torch.save)",
            "pass a .safetensors or .pt file saved from the model's state_dict",
        )
    zipped = is_zip(path)
    if zipped:
        check_zip_entries(path)
    try:
        with warnings.catch_warnings():
            # torch warns (on stderr) about pickle protocols its weights-only reader may not support; the reader
            # refuses what it cannot read anyway, and that refusal is reported below in one line.
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipped)
    except pickle.UnpicklingError as exc:
        if not trust:
            raise _pickle_refusal(path, offered=trust is not None) from exc
    except Exception as exc:  # the weights-only reader runs no code from the file; anything else is a bad file
        raise CheckpointError(
            f"cannot read {path} as a torch weights file ({first_line(exc)})",
            "the file may be truncated or not a checkpoint",
        ) from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a trusted pickle can fail in any way its code likes
        raise CheckpointError(
            f"loading the trusted pickle {path} failed: {type(exc).__name__}: {first_line(exc)}"
        ) from exc


def _pickle_refusal(path: Path, *, offered: bool) -> CheckpointError | UntrustedCheckpointError:
    """Why a file the weights-only reader refused is not read, suggesting the trust option only where it would load
    the file: a pickle that parses and whose classes all exist here, with an option to pass."""
    report = pickle_report(path)
    if not report.readable:
        return CheckpointError(
            f"{path} is a damaged or truncated pickle, not a readable weights file",
            "re-save or re-download it",
        )
    if report.missing:
        return CheckpointError(
            f"{path} is a pickled Python object that needs {_examples(report.missing, 2)}, which does not exist here, "
            f"so it cannot be loaded even with {option('trust')}",
            "save model.state_dict() where the model's code lives, and pass that file",
        )
    message = (
        f"{path} is a pickled Python object (e.g. a model saved with torch.save(model)); loading it runs code from "
        "the file"
    )
    if not offered:
        return UntrustedCheckpointError(
            message + ", and this reads weights only", "save model.state_dict() and pass that file instead"
        )
    return UntrustedCheckpointError(
        message, f"pass {option('trust')} only if you trust where the file came from, or save a state_dict instead"
    )


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, at most 160 characters (its type when it has no message)."""
    lines = str(exc).strip().splitlines()
    return lines[0][:160] if lines else type(exc).__name__


def _looks_like_safetensors(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def _looks_like_torch_file(path: Path) -> bool:
    """A zip archive (torch.save's format) or a pickle of protocol 2 or later (its legacy format, plain pickle)."""
    with path.open("rb") as handle:
        head = handle.read(4)
    return head.startswith((b"PK\x03\x04", b"\x80"))


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"cannot read {path} as safetensors ({first_line(exc)})",
            "the file may be truncated or corrupt; re-save or re-download it",
        ) from exc


def extract_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The state dict inside what `read_checkpoint` returned (a bare state dict, or one nested under a usual key)."""
    return find_state_dict(obj, source)[0]


def find_state_dict(obj: Any, source: str = "checkpoint") -> tuple[dict[str, torch.Tensor], str]:
    """(the state dict inside what `read_checkpoint` returned, the key it was found under: "" when bare).

    Training checkpoints nest it under a usual key ({'state_dict': ...}, {'model': ...}, {'model_state_dict': ...});
    when one holds EMA weights beside the raw ones ({'model': ..., 'ema': ...}), the EMA weights are taken.

    Raises:
        CheckpointError: nothing in `obj` is a state dict.
    """
    if isinstance(obj, nn.Module):
        return obj.state_dict(), ""
    if isinstance(obj, dict):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj, ""
        for key in STATE_DICT_KEYS:
            if not isinstance(obj.get(key), dict | nn.Module):
                continue
            try:
                state, inner = find_state_dict(obj[key], source)
            except CheckpointError:  # e.g. an 'ema' entry holding only the EMA's settings
                continue
            return state, ".".join(filter(None, (key, inner)))
    found = f"a dict with keys {_examples([str(k) for k in obj], 5)}" if isinstance(obj, dict) else type(obj).__name__
    raise CheckpointError(
        f"{source} holds no state dict (found {found})",
        f"save model.state_dict(), alone or under one of the keys {', '.join(STATE_DICT_KEYS)}",
    )


def strip_prefixes(state: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """`state` without the leading key parts every key shares ("module." from DDP, "model." from Lightning, both,
    "_orig_mod." from torch.compile...), stripped as far as makes the most keys match `expected`."""
    best, best_hits, current = state, len(set(state) & expected), state
    while current and all("." in k for k in current):
        heads = {k.partition(".")[0] for k in current}
        if len(heads) != 1:
            break
        current = {k.partition(".")[2]: v for k, v in current.items()}
        hits = len(set(current) & expected)
        if hits > best_hits:
            best, best_hits = current, hits
    return best


def _backbone_hint() -> str:
    return (
        f"check {option('backbone')}, the block name and {option('stages')} match the ones the weights were trained "
        "with"
    )


def _examples(keys: list[str], count: int = 3) -> str:
    return ", ".join(keys[:count]) + (", ..." if len(keys) > count else "")


def apply_state_dict(
    model: nn.Module, state: dict[str, torch.Tensor], source: str = "the weights file", *, hint: str | None = None
) -> None:
    """Load `state` into `model` strictly, naming what does not match in one line.

    Keys prefixed by a wrapper (DDP's "module.", Lightning's "model.") are matched without it; batch-norm counters
    (`num_batches_tracked`) that older files lack are kept as the model has them.

    Args:
        model: The model to load into.
        state: The state dict.
        source: Where it came from, for the message.
        hint: What to do when it does not fit (default: check the attnviz backbone, block and stages).

    Raises:
        CheckpointError: keys are missing or unexpected, or shapes differ.
    """
    own = model.state_dict()
    state = strip_prefixes(state, set(own))
    state = {**{k: v for k, v in own.items() if k.endswith("num_batches_tracked") and k not in state}, **state}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {_examples(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {_examples(unexpected)})")
        if mismatched:
            parts.append(f"{len(mismatched)} of another shape (e.g. {_examples(mismatched, 2)})")
        raise CheckpointError(f"{source} does not fit this model: " + "; ".join(parts), hint or _backbone_hint())
    check_values(((k, state[k]) for k in own), source, floating={k for k, v in own.items() if v.is_floating_point()})
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)


def check_values(tensors: Iterable[tuple[str, torch.Tensor]], source: str, *, floating: Container[str] = ()) -> None:
    """Refuse weights that cannot compute anything: NaN or infinite values, or a tensor the model keeps as floating
    point (named in `floating`) stored as integers, booleans or complex numbers.

    Raises:
        CheckpointError: naming the first such tensor.
    """
    for name, tensor in tensors:
        if name in floating and not tensor.is_floating_point():
            raise CheckpointError(
                f"{source}: {name} holds {str(tensor.dtype).removeprefix('torch.')} values where the model has "
                "floating-point weights",
                "save the weights as floating point (float32, float16 or bfloat16)",
            )
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(
                f"{source}: {name} holds NaN or infinite values",
                "the weights are broken (a diverged training run?); use an earlier checkpoint",
            )


def check_module_values(model: nn.Module, source: str) -> None:
    """`check_values` on a whole model's parameters (floating point expected) and buffers (finite where floating).

    Raises:
        CheckpointError: naming the first tensor that is not finite or not floating point.
    """
    parameters = dict(model.named_parameters())
    check_values(model.state_dict(keep_vars=True).items(), source, floating=set(parameters))


def load_state_file(
    model: nn.Module, path: str | os.PathLike[str], *, trust: bool = False, hint: str | None = None
) -> str:
    """Read the state dict in `path` (bare, or nested in a training checkpoint: EMA weights first) into `model`, and
    return the key it was nested under ("" when bare).

    Raises:
        UsageError, UntrustedCheckpointError, CheckpointError: as `read_checkpoint` and `apply_state_dict`.
    """
    state, entry = find_state_dict(read_checkpoint(path, trust=trust), str(path))
    apply_state_dict(model, state, str(path), hint=hint)
    return entry
