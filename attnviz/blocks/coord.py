"""Coordinate Attention: one gate along the rows and one along the columns, from direction-wise pooling.

Hou, Zhou, Feng. "Coordinate Attention for Efficient Mobile Network Design", CVPR 2021 (arXiv:2103.02907).

z^h_c(i) = mean_j x_c(i, j)        z^w_c(j) = mean_i x_c(i, j)
f = h_swish(BN(W1 [z^h ; z^w]))    (one shared 1x1 conv C -> mip over the H + W positions)
[f^h ; f^w] = split(f)             g^h = sigmoid(W_h f^h),  g^w = sigmoid(W_w f^w)   (1x1 convs mip -> C)
y_c(i, j) = x_c(i, j) * g^h_c(i) * g^w_c(j)
"""

from __future__ import annotations

import torch
from torch import nn

from attnviz.blocks.base import AttentionBlock, ConvNormAct, Tap, hidden_channels, register


@register("coord")
class CoordinateAttention(AttentionBlock):
    """Coordinate Attention block (no residual: the output is the gated input, as in the paper).

    Args:
        channels: Channels of the input feature map.
        reduction: Ratio r of the shared bottleneck, mip = max(min_hidden, C // r).
        min_hidden: Smallest bottleneck width (the paper uses 8).
    """

    def __init__(self, channels: int, reduction: int = 32, *, min_hidden: int = 8) -> None:
        super().__init__()
        mip = hidden_channels(channels, reduction, min_hidden)
        self.encode = ConvNormAct(channels, mip, 1, act=nn.Hardswish)
        self.conv_h = nn.Conv2d(mip, channels, 1)
        self.conv_w = nn.Conv2d(mip, channels, 1)
        self.tap_h = Tap("coordinate", ("batch", "channel", "height"), label="h")
        self.tap_w = Tap("coordinate", ("batch", "channel", "width"), label="w")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pooled_h = x.mean(dim=3, keepdim=True)  # (B, C, H, 1)
        pooled_w = x.mean(dim=2, keepdim=True).transpose(2, 3)  # (B, C, W, 1)
        encoded = self.encode(torch.cat([pooled_h, pooled_w], dim=2))
        encoded_h, encoded_w = torch.split(encoded, [height, width], dim=2)
        gate_h = self.tap_h(torch.sigmoid(self.conv_h(encoded_h)).squeeze(3))  # (B, C, H)
        gate_w = self.tap_w(torch.sigmoid(self.conv_w(encoded_w)).squeeze(3))  # (B, C, W)
        return x * gate_h[:, :, :, None] * gate_w[:, :, None, :]
