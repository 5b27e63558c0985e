"""Squeeze-and-Excitation: a per-channel gate from globally pooled features.

Hu, Shen, Albanie, Sun, Wu. "Squeeze-and-Excitation Networks", CVPR 2018 (arXiv:1709.01507).

s = sigmoid(W2 relu(W1 avgpool(x))), y = x * s, with W1: C -> C/r and W2: C/r -> C.
"""

from __future__ import annotations

import torch
from torch import nn

from attnviz.blocks.base import AttentionBlock, Tap, hidden_channels, register


class ChannelExcitation(nn.Module):
    """The SE gate itself (squeeze by average pooling, excite through a bottleneck MLP), also scSE's cSE half.

    Args:
        channels: Channels of the input feature map.
        reduction: Bottleneck ratio r of the excitation MLP.
        min_hidden: Smallest bottleneck width, so small C still has a usable MLP.
    """

    def __init__(self, channels: int, reduction: int = 16, *, min_hidden: int = 8) -> None:
        super().__init__()
        hidden = hidden_channels(channels, reduction, min_hidden)
        self.fc1 = nn.Linear(channels, hidden)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, channels)
        self.tap = Tap("channel", ("batch", "channel"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeezed = x.mean(dim=(2, 3))
        weights = self.tap(torch.sigmoid(self.fc2(self.act(self.fc1(squeezed)))))
        return x * weights[:, :, None, None]


@register("se")
class SqueezeExcitation(ChannelExcitation, AttentionBlock):
    """Squeeze-and-Excitation block: `ChannelExcitation` registered as a block (same arguments)."""
