"""DANet: a position attention module (pixel to pixel) and a channel attention module (channel to channel).

Fu, Liu, Tian, Li, Bao, Fang, Lu. "Dual Attention Network for Scene Segmentation", CVPR 2019 (arXiv:1809.02983).

Position module, over the N = H*W positions (row-major), with 1x1 convs B, Cq: C -> C/r and D: C -> C:
    S = softmax_key(B^T Cq)   (N x N; row i = query position i)      E_pos = alpha * (D S^T)
Channel module, on X = x reshaped to (C, N):
    A = softmax_key(X X^T)    (C x C; row i = query channel i)        E_chan = beta * (A X)
y = x + E_pos + E_chan, with alpha = beta = 0 at initialisation as in the paper.

The paper adds x inside each module (E = alpha * ... + x) and sums the two module outputs; that sum holds x
twice, so this block keeps a single copy: y equals the paper's sum minus x, is the identity at initialisation
and stays on the scale of its input.
"""

from __future__ import annotations

import torch
from torch import nn

from attnviz.blocks.base import AttentionBlock, Tap, hidden_channels, register


class PositionAttention(nn.Module):
    """DANet's position attention module, without its residual: alpha * (D S^T).

    The key projection has no bias: it would add the same query . bias to every score of a query, which the
    softmax cancels.
    """

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        hidden = hidden_channels(channels, reduction, minimum=1)
        self.query = nn.Conv2d(channels, hidden, 1)
        self.key = nn.Conv2d(channels, hidden, 1, bias=False)
        self.value = nn.Conv2d(channels, channels, 1)
        self.alpha = nn.Parameter(torch.zeros(1))
        self.tap = Tap(
            "matrix", ("batch", "head", "query", "key"), norm="softmax", over=("key",), tokens="grid", label="position"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        queries = self.query(x).flatten(2).transpose(1, 2)  # (B, N, C/r)
        keys = self.key(x).flatten(2)  # (B, C/r, N)
        attention = torch.softmax(queries @ keys, dim=-1)[:, None]  # (B, 1, N, N): one head
        attention = self.tap(attention, grid=(height, width))
        values = self.value(x).flatten(2)  # (B, C, N)
        out = values @ attention[:, 0].transpose(1, 2)
        return self.alpha * out.reshape(batch, channels, height, width)


class ChannelAttention(nn.Module):
    """DANet's channel attention module, without its residual: beta * (A X), A = softmax(X X^T).

    The paper's A is used. The official code instead takes softmax(max(X X^T) - X X^T), which equals
    softmax(-X X^T) because a softmax ignores a constant shift: it ranks the least similar channels highest,
    the reverse of the paper, and the subtraction is not needed for stability since torch's softmax already
    subtracts the row maximum.
    """

    def __init__(self) -> None:
        super().__init__()
        self.beta = nn.Parameter(torch.zeros(1))
        self.tap = Tap(
            "matrix",
            ("batch", "head", "query", "key"),
            norm="softmax",
            over=("key",),
            tokens="channel",
            label="channel",
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = x.flatten(2)  # (B, C, N)
        attention = torch.softmax(features @ features.transpose(1, 2), dim=-1)[:, None]  # (B, 1, C, C)
        attention = self.tap(attention)
        return self.beta * (attention[:, 0] @ features).reshape_as(x)


@register("danet")
class DualAttention(AttentionBlock):
    """Dual attention block: position attention and channel attention on the same input, summed.

    Args:
        channels: Channels of the input feature map.
        reduction: Ratio C / C' of the position module's query and key width (at least 1 channel).

    Both gains (alpha, beta) start at 0, so the block starts as the identity and learns how much attention to add.
    """

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        self.position = PositionAttention(channels, reduction)
        self.channel = ChannelAttention()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.position(x) + self.channel(x)
