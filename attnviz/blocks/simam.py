"""SimAM: a parameter-free 3-D gate from the closed-form minimal energy of each neuron.

Yang, Zhang, Li, Xie. "SimAM: A Simple, Parameter-Free Attention Module for Convolutional Neural Networks",
ICML 2021.

For every channel, over its H x W map:
n = H * W - 1 (at least 1)        mu = mean_hw(x)        d = (x - mu)^2        v = sum_hw(d) / n
1 / e = d / (4 (v + lambda)) + 0.5        y = x * sigmoid(1 / e)
A neuron that stands out from the rest of its channel has low energy e, hence a large gate.
"""

from __future__ import annotations

import torch

from attnviz.blocks.base import AttentionBlock, Tap, register
from attnviz.errors import BlockConfigError


def simam_gate(x: torch.Tensor, e_lambda: float) -> torch.Tensor:
    """sigmoid of the inverse minimal energy of every neuron of a (B, C, H, W) map."""
    neighbours = max(x.shape[2] * x.shape[3] - 1, 1)  # a 1 x 1 map has no other neuron; avoid 0 / 0
    deviation = (x - x.mean(dim=(2, 3), keepdim=True)).pow(2)
    variance = deviation.sum(dim=(2, 3), keepdim=True) / neighbours
    return torch.sigmoid(deviation / (4 * (variance + e_lambda)) + 0.5)


@register("simam")
class SimAM(AttentionBlock):
    """SimAM: weights every neuron by how distinct it is from the others in its channel; no parameters.

    A constant channel (or a 1 x 1 map) gives the uniform gate sigmoid(0.5).

    Args:
        channels: Channels of the input feature map (the block has no weights; kept for the API).
        e_lambda: Regulariser lambda of the energy function; must be positive, so constant maps stay finite.

    Raises:
        BlockConfigError: `e_lambda` is not positive.
    """

    def __init__(self, channels: int, *, e_lambda: float = 1e-4) -> None:
        super().__init__()
        if not e_lambda > 0:
            raise BlockConfigError(f"SimAM's lambda must be positive, got {e_lambda}")
        self.e_lambda = e_lambda
        self.tap = Tap("spatial", ("batch", "channel", "height", "width"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.tap(simam_gate(x, self.e_lambda))

    def extra_repr(self) -> str:
        return f"e_lambda={self.e_lambda}"
