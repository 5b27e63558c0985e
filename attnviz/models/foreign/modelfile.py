"""Model files (a pickled model, or a state dict given as `--model FILE`), and the modules attnviz can hook.

Capture works by hooking Python modules. A `torch.compile`d model is a wrapper whose compiled code need not call
those hooks, so the module it wraps (`_orig_mod`, the same weights) is analysed instead; TorchScript (torch.jit.trace
or torch.jit.script) runs compiled code that no Python hook sees, so it is refused with a message rather than
recording nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attnviz.errors import UsageError
from attnviz.io.checkpoints import STATE_DICT_KEYS, check_module_values, read_checkpoint


def plain_module(model: nn.Module, spec: str) -> nn.Module:
    """The module whose submodules run as Python: `model` itself, or the module a torch.compile wrapper holds.

    Raises:
        UsageError: `model` is TorchScript (its code runs outside Python, where no hook can see it).
    """
    if isinstance(model, torch.jit.ScriptModule):
        raise UsageError(
            f"{spec} is a TorchScript module (torch.jit.trace or torch.jit.script); attnviz hooks Python modules and "
            "cannot see inside compiled TorchScript",
            "pass the model itself, before it was traced or scripted",
        )
    original = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule: the same module, uncompiled
    return plain_module(original, spec) if isinstance(original, nn.Module) else model


def module_from_checkpoint(obj: Any) -> nn.Module | None:
    """The nn.Module a trusted pickle holds (itself, or nested under a usual key); None for a state dict."""
    if isinstance(obj, nn.Module):
        return obj
    if isinstance(obj, dict):
        for key in STATE_DICT_KEYS:
            if isinstance(obj.get(key), nn.Module):
                return obj[key]
    return None


def model_file(path: str | os.PathLike[str], *, trust: bool) -> tuple[nn.Module | None, Any]:
    """Read a model file: (the module it holds, None) for a trusted pickled model, (None, contents) otherwise.

    Raises:
        UsageError: the file is missing, or it is TorchScript.
        UntrustedCheckpointError: it is a pickled model and `trust` is False (nothing from it has run).
        CheckpointError: it is not a weights or model file, or its weights are not finite.
    """
    if not Path(path).exists():
        raise UsageError(
            f"model file not found: {path}", "give torchvision:NAME, timm:NAME or the path of a model file"
        )
    contents = read_checkpoint(path, trust=trust)
    module = module_from_checkpoint(contents)
    if module is None:
        return None, contents
    module = plain_module(module, str(path))
    check_module_values(module, str(path))
    if any(p.dtype in (torch.float16, torch.bfloat16) for p in module.parameters()):
        module = module.float()  # YOLO checkpoints ship fp16; attnviz feeds float32 photos (ultralytics casts too)
    return module.eval(), None


@dataclass
class StateDictFile:
    """A model file holding only a state dict: the caller builds the attnviz model it fits."""

    path: str
    contents: Any
