"""SOCA: a per-channel gate from the square root of the channel covariance (second-order pooling).

Dai, Cai, Zhang, Xia, Zhang. "Second-order Attention Network for Single Image Super-Resolution", CVPR 2019.

X in R^{C x M} (M = H * W),  Sigma = X I_bar X^T,  I_bar = (1/M)(I - (1/M) 1 1^T)   (covariance over positions)
Newton-Schulz square root, N iterations:  n = tr(Sigma),  Y_0 = Sigma / n,  Z_0 = I,
    T_k = (3I - Z_{k-1} Y_{k-1}) / 2,  Y_k = Y_{k-1} T_k,  Z_k = T_k Z_{k-1};   Sigma^(1/2) ~ sqrt(n) Y_N
z_c = mean_j Sigma^(1/2)_{cj},   w = sigmoid(W_2 ReLU(W_1 z)),   y = x * w   (W_1: C -> C/r, W_2: C/r -> C)

The covariance and its square root are computed in float32 even under autocast. A small eps is added to the
trace, so constant, all-zero and 1x1 inputs (Sigma = 0) give z = 0 instead of NaN. Unlike the authors' code,
the covariance is taken over the whole map rather than a centre crop of at most 1000 x 1000.
"""

from __future__ import annotations

import torch
from torch import nn

from attnviz.blocks.base import AttentionBlock, Tap, hidden_channels, register
from attnviz.errors import BlockConfigError


def covariance_pool(x: torch.Tensor) -> torch.Tensor:
    """Channel covariance over spatial positions: (B, C, H, W) -> (B, C, C), i.e. X I_bar X^T."""
    flat = x.flatten(2)
    centred = flat - flat.mean(dim=2, keepdim=True)
    return centred @ centred.transpose(1, 2) / flat.shape[2]


def newton_schulz_sqrt(sigma: torch.Tensor, iterations: int = 5, eps: float = 1e-5) -> torch.Tensor:
    """Approximate square root of a batch of symmetric PSD matrices (B, C, C) by coupled Newton-Schulz.

    The matrix is first divided by its trace (+ eps), which puts its eigenvalues in [0, 1] where the
    iteration converges; the result is scaled back by sqrt(trace + eps). Accuracy grows with `iterations`
    and falls for small eigenvalues relative to the trace.
    """
    norm = sigma.diagonal(dim1=1, dim2=2).sum(dim=1)[:, None, None] + eps
    identity = torch.eye(sigma.shape[1], dtype=sigma.dtype, device=sigma.device).expand_as(sigma)
    y, z = sigma / norm, identity
    for step in range(iterations):
        t = 0.5 * (3.0 * identity - z @ y)
        y = y @ t
        if step < iterations - 1:  # the last Z is never read
            z = t @ z
    return y * norm.sqrt()


@register("soca")
class SecondOrderChannelAttention(AttentionBlock):
    """Second-order channel attention (SAN's SOCA); the output is the gated input, no residual.

    Args:
        channels: Channels of the input feature map.
        reduction: Bottleneck ratio r of the gate MLP.
        iterations: Newton-Schulz iterations for the covariance square root (the paper uses 5).
        min_hidden: Smallest bottleneck width, so small C still has a usable MLP.
        eps: Added to the covariance trace so a zero covariance does not divide by zero.
    """

    def __init__(
        self, channels: int, reduction: int = 16, *, iterations: int = 5, min_hidden: int = 8, eps: float = 1e-5
    ) -> None:
        super().__init__()
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise BlockConfigError(f"SOCA needs at least one Newton-Schulz iteration, got {iterations!r}")
        if eps <= 0:
            raise BlockConfigError(f"SOCA's eps must be positive, got {eps}")
        hidden = hidden_channels(channels, reduction, min_hidden)
        self.iterations = iterations
        self.eps = eps
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1))
        self.tap = Tap("channel", ("batch", "channel"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        descriptor = self.second_order_descriptor(x).to(x.dtype)
        weights = self.tap(torch.sigmoid(self.mlp(descriptor[:, :, None, None])).flatten(1))
        return x * weights[:, :, None, None]

    def second_order_descriptor(self, x: torch.Tensor) -> torch.Tensor:
        """Row means of the covariance square root, (B, C), computed in float32."""
        with torch.autocast(x.device.type, enabled=False):
            sigma = covariance_pool(x.float())
            root = newton_schulz_sqrt(sigma, self.iterations, self.eps)
        return root.mean(dim=2)
