"""NAM (channel branch): a gate from batch-normalised features weighted by the BN scale factors' share.

Liu, Shao, Zhang, Hoffmann. "NAM: Normalization-based Attention Module", NeurIPS 2021 workshop on ImageNet
(arXiv:2111.12419).

B = BN(x) = gamma * (x - mu) / sqrt(var + eps) + beta,     w_c = |gamma_c| / sum_j |gamma_j|
y = sigmoid(w_c * B_c) * x

The weights w are the block's learned BN scale factors, so they do not depend on the input: every image (and
every sample of a batch) gets the same channel weights, and with the default init (all gamma equal) they are
uniform, 1 / C. They are tapped as a (batch, channel) tensor, the same row repeated for each sample ("channel").
The gate the block applies, sigmoid(w_c * B_c), does depend on the input: it is tapped too, as a
(batch, channel, height, width) spatial map ("gate"), after the static weights.
"""

from __future__ import annotations

import torch
from torch import nn

from attnviz.blocks.base import AttentionBlock, Tap, register
from attnviz.errors import BlockConfigError


@register("nam")
class NormalizationAttention(AttentionBlock):
    """NAM's channel attention sub-module (the paper's spatial branch is not included).

    Args:
        channels: Channels of the input feature map.
        detach_weights: Stop the gradient through w, as the authors' code does (`weight.data`); by default
            the gradient flows through w as well as through BN, as the paper's equation implies.
        eps: Floor of sum |gamma|, so all-zero scale factors give w = 0 instead of NaN.
    """

    def __init__(self, channels: int, *, detach_weights: bool = False, eps: float = 1e-12) -> None:
        super().__init__()
        if eps <= 0:
            raise BlockConfigError(f"NAM's eps must be positive, got {eps}")
        self.norm = nn.BatchNorm2d(channels, affine=True)
        self.detach_weights = detach_weights
        self.eps = eps
        self.tap = Tap("channel", ("batch", "channel"), norm="sum_to_one", over=("channel",))
        self.gate_tap = Tap("spatial", ("batch", "channel", "height", "width"), label="gate")

    def channel_weights(self) -> torch.Tensor:
        """w_c = |gamma_c| / sum_j |gamma_j|, shape (C,)."""
        scale = self.norm.weight.abs()
        if self.detach_weights:
            scale = scale.detach()
        return scale / scale.sum().clamp_min(self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normalised = self.norm(x)
        weights = self.tap(self.channel_weights().expand(x.shape[0], -1))
        gate = self.gate_tap(torch.sigmoid(normalised * weights[:, :, None, None]))
        return gate * x
