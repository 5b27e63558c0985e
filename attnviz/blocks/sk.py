"""Selective Kernel: branches with different receptive fields, mixed per channel by a softmax over branches.

Li, Wang, Hu, Yang. "Selective Kernel Networks", CVPR 2019 (arXiv:1903.06586).

Split:   U_k = ReLU(BN(conv_k(x)))                 grouped 3x3 conv, dilation (k - 1) / 2, so 5x5 = dilated 3x3
Fuse:    U = sum_k U_k,  s = avgpool(U),  z = ReLU(Norm(W s))       W: C -> d, d = max(C / r, L)
Select:  a_k = softmax_k(A_k z)  (per channel),    V = sum_k a_k * U_k   A_k: d -> C
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from attnviz.blocks.base import AttentionBlock, ConvNormAct, Tap, divisor_at_most, hidden_channels, register
from attnviz.errors import BlockConfigError


def branch_dilations(kernels: Sequence[int]) -> list[int]:
    """Dilation of the 3x3 conv that gives each branch its receptive field (3 -> 1, 5 -> 2, 7 -> 3...).

    Raises:
        BlockConfigError: fewer than two kernels, or a kernel that is not an odd int >= 3.
    """
    kernels = list(kernels)
    if len(kernels) < 2:
        raise BlockConfigError(f"SK selects between branches, so it needs at least two kernels, got {kernels}")
    for k in kernels:
        if isinstance(k, bool) or not isinstance(k, int) or k < 3 or k % 2 == 0:
            raise BlockConfigError(f"SK's kernels must be odd ints >= 3, got {kernels}")
    return [(k - 1) // 2 for k in kernels]


@register("sk")
class SelectiveKernel(AttentionBlock):
    """Selective Kernel unit (split, fuse, select); the output replaces the input, no residual is added.

    The paper normalises z with BatchNorm over the batch of pooled vectors; that fails in training with a
    batch of one (one value per channel), so this block uses LayerNorm over the d features of each sample,
    which works for any batch size and behaves the same in train and eval.

    Args:
        channels: Channels of the input (and output) feature map.
        kernels: Receptive field of each branch; each is a 3x3 conv dilated by (k - 1) / 2.
        reduction: Ratio r of the fuse layer, d = max(C // r, min_dim).
        groups: Preferred group count of the branch convs (the paper's 32), lowered to a divisor of C.
        min_dim: Smallest width L of the fuse layer (the paper's 32).
    """

    def __init__(
        self,
        channels: int,
        kernels: Sequence[int] = (3, 5),
        reduction: int = 16,
        *,
        groups: int = 32,
        min_dim: int = 32,
    ) -> None:
        super().__init__()
        kernels = list(kernels)
        dilations = branch_dilations(kernels)
        if groups < 1:
            raise BlockConfigError(f"SK's groups must be at least 1, got {groups}")
        conv_groups = divisor_at_most(channels, groups)
        fuse_dim = hidden_channels(channels, reduction, min_dim)
        self.channels = channels
        self.branches = nn.ModuleList(
            ConvNormAct(channels, channels, 3, dilation=d, groups=conv_groups) for d in dilations
        )
        self.fuse = nn.Linear(channels, fuse_dim, bias=False)
        self.fuse_norm = nn.LayerNorm(fuse_dim)
        self.act = nn.ReLU(inplace=True)
        self.select = nn.Linear(fuse_dim, channels * len(dilations), bias=False)
        names = tuple(f"{k}x{k}" + (" (dilated 3x3)" if d > 1 else "") for k, d in zip(kernels, dilations, strict=True))
        self.tap = Tap("selection", ("batch", "branch", "channel"), norm="softmax", over=("branch",), branches=names)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = torch.stack([branch(x) for branch in self.branches], dim=1)  # (B, K, C, H, W)
        weights = self.tap(self.selection_weights(branches.sum(dim=1)))  # (B, K, C)
        return (branches * weights[:, :, :, None, None]).sum(dim=1)

    def selection_weights(self, fused: torch.Tensor) -> torch.Tensor:
        """Softmax over branches of the per-branch logits A_k z, from the fused map U (B, C, H, W)."""
        squeezed = fused.mean(dim=(2, 3))
        compact = self.act(self.fuse_norm(self.fuse(squeezed)))
        logits = self.select(compact).view(fused.shape[0], -1, self.channels)
        return logits.softmax(dim=1)
