"""ECA followed by multi-head self-attention: a channel gate, then attention between the H*W positions.

Wang, Wu, Zhu, Li, Zuo, Hu. "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks",
CVPR 2020 (arXiv:1910.03151), combined with Vaswani et al. "Attention Is All You Need", NeurIPS 2017
(arXiv:1706.03762). The combination itself comes from a blog post ("improve ECA with multi-head attention").

g = x * sigmoid(conv1d_k(avgpool(x)))                     (ECA channel gate, adaptive k)
A_h = softmax_key(Q_h K_h^T / sqrt(d)), Q, K, V = 1x1 convs of g, tokens = the H*W positions of g
y = g + proj(concat_h(A_h V_h))                           (residual around the attention, on the gated map)

What the blog's code got wrong, and what this block does instead:
- Its ECA step gave the (B, C) descriptor to a Conv1d as (B, C, 1), i.e. as C input channels of length 1, to a
  conv built for one input channel; ECA slides one 1-D kernel along the channel axis, as EcaGate does here, and
  its k adapts to C (the blog fixed k = 3 and never used gamma and b for it).
- It reshaped the map to (B, C, H*W) and fed it to linear layers built for C features, so the layers mixed
  spatial positions instead of channels (and only ran when H*W happened to equal C), and it never reshaped the
  result back to (B, C, H, W). Here q, k and v are linear over channels (1x1 convs) and the tokens are the H*W
  positions, which is what "attention over the map" means.
- It finished with `x * gamma + b`, using ECA's kernel-rule constants (gamma = 2, b = 1) as an output scale and
  shift, which doubles the features and adds 1. Here they only choose ECA's kernel size, and a residual around
  the attention keeps the output on the scale of the input.
"""

from __future__ import annotations

import torch

from attnviz.blocks.base import AttentionBlock, register
from attnviz.blocks.eca import EcaGate
from attnviz.blocks.mhsa import MultiHeadSelfAttention2d


@register("eca_mhsa")
class EcaMultiHeadSelfAttention(AttentionBlock):
    """ECA channel gate, then residual multi-head self-attention over the gated map's positions.

    Args:
        channels: Channels of the input feature map.
        heads: Attention heads wanted; reduced to a divisor of `channels` when it does not divide.
        kernel_size: Odd size of ECA's 1-D conv; None adapts it to `channels` with `gamma` and `b`.
        gamma: Divisor of ECA's adaptive kernel rule.
        b: Offset of ECA's adaptive kernel rule.
        qk_channels: Total query/key width over all heads; defaults to `channels`.
    """

    def __init__(
        self,
        channels: int,
        heads: int = 4,
        *,
        kernel_size: int | None = None,
        gamma: float = 2.0,
        b: float = 1.0,
        qk_channels: int | None = None,
    ) -> None:
        super().__init__()
        self.gate = EcaGate(channels, kernel_size, gamma=gamma, b=b)
        self.attention = MultiHeadSelfAttention2d(channels, heads, qk_channels=qk_channels, residual=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attention(self.gate(x))
