"""Criss-cross attention: each pixel attends to the pixels of its own column and its own row.

Huang, Wang, Huang, Huang, Wei, Liu. "CCNet: Criss-Cross Attention for Semantic Segmentation", ICCV 2019
(arXiv:1811.11721).

Q, K = 1x1 convs C -> C/r (at least 1 channel), V = 1x1 conv C -> C. For the pixel u = (i, j):
    column energies  e_col[u, h] = Q_u . K_(h, j)   for h = 1..H, with h = i dropped (the pixel is in its row too)
    row energies     e_row[u, w] = Q_u . K_(i, w)   for w = 1..W
    A_u = softmax([e_col[u, :]; e_row[u, :]])       (H + W weights: the column part first, then the row part)
    y_u = gamma * (sum_h A_u[h] V_(h, j) + sum_w A_u[H + w] V_(i, w)) + x_u,   gamma = 0 at initialisation
The self entry of the column part is filled with the dtype's most negative finite value, so its weight is exactly
0 and u is counted once (through the row part). The paper stacks R = 2 passes to reach every pixel; this block
is one pass (R = 1) with one tap; stack two blocks for R = 2. Energies are computed per row and per column
(einsum), never as a dense N x N matrix.
"""

from __future__ import annotations

import torch
from torch import nn

from attnviz.blocks.base import AttentionBlock, Tap, hidden_channels, register


@register("criss_cross")
class CrissCrossAttention(AttentionBlock):
    """One pass of CCNet's criss-cross attention, with a learnable residual gain.

    Args:
        channels: Channels of the input feature map.
        reduction: Ratio C / C' of the query and key width (at least 1 channel).

    The output is gamma * aggregate + x with gamma a learnable scalar that starts at 0 (as in the paper), so the
    block starts as the identity. The key projection has no bias: it would add the same query . bias to every
    energy of a pixel, which the softmax cancels.
    """

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        hidden = hidden_channels(channels, reduction, minimum=1)
        self.query = nn.Conv2d(channels, hidden, 1)
        self.key = nn.Conv2d(channels, hidden, 1, bias=False)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.tap = Tap("matrix", ("batch", "height", "width", "key"), norm="softmax", over=("key",), tokens="row_col")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height = x.shape[2]
        attention = self.tap(self.criss_cross_weights(self.query(x), self.key(x)))
        column_weights, row_weights = attention.split([height, attention.shape[-1] - height], dim=-1)
        values = self.value(x)
        from_column = torch.einsum("bhwg,bcgw->bchw", column_weights, values)
        from_row = torch.einsum("bhwv,bchv->bchw", row_weights, values)
        return self.gamma * (from_column + from_row) + x

    @staticmethod
    def criss_cross_weights(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """Softmax weights (B, H, W, H + W) of every pixel over its column (first H) and its row (last W)."""
        height = queries.shape[2]
        column = torch.einsum("bchw,bcgw->bhwg", queries, keys)  # (B, H, W, H): key row g of the same column
        row = torch.einsum("bchw,bchv->bhwv", queries, keys)  # (B, H, W, W): key column v of the same row
        is_self = torch.eye(height, dtype=torch.bool, device=queries.device)[:, None, :]  # (H, 1, H): g == h
        column = column.masked_fill(is_self, torch.finfo(column.dtype).min)
        return torch.cat([column, row], dim=-1).softmax(dim=-1)
