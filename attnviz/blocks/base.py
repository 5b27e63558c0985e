"""What every attention block stands on: the `Tap` marker, the block registry, and small shared helpers.

A block sends each attention tensor it computes through a `Tap`, an identity module that says what the tensor is
(its kind, the name of each axis, how it was normalised). Capture hooks taps by type, so it never guesses from
module names. Blocks register themselves with `@register("name")`; the name must be in `catalog.CATALOG`.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

from attnviz.blocks.catalog import CATALOG, KINDS, block_info
from attnviz.errors import BlockConfigError

AXES = frozenset({"batch", "channel", "height", "width", "level", "branch", "head", "query", "key", "node", "time"})
"""Axis names a Tap may use. `query`/`key` index tokens; `Tap.tokens` says what a token is."""

NORMS = ("sigmoid", "softmax", "sum_to_one", "none")
"""How a tapped tensor was produced: `sigmoid` (in [0, 1]), `softmax` (non-negative, sums to 1 over `over`),
`sum_to_one` (non-negative weights normalised by their sum over `over`), `none` (no range promised)."""

TOKENS = ("grid", "channel", "sequence", "row_col")
"""What a matrix's query/key tokens are: positions of an H x W `grid` (row-major), `channel`s, positions of a
`sequence`, or (criss-cross) the key axis holds the query's column (H entries) then its row (W entries)."""


class Tap(nn.Module):
    """Identity module that marks an attention tensor so capture can record it.

    Args:
        kind: One of `catalog.KINDS`.
        axes: Name of every dimension of the tapped tensor, batch first, e.g. ("batch", "height", "width").
        norm: One of `NORMS`: how the values were produced, so consumers know their range.
        over: The axes a `softmax`/`sum_to_one` tensor sums to 1 over.
        tokens: For `matrix` taps, what the query/key tokens are (one of `TOKENS`).
        label: Short name of this tap inside its block (e.g. "channel", "cw"); defaults to the kind.
        branches: For taps with a "branch" axis, what each branch is (e.g. ("3x3", "5x5")), for legends.

    The forward pass returns its input unchanged. A matrix tap over grid tokens is called as
    `tap(attention, grid=(h, w))` so capture can map query rows back to pixels.
    """

    def __init__(
        self,
        kind: str,
        axes: tuple[str, ...],
        *,
        norm: str = "sigmoid",
        over: tuple[str, ...] = (),
        tokens: str | None = None,
        label: str | None = None,
        branches: tuple[str, ...] = (),
    ) -> None:
        super().__init__()
        _check_tap_spec(kind, axes, norm, over, tokens)
        if branches and "branch" not in axes:
            raise ValueError(f"branch names {branches} given for a tap without a 'branch' axis: {axes}")
        self.kind = kind
        self.axes = tuple(axes)
        self.norm = norm
        self.over = tuple(over)
        self.tokens = tokens
        self.label = label or kind
        self.branches = tuple(branches)

    def forward(self, attention: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        if attention.dim() != len(self.axes):
            raise RuntimeError(
                f"tap {self.label!r} declares axes {self.axes} but got a tensor of shape {tuple(attention.shape)}"
            )
        return attention

    def extra_repr(self) -> str:
        return f"kind={self.kind}, axes={self.axes}, norm={self.norm}, label={self.label}"


def _check_tap_spec(kind: str, axes: tuple[str, ...], norm: str, over: tuple[str, ...], tokens: str | None) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown tap kind {kind!r}; expected one of {KINDS}")
    if not axes or axes[0] != "batch" or not set(axes) <= AXES:
        raise ValueError(f"tap axes must start with 'batch' and use names from {sorted(AXES)}, got {axes}")
    if norm not in NORMS:
        raise ValueError(f"unknown tap norm {norm!r}; expected one of {NORMS}")
    if (norm in ("softmax", "sum_to_one")) != bool(over) or not set(over) <= set(axes):
        raise ValueError(f"a {norm} tap names the axes it sums to 1 over (and only then); got over={over}")
    if (kind == "matrix") != (tokens is not None) or (tokens is not None and tokens not in TOKENS):
        raise ValueError(f"matrix taps (and only they) name their tokens, one of {TOKENS}; got {tokens!r}")


class AttentionBlock(nn.Module):
    """Base class of every registered block.

    Subclasses take `channels` first, send each attention tensor through a `Tap`, and override
    `example_inputs` when `forward` takes something other than one (B, C, H, W) feature map.
    """

    block_name: str = ""

    @classmethod
    def example_inputs(cls, batch: int, channels: int, height: int, width: int, *, seed: int = 0) -> tuple[Any, ...]:
        """Positional arguments for `forward` that fit a block built with `channels` (used by tests and docs)."""
        return (example_feature_map(batch, channels, height, width, seed=seed),)


# --------------------------------------------------------------------------------------------------- registry

BlockT = TypeVar("BlockT", bound=type[AttentionBlock])

_REGISTRY: dict[str, type[AttentionBlock]] = {}


def register(name: str) -> Callable[[BlockT], BlockT]:
    """Class decorator that registers a block class under `name`, which must be in the catalog.

    Raises:
        ValueError: `name` is not in the catalog, or is registered twice.
    """

    def decorate(cls: BlockT) -> BlockT:
        if not issubclass(cls, AttentionBlock):
            raise TypeError(f"{cls.__qualname__} must subclass AttentionBlock to be registered")
        if name not in CATALOG:
            raise ValueError(f"block {name!r} is not in attnviz.blocks.catalog; add its entry there first")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"block {name!r} is already registered by {_REGISTRY[name].__qualname__}")
        cls.block_name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def block_class(name: str) -> type[AttentionBlock]:
    """The class registered under `name`, importing its module on first use.

    Raises:
        UnknownNameError: `name` is not a registered block; the message lists the valid names.
    """
    info = block_info(name)
    if name not in _REGISTRY:
        importlib.import_module(f"attnviz.blocks.{info.module}")
    return _REGISTRY[name]


def create_block(name: str, channels: int, **options: Any) -> AttentionBlock:
    """Build the block registered under `name` for `channels` input channels.

    Args:
        name: Registry key, e.g. "cbam".
        channels: Channels of the feature map the block will see.
        **options: Block-specific keyword arguments (reduction, kernel_size...).

    Raises:
        UnknownNameError: `name` is not registered.
        BlockConfigError: the options do not fit the block.
    """
    cls = block_class(name)
    if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
        raise BlockConfigError(f"block {name!r} needs a positive whole number of channels, got {channels!r}")
    try:
        return cls(channels, **options)
    except TypeError as exc:
        raise BlockConfigError(f"block {name!r} does not accept these options: {exc}") from exc


def load_all_blocks() -> dict[str, type[AttentionBlock]]:
    """Import every block module and return the full registry (name -> class), in catalog order."""
    return {name: block_class(name) for name in CATALOG}


# ---------------------------------------------------------------------------------------------- shared helpers


def hidden_channels(channels: int, reduction: float, minimum: int = 8) -> int:
    """Width of a bottleneck MLP: `channels // reduction`, but never below `minimum` (nor below 1).

    Blocks keep working when `channels` is smaller than the reduction ratio (e.g. C = 8, reduction 16).
    """
    if reduction <= 0:
        raise BlockConfigError(f"reduction must be positive, got {reduction}")
    return max(1, minimum, int(channels // reduction))


def divisor_at_most(n: int, limit: int) -> int:
    """The largest divisor of `n` that is at most `limit` (at least 1): a group count that always divides."""
    for candidate in range(max(1, min(n, limit)), 0, -1):
        if n % candidate == 0:
            return candidate
    return 1


def odd_kernel_for_channels(channels: int, gamma: float = 2.0, b: float = 1.0) -> int:
    """ECA's adaptive kernel size: the odd number nearest above |log2(C) + b| / gamma (truncated first)."""
    t = int(abs(math.log2(channels) + b) / gamma)
    return t if t % 2 == 1 else t + 1


class ConvNormAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> optional activation, with 'same' padding for odd kernels."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 1,
        *,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        act: type[nn.Module] | None = nn.ReLU,
    ) -> None:
        ks = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        padding = tuple(dilation * (k - 1) // 2 for k in ks)
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                ks,
                stride=stride,
                padding=padding,
                dilation=dilation,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
        ]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)


def example_feature_map(batch: int, channels: int, height: int, width: int, *, seed: int = 0) -> torch.Tensor:
    """A reproducible random (B, C, H, W) tensor for examples and tests."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, height, width, generator=generator)
