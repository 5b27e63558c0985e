"""Refusing an attention matrix before it is computed, from the size of the input its module is called with.

A self-attention block over the H*W positions of a feature map computes a (B, heads, N, N) matrix, N = H*W: at
`--size 2048` stage 3 of a ResNet holds 128 x 128 positions, and the block asks for 4 GiB at once. Capture's byte
budget sees a matrix only after the block has computed it, so a forward pre-hook on every module that holds a matrix
tap estimates the matrix from its input and refuses it first, naming the input size and the limit:
    - attnviz's own blocks always compute the full matrix: refused over FORWARD_FACTOR times the budget;
    - a foreign module's matrix is recomputed by attnviz for the recording (`attnviz.models.foreign`): refused over
      the budget itself when it is recorded, unless only some query rows are asked for (then only those rows are
      recomputed).
"""

from __future__ import annotations

from collections.abc import Callable, Container
from typing import Any

import torch
from torch import nn

from attnviz.errors import CaptureError, option

FORWARD_FACTOR = 2
"""How many times the recording budget a block's own forward may spend on one matrix (256 MB -> 512 MB)."""
GUARDED_TOKENS = ("grid", "sequence")
"""Matrix taps whose size grows with the square of the positions (criss-cross rows grow far slower)."""

Hook = Callable[[nn.Module, tuple[Any, ...]], None]


def guard_matrices(
    model: nn.Module,
    taps: dict[str, tuple[Any, str, str]],
    max_bytes: int,
    *,
    recorded: Container[str],
    rows_asked: bool,
) -> list[torch.utils.hooks.RemovableHandle]:
    """Put a pre-hook on the module of every matrix tap in `taps` (see `attnviz.capture.find_taps`) that refuses
    its matrix before it is computed; returns the hook handles to remove.

    Args:
        model: The model the taps are in.
        taps: Path -> (tap, layer, block) of every tap.
        max_bytes: The recording budget of one matrix.
        recorded: Paths of the taps recorded (a foreign matrix is recomputed only for those).
        rows_asked: Whether only some query rows are recorded (foreign matrices are then recomputed row by row).
    """
    input_size: list[tuple[int, int]] = []
    handles = [model.register_forward_pre_hook(_remember_input(input_size))]
    for path, (tap, layer, block) in taps.items():
        if tap.kind != "matrix" or tap.tokens not in GUARDED_TOKENS:
            continue
        foreign = hasattr(tap, "connect")
        if foreign and (rows_asked or path not in recorded):
            continue
        limit = max_bytes if foreign else FORWARD_FACTOR * max_bytes
        module = model.get_submodule(path.rpartition(".")[0])
        handles.append(module.register_forward_pre_hook(_refuse_over(limit, f"{layer} ({block})", input_size)))
    return handles


def matrix_bytes(module: nn.Module, features: torch.Tensor) -> tuple[int, int]:
    """(bytes, positions) of the attention matrix `module` computes from `features`: (B, C, H, W) or (B, N, C)
    (or (N, B, C): the longer leading axis is taken as the positions)."""
    heads = getattr(module, "heads", None) or getattr(module, "num_heads", None) or 1
    heads = heads if isinstance(heads, int) else 1
    if features.dim() == 4:
        batch, positions = features.shape[0], features.shape[-2] * features.shape[-1]
    else:
        batch, positions = sorted(features.shape[:2])
    return batch * heads * positions * positions * features.element_size(), positions


def _remember_input(store: list[tuple[int, int]]) -> Hook:
    def remember(_module: nn.Module, args: tuple[Any, ...]) -> None:
        if args and isinstance(args[0], torch.Tensor) and args[0].dim() == 4:
            store[:] = [(int(args[0].shape[-1]), int(args[0].shape[-2]))]

    return remember


def _refuse_over(limit: int, where: str, input_size: list[tuple[int, int]]) -> Hook:
    def refuse(module: nn.Module, args: tuple[Any, ...]) -> None:
        features = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if features is None or features.dim() not in (3, 4):
            return
        nbytes, positions = matrix_bytes(module, features)
        if nbytes <= limit:
            return
        at = f" at the input size {input_size[0][0]}x{input_size[0][1]}" if input_size else ""
        raise CaptureError(
            f"the attention matrix at {where} would take {nbytes / 2**20:,.0f} MB ({positions:,} positions){at}, "
            f"over the {limit / 2**20:,.0f} MB it may use; refused before it was computed",
            f"use a smaller {option('size')}",
        )

    return refuse
