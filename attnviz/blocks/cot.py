"""CoT (Contextual Transformer): keys mined by a k x k conv guide a spatial attention over the values.

Li, Yao, Pan, Mei. "Contextual Transformer Networks for Visual Recognition", TPAMI 2022 (arXiv:2107.12292).

k1 = relu(BN(groupconv_kxk(x)))                          static context of the keys
v  = BN(conv_1x1(x))                                     values
a  = mean over the k*k taps of conv_1x1(relu(BN(conv_1x1([k1; x]))))   (B, C, k*k, H, W) -> (B, C, H, W)
A  = softmax of a over the H*W positions, per channel     (B, C, H, W)
y  = k1 + A * v                                          static plus dynamic context
This follows the widely used compact form of the block (one weight per channel and position, averaged over the
k*k local taps), not the paper's full local k x k aggregation.
"""

from __future__ import annotations

import torch
from torch import nn

from attnviz.blocks.base import AttentionBlock, ConvNormAct, Tap, divisor_at_most, hidden_channels, register
from attnviz.errors import BlockConfigError


@register("cot")
class ContextualTransformer(AttentionBlock):
    """Contextual Transformer block (compact form) on a (B, C, H, W) map; output shape = input shape.

    Args:
        channels: Channels of the input feature map.
        kernel_size: Odd size k of the key conv and of the k*k attention taps.
        groups: Groups of the key conv wanted; reduced to the largest divisor of `channels` at most this.
        factor: Reduction of the attention embedding's hidden width, 2C / factor (at least 1 channel).

    The last attention conv has no bias: a constant per channel and tap survives the mean over taps as a constant
    per channel, which the softmax over positions cancels.

    Raises:
        BlockConfigError: `kernel_size` is not a positive odd int, or `groups`/`factor` is not positive.
    """

    def __init__(self, channels: int, kernel_size: int = 3, *, groups: int = 4, factor: int = 4) -> None:
        super().__init__()
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise BlockConfigError(f"CoT's kernel_size must be a positive odd int, got {kernel_size!r}")
        if groups < 1:
            raise BlockConfigError(f"CoT's groups must be at least 1, got {groups}")
        self.taps = kernel_size * kernel_size
        hidden = hidden_channels(2 * channels, factor, minimum=1)
        self.key_embed = ConvNormAct(channels, channels, kernel_size, groups=divisor_at_most(channels, groups))
        self.value_embed = ConvNormAct(channels, channels, 1, act=None)
        self.attention_embed = nn.Sequential(
            ConvNormAct(2 * channels, hidden, 1),
            nn.Conv2d(hidden, channels * self.taps, 1, bias=False),
        )
        self.tap = Tap("spatial", ("batch", "channel", "height", "width"), norm="softmax", over=("height", "width"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        static_context = self.key_embed(x)
        values = self.value_embed(x)
        logits = self.attention_embed(torch.cat([static_context, x], dim=1))
        logits = logits.reshape(batch, channels, self.taps, height, width).mean(dim=2)
        attention = logits.flatten(2).softmax(dim=-1).reshape(batch, channels, height, width)
        attention = self.tap(attention)
        return static_context + attention * values
