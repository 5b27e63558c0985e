"""FPN: a top-down pathway with lateral connections turning backbone stages C3-C5 into pyramid levels P3-P7.

Lin, Dollar, Girshick, He, Hariharan, Belongie. "Feature Pyramid Networks for Object Detection", CVPR 2017
(arXiv:1612.03144); P6/P7 as in Lin et al. "Focal Loss for Dense Object Detection" (RetinaNet), ICCV 2017
(arXiv:1708.02002).

M5 = lateral_5(C5)                     M_i = lateral_i(C_i) + nearest_upsample(M_{i+1}, size of C_i)   (i = 4, 3)
P_i = smooth_i(M_i)                    lateral: 1x1 conv C_i -> D, smooth: 3x3 conv D -> D
P6 = conv_3x3/2(C5)                    P7 = conv_3x3/2(relu(P6))
The block has no attention of its own (no taps); the detector puts ASFF or attention blocks on its outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from attnviz.blocks.base import AttentionBlock, example_feature_map, register
from attnviz.errors import BlockConfigError


@register("fpn")
class FPN(AttentionBlock):
    """Feature pyramid network over three backbone stages, with RetinaNet's two extra coarse levels.

    Upsampling interpolates to the exact size of the finer lateral map, so odd sizes (e.g. 75 -> 38 -> 19) work.

    Args:
        channels: Channels D of every output level.
        in_channels: Channels of C3, C4 and C5; defaults to `channels` for all three.
        extra_levels: Also compute P6 and P7 (RetinaNet); otherwise return P3-P5 only.

    Raises:
        BlockConfigError: `in_channels` does not hold three positive channel counts.
    """

    def __init__(
        self, channels: int, in_channels: tuple[int, int, int] | None = None, *, extra_levels: bool = True
    ) -> None:
        super().__init__()
        inputs = tuple(in_channels) if in_channels is not None else (channels,) * 3
        if len(inputs) != 3 or min(inputs) < 1:
            raise BlockConfigError(f"FPN needs the positive channels of C3, C4 and C5, got in_channels={in_channels}")
        self.channels = channels
        self.in_channels = inputs
        self.lateral = nn.ModuleList([nn.Conv2d(c, channels, 1) for c in inputs])
        self.smooth = nn.ModuleList([nn.Conv2d(channels, channels, 3, padding=1) for _ in inputs])
        self.p6 = nn.Conv2d(inputs[2], channels, 3, stride=2, padding=1) if extra_levels else None
        self.p7 = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if extra_levels else None

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(features) != 3:
            raise BlockConfigError(f"FPN expects the three maps C3, C4, C5, got {len(features)}")
        merged = [lateral(c) for lateral, c in zip(self.lateral, features, strict=True)]
        for i in (1, 0):
            merged[i] = merged[i] + F.interpolate(merged[i + 1], size=merged[i].shape[-2:], mode="nearest")
        pyramid = [smooth(m) for smooth, m in zip(self.smooth, merged, strict=True)]
        if self.p6 is not None and self.p7 is not None:
            p6 = self.p6(features[2])
            pyramid += [p6, self.p7(F.relu(p6))]
        return pyramid

    @classmethod
    def example_inputs(cls, batch: int, channels: int, height: int, width: int, *, seed: int = 0) -> tuple[Any, ...]:
        """C3, C4, C5 with `channels` channels each: (height, width), then each side halved twice, rounding up."""
        sizes = [(height, width), (-(-height // 2), -(-width // 2)), (-(-height // 4), -(-width // 4))]
        return ([example_feature_map(batch, channels, h, w, seed=seed + n) for n, (h, w) in enumerate(sizes)],)
