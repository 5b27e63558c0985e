"""MTGNN's gated temporal convolution: two dilated-inception layers, one through tanh, one as a sigmoid gate.

Wu, Pan, Long, Jiang, Chang, Zhang. "Connecting the Dots: Multivariate Time Series Forecasting with Graph Neural
Networks", KDD 2020 (arXiv:2005.11650).

inception(x) = [conv_(1 x k)(pad_left(x, d (k - 1))) for k in kernel_set]      dilation d along time, concat on C
filter = tanh(inception_f(x))        gate = sigmoid(inception_g(x))        y = filter * gate
x and y are (B, C, N, T): batch, channels, nodes (series), time. MTGNN crops every branch to the shortest
output, so its length shrinks by d (max(k) - 1); here every branch is padded on the left (causal) instead,
so y keeps any length T >= 1 and y[..., t] depends on x[..., :t + 1] only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from attnviz.blocks.base import AttentionBlock, Tap, example_feature_map, register
from attnviz.errors import BlockConfigError


def split_channels(total: int, parts: int) -> list[int]:
    """`total` channels over `parts` branches as evenly as possible; the first branches take the remainder."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


class CausalConv(nn.Module):
    """A (1 x k) conv along time, dilated by d and left-padded by d (k - 1) so the length stays T."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.left_pad = dilation * (kernel - 1)
        self.conv = nn.Conv2d(in_channels, out_channels, (1, kernel), dilation=(1, dilation))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (self.left_pad, 0)))


class DilatedInception(nn.Module):
    """Parallel causal convs of several kernel sizes, concatenated on channels.

    When `out_channels` is smaller than the number of kernel sizes, only the first `out_channels` sizes get a
    branch (one channel each).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_set: Sequence[int], dilation: int) -> None:
        super().__init__()
        widths = split_channels(out_channels, len(kernel_set))
        self.branches = nn.ModuleList(
            [CausalConv(in_channels, n, k, dilation) for k, n in zip(kernel_set, widths, strict=True) if n > 0]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


@register("temporal_gate")
class TemporalGate(AttentionBlock):
    """Gated temporal convolution of MTGNN on (B, C, N, T) inputs, for any sequence length.

    Args:
        channels: Channels C of the input.
        out_channels: Channels of the output; defaults to `channels`.
        kernel_set: Kernel sizes along time of the inception branches ((2, 3, 6, 7) in the paper).
        dilation: Dilation along time of every branch.

    Raises:
        BlockConfigError: a kernel size, the dilation or `out_channels` is not a positive whole number.
    """

    def __init__(
        self,
        channels: int,
        out_channels: int | None = None,
        *,
        kernel_set: Sequence[int] = (2, 3, 6, 7),
        dilation: int = 1,
    ) -> None:
        super().__init__()
        out = channels if out_channels is None else out_channels
        if out < 1:
            raise BlockConfigError(f"temporal gate needs at least one output channel, got {out_channels}")
        if not kernel_set or any(k < 1 for k in kernel_set):
            raise BlockConfigError(f"temporal gate needs positive kernel sizes, got kernel_set={kernel_set}")
        if dilation < 1:
            raise BlockConfigError(f"temporal gate needs a positive dilation, got {dilation}")
        self.out_channels = out
        self.filter = DilatedInception(channels, out, kernel_set, dilation)
        self.gate = DilatedInception(channels, out, kernel_set, dilation)
        self.tap = Tap("gate", ("batch", "channel", "node", "time"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.tap(torch.sigmoid(self.gate(x)))
        return torch.tanh(self.filter(x)) * gate

    @classmethod
    def example_inputs(cls, batch: int, channels: int, height: int, width: int, *, seed: int = 0) -> tuple[Any, ...]:
        """One (B, C, N, T) series tensor: `height` nodes, `width` time steps."""
        return (example_feature_map(batch, channels, height, width, seed=seed),)
