"""scSE: a channel squeeze-and-excitation gate and a spatial one, computed side by side and combined.

Roy, Navab, Wachinger. "Concurrent Spatial and Channel 'Squeeze & Excitation' in Fully Convolutional Networks",
MICCAI 2018 (arXiv:1803.02579). The max-out combination is from their follow-up "Recalibrating Fully
Convolutional Networks with Spatial and Channel 'Squeeze & Excitation' Blocks", IEEE TMI 2019 (arXiv:1808.08127).

cSE: c = sigmoid(W2 relu(W1 avgpool(x)))          W1: C -> C/r, W2: C/r -> C   (one weight per channel)
sSE: s = sigmoid(conv_1x1(x))                      conv: C -> 1                 (one weight per pixel)
add: y = x * c + x * s        max: y = max(x * c, x * s)
"""

from __future__ import annotations

import torch
from torch import nn

from attnviz.blocks.base import AttentionBlock, Tap, register
from attnviz.blocks.se import ChannelExcitation
from attnviz.errors import BlockConfigError

COMBINATIONS = ("add", "max")


class SpatialSqueezeExcitation(nn.Module):
    """sSE: squeeze channels with a 1x1 conv to one map, excite every pixel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, kernel_size=1)
        self.tap = Tap("spatial", ("batch", "height", "width"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.tap(torch.sigmoid(self.conv(x)).squeeze(1))
        return x * weights[:, None]


@register("scse")
class SCSE(AttentionBlock):
    """Concurrent spatial and channel squeeze & excitation.

    Both gates see the same input; the channel gate fires first, then the spatial one.

    Args:
        channels: Channels of the input feature map.
        reduction: Bottleneck ratio r of the cSE MLP.
        min_hidden: Smallest bottleneck width, so small C still has a usable MLP.
        combine: "add" (x*c + x*s, the MICCAI 2018 paper) or "max" (element-wise max-out, the TMI 2019 paper).

    Raises:
        BlockConfigError: `combine` is not one of "add", "max".
    """

    def __init__(self, channels: int, reduction: int = 16, *, min_hidden: int = 8, combine: str = "add") -> None:
        super().__init__()
        if combine not in COMBINATIONS:
            raise BlockConfigError(f"scSE combines its two gates by one of {COMBINATIONS}, got {combine!r}")
        self.combine = combine
        self.channel = ChannelExcitation(channels, reduction, min_hidden=min_hidden)
        self.spatial = SpatialSqueezeExcitation(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        by_channel = self.channel(x)
        by_pixel = self.spatial(x)
        if self.combine == "max":
            return torch.maximum(by_channel, by_pixel)
        return by_channel + by_pixel
