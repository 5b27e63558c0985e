"""ASFF: fuse the levels of a feature pyramid with per-pixel softmax weights learned for one target level.

Liu, Huang, Wang. "Learning Spatial Fusion for Single-Shot Object Detection", arXiv 2019 (arXiv:1911.09516).

For target level l and every level n, resize x^n to the size of x^l:
  coarser -> finer: 1x1 conv-BN-ReLU, nearest interpolation to the exact target size
  finer -> coarser: max-pool 3x3/2 for each extra factor of 2, then a 3x3/2 conv-BN-ReLU (then adaptive pooling to
                    the exact target size where odd sizes left it off by a pixel)
  same level:       identity
lambda = softmax over n of conv_1x1([c^1(x^1->l); ...; c^L(x^L->l)])       c^n: 1x1 conv-BN-ReLU, C -> compress
y^l = expand(sum_n lambda_n * x^{n->l})                                    expand: 3x3 conv-BN-ReLU, C -> C
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from attnviz.blocks.base import AttentionBlock, ConvNormAct, Tap, example_feature_map, register
from attnviz.errors import BlockConfigError


def fit_to_size(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """`x` resized to exactly `size`: adaptive average pooling to shrink, nearest interpolation otherwise."""
    if tuple(x.shape[-2:]) == size:
        return x
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="nearest")


class Upsample(nn.Module):
    """Coarser level to a finer target: 1x1 conv-BN-ReLU, then nearest interpolation to the target size."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = ConvNormAct(channels, channels, 1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(self.conv(x), size=size, mode="nearest")


class Downsample(nn.Module):
    """Finer level to a target `steps` levels coarser: (steps - 1) max-pools 3x3/2, one 3x3/2 conv-BN-ReLU."""

    def __init__(self, channels: int, steps: int) -> None:
        super().__init__()
        self.pools = nn.Sequential(*[nn.MaxPool2d(3, stride=2, padding=1) for _ in range(steps - 1)])
        self.conv = ConvNormAct(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return fit_to_size(self.conv(self.pools(x)), size)


class Identity(nn.Module):
    """The target level itself."""

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return x


def resizer(channels: int, source: int, target: int) -> nn.Module:
    """The module taking level `source` to the size of level `target` (levels ordered fine to coarse)."""
    if source == target:
        return Identity()
    if source > target:
        return Upsample(channels)
    return Downsample(channels, target - source)


@register("asff")
class ASFF(AttentionBlock):
    """Adaptively spatial feature fusion for one output level of a pyramid.

    Args:
        channels: Channels of every pyramid level (and of the output).
        level: Index of the output level in the input list, 0 being the finest.
        compress: Channels of each level's compressed map that the fusion weights are computed from.
        num_levels: Number of pyramid levels the forward pass receives.

    Raises:
        BlockConfigError: `num_levels` < 2, `level` outside [0, num_levels), or `compress` < 1.
    """

    def __init__(self, channels: int, level: int = 0, *, compress: int = 16, num_levels: int = 3) -> None:
        super().__init__()
        if num_levels < 2:
            raise BlockConfigError(f"ASFF fuses at least 2 levels, got num_levels={num_levels}")
        if not 0 <= level < num_levels:
            raise BlockConfigError(f"ASFF level must be in [0, {num_levels}), got {level}")
        if compress < 1:
            raise BlockConfigError(f"ASFF needs at least one compressed channel, got compress={compress}")
        self.channels = channels
        self.level = level
        self.num_levels = num_levels
        self.resize = nn.ModuleList([resizer(channels, n, level) for n in range(num_levels)])
        self.compress = nn.ModuleList([ConvNormAct(channels, compress, 1) for _ in range(num_levels)])
        self.weight_logits = nn.Conv2d(compress * num_levels, num_levels, 1)
        self.expand = ConvNormAct(channels, channels, 3)
        self.tap = Tap("level", ("batch", "level", "height", "width"), norm="softmax", over=("level",))

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(features) != self.num_levels:
            raise BlockConfigError(f"ASFF expects {self.num_levels} pyramid levels, got {len(features)}")
        size = (features[self.level].shape[-2], features[self.level].shape[-1])
        resized = [resize(x, size) for resize, x in zip(self.resize, features, strict=True)]
        compressed = torch.cat([squeeze(x) for squeeze, x in zip(self.compress, resized, strict=True)], dim=1)
        weights = self.tap(torch.softmax(self.weight_logits(compressed), dim=1))
        fused = (weights.unsqueeze(2) * torch.stack(resized, dim=1)).sum(dim=1)
        return self.expand(fused)

    @classmethod
    def example_inputs(cls, batch: int, channels: int, height: int, width: int, *, seed: int = 0) -> tuple[Any, ...]:
        """A three-level pyramid (P3, P4, P5): (height, width), then each side halved twice, rounding up."""
        sizes = [(height, width), (-(-height // 2), -(-width // 2)), (-(-height // 4), -(-width // 4))]
        return ([example_feature_map(batch, channels, h, w, seed=seed + n) for n, (h, w) in enumerate(sizes)],)
