"""GAM: a per-position channel gate from an MLP over channels, then a 3-D gate from two 7x7 convs.

Liu, Shao, Hoffmann. "Global Attention Mechanism: Retain Information to Enhance Channel-Spatial Interactions",
arXiv 2021 (arXiv:2112.05561).

M_c = sigmoid(permute^-1(W2 relu(W1 permute(x))))      permute: (B,C,H,W) -> (B,H,W,C); W1: C -> C/r, W2: C/r -> C
x1  = x * M_c
M_s = sigmoid(BN(conv_7x7(relu(BN(conv_7x7(x1))))))      convs: C -> C/r -> C
y   = x1 * M_s
Unlike SE/CBAM, neither gate pools anything away: both are full C x H x W tensors.
"""

from __future__ import annotations

import torch
from torch import nn

from attnviz.blocks.base import AttentionBlock, ConvNormAct, Tap, hidden_channels, register
from attnviz.errors import BlockConfigError


class ChannelSubmodule(nn.Module):
    """GAM's channel half: the same two-layer MLP applied to the channel vector of every pixel."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))
        self.tap = Tap("channel", ("batch", "channel", "height", "width"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.mlp(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return x * self.tap(torch.sigmoid(logits))


class SpatialSubmodule(nn.Module):
    """GAM's spatial half: conv-BN-ReLU squeezing to C/r, conv-BN back to C, sigmoid."""

    def __init__(self, channels: int, hidden: int, kernel_size: int) -> None:
        super().__init__()
        self.squeeze = ConvNormAct(channels, hidden, kernel_size)
        self.expand = ConvNormAct(hidden, channels, kernel_size, act=None)
        self.tap = Tap("spatial", ("batch", "channel", "height", "width"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.tap(torch.sigmoid(self.expand(self.squeeze(x))))


@register("gam")
class GAM(AttentionBlock):
    """Global Attention Mechanism: channel submodule, then spatial submodule (the paper's order).

    The paper swaps the spatial convs for group convs plus a channel shuffle to save parameters in ResNet-50;
    this block keeps the plain convs (the variant the paper describes first). The convs have no bias, as a
    BN follows each one.

    Args:
        channels: Channels of the input feature map.
        reduction: Ratio r of both bottlenecks (4 in the paper).
        kernel_size: Odd size of the two spatial convs (7 in the paper).
        min_hidden: Smallest bottleneck width, so small C still has usable layers.

    Raises:
        BlockConfigError: `kernel_size` is not a positive odd number.
    """

    def __init__(self, channels: int, reduction: int = 4, *, kernel_size: int = 7, min_hidden: int = 8) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise BlockConfigError(f"GAM needs a positive odd spatial kernel size, got {kernel_size}")
        hidden = hidden_channels(channels, reduction, min_hidden)
        self.channel = ChannelSubmodule(channels, hidden)
        self.spatial = SpatialSubmodule(channels, hidden, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))
