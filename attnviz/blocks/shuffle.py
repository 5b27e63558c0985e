"""Shuffle attention (SA-Net): channel groups, each split into a channel-gated and a spatially gated half.

Zhang, Yang. "SA-Net: Shuffle Attention for Deep Convolutional Neural Networks", ICASSP 2021 (arXiv:2102.00240).

Split x into G groups along channels; split each group X_k into X_k1 and X_k2.
channel half:  X'_k1 = X_k1 * sigmoid(w1 * avgpool(X_k1) + b1)
spatial half:  X'_k2 = X_k2 * sigmoid(w2 * GN(X_k2) + b2)          (GN with one group per channel, no affine)
y = channel_shuffle([X'_11; X'_12; ...; X'_G1; X'_G2], 2)
w1, b1, w2, b2 hold one value per channel of a half and are shared by all groups.
"""

from __future__ import annotations

import torch
from torch import nn

from attnviz.blocks.base import AttentionBlock, Tap, register
from attnviz.errors import BlockConfigError


def shuffle_group_count(channels: int, limit: int) -> int:
    """The largest divisor of `channels` at most `limit` that leaves each group at least 2 channels (when C >= 2)."""
    candidates = [g for g in range(1, min(channels, limit) + 1) if channels % g == 0 and channels // g >= 2]
    return max(candidates, default=1)


def channel_shuffle_index(channels: int) -> torch.Tensor:
    """Index of a 2-group channel shuffle for any C: interleave the first ceil(C/2) channels with the rest.

    For even C this is the usual reshape (2, C/2) -> transpose -> flatten; for odd C the last output channel
    comes from the first half alone.
    """
    first = (channels + 1) // 2
    order = []
    for i in range(first):
        order.append(i)
        if first + i < channels:
            order.append(first + i)
    return torch.tensor(order, dtype=torch.long)


class ChannelStandardise(nn.Module):
    """Per-channel GroupNorm without affine, (x - mean) / sqrt(var + eps) over (H, W), written out.

    nn.GroupNorm refuses a map with one value per group (batch 1, one group, 1x1) even in eval mode; standardising
    a single value gives 0, which is what this returns.
    """

    def __init__(self, eps: float) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(x, dim=(2, 3), correction=0, keepdim=True)
        return (x - mean) * torch.rsqrt(var + self.eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


@register("shuffle")
class ShuffleAttention(AttentionBlock):
    """Shuffle attention with per-group channel and spatial gates and a final 2-group channel shuffle.

    Each group of m channels gives its first ceil(m/2) channels to the channel gate and the other floor(m/2) to
    the spatial gate. With C = 1 (the only case where a group holds one channel) both gates act on that channel,
    one after the other. Both taps are called once per forward over all groups: the channel tap holds
    (B, G * ceil(m/2)) and the spatial tap (B, G * floor(m/2), H, W) (G * 1 when C = 1), in group order.

    Args:
        channels: Channels of the input feature map.
        groups: Most groups G to split the channels into (64 in the paper); the block uses the largest divisor of
            C not above it that leaves every group at least two channels.
        eps: Epsilon of the per-channel GroupNorm, so constant maps stay finite.

    Raises:
        BlockConfigError: `groups` is not positive.
    """

    def __init__(self, channels: int, groups: int = 8, *, eps: float = 1e-5) -> None:
        super().__init__()
        if groups < 1:
            raise BlockConfigError(f"shuffle attention needs at least one group, got {groups}")
        self.groups = shuffle_group_count(channels, groups)
        per_group = channels // self.groups
        self.channel_half = (per_group + 1) // 2
        self.spatial_half = per_group // 2
        gated_spatially = self.spatial_half or self.channel_half  # C = 1: the spatial gate reuses the one channel
        self.cweight = nn.Parameter(torch.zeros(1, self.channel_half, 1, 1))
        self.cbias = nn.Parameter(torch.ones(1, self.channel_half, 1, 1))
        self.sweight = nn.Parameter(torch.zeros(1, gated_spatially, 1, 1))
        self.sbias = nn.Parameter(torch.ones(1, gated_spatially, 1, 1))
        self.norm = ChannelStandardise(eps)
        self.register_buffer("shuffle_index", channel_shuffle_index(channels), persistent=False)
        self.channel_tap = Tap("channel", ("batch", "channel"), label="channel")
        self.spatial_tap = Tap("spatial", ("batch", "channel", "height", "width"), label="spatial")

    def _channel_gate(self, part: torch.Tensor, batch: int) -> torch.Tensor:
        gate = torch.sigmoid(self.cweight * part.mean(dim=(2, 3), keepdim=True) + self.cbias)
        return self.channel_tap(gate.reshape(batch, -1)).reshape(gate.shape)

    def _spatial_gate(self, part: torch.Tensor, batch: int) -> torch.Tensor:
        gate = torch.sigmoid(self.sweight * self.norm(part) + self.sbias)
        return self.spatial_tap(gate.reshape(batch, -1, *gate.shape[2:])).reshape(gate.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        grouped = x.reshape(b * self.groups, c // self.groups, h, w)
        if self.spatial_half == 0:
            mixed = grouped * self._channel_gate(grouped, b) * self._spatial_gate(grouped, b)
        else:
            to_channel, to_spatial = grouped.split([self.channel_half, self.spatial_half], dim=1)
            by_channel = to_channel * self._channel_gate(to_channel, b)
            by_pixel = to_spatial * self._spatial_gate(to_spatial, b)
            mixed = torch.cat([by_channel, by_pixel], dim=1)
        return mixed.reshape(b, c, h, w).index_select(1, self.shuffle_index)

    def extra_repr(self) -> str:
        return f"groups={self.groups}, channel_half={self.channel_half}, spatial_half={self.spatial_half}"
