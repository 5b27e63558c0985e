"""S2-MLPv2's spatial-shift attention: two spatially shifted copies and one plain copy, mixed by split attention.

Yu, Li, Li, Huang, Sun. "S2-MLPv2: Improved Spatial-Shift MLP Architecture for Vision", arXiv 2021
(arXiv:2108.01072).

[x_1 ; x_2 ; x_3] = W_in x                          (1x1 projection C -> 3C, split in three)
x_1 <- shift_1(x_1),  x_2 <- shift_2(x_2)           (each channel quarter moves one pixel in one direction)
a = sum_k x_k,  s = mean_HW(a),  [l_1; l_2; l_3] = W_b GELU(W_a s)      (W_a: C -> hidden, W_b: hidden -> 3C)
a_k = softmax_k(l_k)  (per channel),   y = W_out (sum_k a_k * x_k)      (W_out: 1x1 projection C -> C)

A shift by one pixel keeps the edge row/column it moves away from (as the paper's in-place slicing does),
so a map of height or width 1 is left as it is along that axis. This is the spatial-shift sub-layer of an
S2-MLPv2 block; the block's LayerNorm, residual and channel MLP are left to the network around it.
"""

from __future__ import annotations

import torch
from torch import nn

from attnviz.blocks.base import AttentionBlock, Tap, hidden_channels, register

SHIFT_1 = ((2, 1), (2, -1), (3, 1), (3, -1))
"""(dim, step) of each channel quarter for shift type 1: down, up, right, left."""
SHIFT_2 = ((3, 1), (3, -1), (2, 1), (2, -1))
"""Shift type 2 moves the same quarters along the other axis first: right, left, down, up."""


def shift_one_pixel(x: torch.Tensor, dim: int, step: int) -> torch.Tensor:
    """Move `x` by one position along `dim` (+1: towards higher indices), keeping the vacated edge's values."""
    size = x.shape[dim]
    if step > 0:
        return torch.cat([x.narrow(dim, 0, 1), x.narrow(dim, 0, size - 1)], dim=dim)
    return torch.cat([x.narrow(dim, 1, size - 1), x.narrow(dim, size - 1, 1)], dim=dim)


def spatial_shift(x: torch.Tensor, directions: tuple[tuple[int, int], ...]) -> torch.Tensor:
    """Split the channels of a (B, C, H, W) map in four near-equal quarters and shift each its own way."""
    quarters = torch.tensor_split(x, len(directions), dim=1)
    shifted = [shift_one_pixel(q, dim, step) for q, (dim, step) in zip(quarters, directions, strict=True)]
    return torch.cat(shifted, dim=1)


@register("s2mlp")
class SpatialShiftAttention(AttentionBlock):
    """S2-MLPv2 spatial-shift block with split attention over its three branches.

    Args:
        channels: Channels of the input (and output) feature map.
        reduction: Ratio of the split-attention MLP's hidden width to C (the paper keeps it at 1).
        min_hidden: Smallest hidden width of the split-attention MLP.
    """

    num_branches = 3

    def __init__(self, channels: int, reduction: float = 1, *, min_hidden: int = 8) -> None:
        super().__init__()
        hidden = hidden_channels(channels, reduction, min_hidden)
        self.channels = channels
        self.project_in = nn.Conv2d(channels, channels * self.num_branches, 1)
        self.attn_mlp = nn.Sequential(
            nn.Linear(channels, hidden, bias=False),
            nn.GELU(),
            nn.Linear(hidden, channels * self.num_branches, bias=False),
        )
        self.project_out = nn.Conv2d(channels, channels, 1)
        self.tap = Tap(
            "selection",
            ("batch", "branch", "channel"),
            norm="softmax",
            over=("branch",),
            branches=("shift 1", "shift 2", "no shift"),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, second, plain = self.project_in(x).chunk(self.num_branches, dim=1)
        branches = torch.stack([spatial_shift(first, SHIFT_1), spatial_shift(second, SHIFT_2), plain], dim=1)
        weights = self.tap(self.split_attention(branches))  # (B, K, C)
        mixed = (branches * weights[:, :, :, None, None]).sum(dim=1)
        return self.project_out(mixed)

    def split_attention(self, branches: torch.Tensor) -> torch.Tensor:
        """Softmax over branches of per-channel logits from the pooled sum of the branches (B, K, C, H, W)."""
        pooled = branches.sum(dim=1).mean(dim=(2, 3))
        logits = self.attn_mlp(pooled).view(branches.shape[0], self.num_branches, self.channels)
        return logits.softmax(dim=1)
