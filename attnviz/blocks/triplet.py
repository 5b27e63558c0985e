"""Triplet attention: three spatial gates, each over a different pair of the (C, H, W) axes, averaged.

Misra, Nalamada, Arasanipalai, Hou. "Rotate to Attend: Convolutional Triplet Attention Module", WACV 2021
(arXiv:2010.03045).

Z-pool over an axis:      Z(t) = [max over the axis (t); mean over the axis (t)]        (2 maps)
Gate over the other two:  G(t) = sigmoid(BN(conv_kxk(Z(t))))                            (conv 2 -> 1, no bias)
Branch cw: rotate so H is the pooled axis, gate over (C, W), multiply, rotate back.
Branch hc: rotate so W is the pooled axis, gate over (H, C), multiply, rotate back.
Branch hw: pool over C, gate over (H, W), multiply.
y = (y_cw + y_hc + y_hw) / 3                (or (y_cw + y_hc) / 2 with no_spatial=True)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attnviz.blocks.base import AttentionBlock, Tap, register
from attnviz.errors import BlockConfigError


def zpool(x: torch.Tensor) -> torch.Tensor:
    """Max and mean over dim 1, stacked as two channels: (B, D, P, Q) -> (B, 2, P, Q)."""
    return torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)


class AttentionGate(nn.Module):
    """One triplet branch on a tensor whose dim 1 is the pooled axis: Z-pool, k x k conv + BN, sigmoid.

    The BN follows the reference implementation (eps 1e-5, momentum 0.01). In training mode a batch holding a
    single value per map (batch 1, 1 x 1 map) has no batch statistics, so it is normalised with the running ones.

    Args:
        kernel_size: Odd size of the conv over the two gated axes.
        axes: Axis names of the gate map after the branch's rotation, batch first.
        label: Name of the branch's tap ("cw", "hc" or "hw").
    """

    def __init__(self, kernel_size: int, axes: tuple[str, ...], label: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.norm = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)
        self.tap = Tap("spatial", axes, label=label)

    def _normalise(self, z: torch.Tensor) -> torch.Tensor:
        if self.training and z.numel() == 1:
            n = self.norm
            return F.batch_norm(z, n.running_mean, n.running_var, n.weight, n.bias, training=False, eps=n.eps)
        return self.norm(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.tap(torch.sigmoid(self._normalise(self.conv(zpool(x)))).squeeze(1))
        return x * weights[:, None]


@register("triplet")
class TripletAttention(AttentionBlock):
    """Triplet attention: cross-dimension gates from three rotations of the input.

    Taps fire in the order cw (axes batch, channel, width), hc (batch, height, channel), hw (batch, height, width).

    Args:
        channels: Channels of the input feature map (the block has no per-channel weights; kept for the API).
        kernel_size: Odd size of each branch's conv (7 in the paper).
        no_spatial: Drop the hw branch and average the other two, as the reference code allows. Then only two
            taps fire, which departs from the catalog's three, so keep the default for capture and tests.

    Raises:
        BlockConfigError: `kernel_size` is not a positive odd number.
    """

    def __init__(self, channels: int, kernel_size: int = 7, *, no_spatial: bool = False) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise BlockConfigError(f"triplet attention needs a positive odd kernel size, got {kernel_size}")
        self.cw = AttentionGate(kernel_size, ("batch", "channel", "width"), "cw")
        self.hc = AttentionGate(kernel_size, ("batch", "height", "channel"), "hc")
        self.hw = None if no_spatial else AttentionGate(kernel_size, ("batch", "height", "width"), "hw")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) -> (B, H, C, W): H is pooled, the gate spans (C, W); the same permutation undoes it.
        out_cw = self.cw(x.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)
        # (B, C, H, W) -> (B, W, H, C): W is pooled, the gate spans (H, C).
        out_hc = self.hc(x.permute(0, 3, 2, 1)).permute(0, 3, 2, 1)
        if self.hw is None:
            return (out_cw + out_hc) / 2
        return (out_cw + out_hc + self.hw(x)) / 3
