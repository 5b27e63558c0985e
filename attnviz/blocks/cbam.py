"""CBAM: channel attention (shared MLP over average- and max-pooled features), then spatial attention.

Woo, Park, Lee, Kweon. "CBAM: Convolutional Block Attention Module", ECCV 2018 (arXiv:1807.06521).

M_c = sigmoid(MLP(avgpool(x)) + MLP(maxpool(x)))            x' = M_c * x
M_s = sigmoid(conv_kxk([mean_c(x'); max_c(x')]))             y  = M_s * x'
"""

from __future__ import annotations

import torch
from torch import nn

from attnviz.blocks.base import AttentionBlock, Tap, hidden_channels, register
from attnviz.errors import BlockConfigError


class ChannelGate(nn.Module):
    """CBAM's channel half: one MLP shared by the average- and max-pooled descriptors."""

    def __init__(self, channels: int, reduction: int = 16, *, min_hidden: int = 8) -> None:
        super().__init__()
        hidden = hidden_channels(channels, reduction, min_hidden)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1))
        self.tap = Tap("channel", ("batch", "channel"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(x.mean(dim=(2, 3), keepdim=True))
        peak = self.mlp(x.amax(dim=(2, 3), keepdim=True))
        weights = self.tap(torch.sigmoid(avg + peak).flatten(1))
        return x * weights[:, :, None, None]


class SpatialGate(nn.Module):
    """CBAM's spatial half: a k x k conv over the channel-wise mean and max maps."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        if kernel_size not in (3, 7):
            raise BlockConfigError(f"CBAM's spatial kernel must be 3 or 7, got {kernel_size}")
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.tap = Tap("spatial", ("batch", "height", "width"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        weights = self.tap(torch.sigmoid(self.conv(pooled)).squeeze(1))
        return x * weights[:, None]


@register("cbam")
class CBAM(AttentionBlock):
    """Convolutional Block Attention Module: channel gate, then spatial gate (the paper's order).

    Args:
        channels: Channels of the input feature map.
        reduction: Bottleneck ratio of the shared channel MLP.
        kernel_size: Size of the spatial conv, 3 or 7.
        min_hidden: Smallest bottleneck width of the channel MLP.
    """

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7, *, min_hidden: int = 8) -> None:
        super().__init__()
        self.channel = ChannelGate(channels, reduction, min_hidden=min_hidden)
        self.spatial = SpatialGate(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))
