"""ECA: a per-channel gate from a 1-D convolution across the globally pooled channel descriptor.

Wang, Wu, Zhu, Li, Zuo, Hu. "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks",
CVPR 2020 (arXiv:1910.03151).

s = avgpool(x) in R^C,  w = sigmoid(conv1d_k(s)),  y = x * w
The conv has one input and one output channel, no bias and zero padding (k - 1) / 2, so each channel's weight
depends on its k nearest channels. Adaptive k: the odd number nearest above |log2(C) + b| / gamma.
"""

from __future__ import annotations

import torch
from torch import nn

from attnviz.blocks.base import AttentionBlock, Tap, odd_kernel_for_channels, register
from attnviz.errors import BlockConfigError


def eca_kernel_size(channels: int, kernel_size: int | None, gamma: float, b: float) -> int:
    """The kernel ECA uses: `kernel_size` when given (a positive odd int), else the adaptive one.

    Raises:
        BlockConfigError: `kernel_size` is not a positive odd int, or `gamma` is not positive.
    """
    if kernel_size is None:
        if gamma <= 0:
            raise BlockConfigError(f"ECA's gamma must be positive, got {gamma}")
        return odd_kernel_for_channels(channels, gamma, b)
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise BlockConfigError(
            f"ECA's kernel_size must be a positive odd int (or None for adaptive), got {kernel_size!r}"
        )
    return kernel_size


class EcaGate(nn.Module):
    """ECA's channel gate on its own: pool, 1-D conv across channels, sigmoid, multiply.

    Reusable inside other blocks (e.g. ECA followed by self-attention); it owns its `Tap`.

    Args:
        channels: Channels of the input feature map.
        kernel_size: Odd size of the 1-D conv across channels; None picks it from `channels`, `gamma` and `b`.
        gamma: Divisor of the adaptive kernel rule.
        b: Offset of the adaptive kernel rule.
    """

    def __init__(self, channels: int, kernel_size: int | None = None, *, gamma: float = 2.0, b: float = 1.0) -> None:
        super().__init__()
        k = eca_kernel_size(channels, kernel_size, gamma, b)
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)
        self.tap = Tap("channel", ("batch", "channel"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3))
        weights = self.tap(torch.sigmoid(self.conv(pooled[:, None, :])).squeeze(1))
        return x * weights[:, :, None, None]


@register("eca")
class ECA(AttentionBlock):
    """Efficient Channel Attention block.

    Args:
        channels: Channels of the input feature map.
        kernel_size: Odd size of the 1-D conv across channels; None (default) adapts it to `channels`
            (C = 64 -> 3, C = 256 or 512 -> 5 with the paper's gamma = 2, b = 1).
        gamma: Divisor of the adaptive kernel rule.
        b: Offset of the adaptive kernel rule.
    """

    def __init__(self, channels: int, kernel_size: int | None = None, *, gamma: float = 2.0, b: float = 1.0) -> None:
        super().__init__()
        self.gate = EcaGate(channels, kernel_size, gamma=gamma, b=b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(x)
