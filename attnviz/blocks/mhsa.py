"""Multi-head self-attention over the H*W positions of a feature map (scaled dot-product attention).

Vaswani, Shazeer, Parmar, Uszkoreit, Jones, Gomez, Kaiser, Polosukhin. "Attention Is All You Need",
NeurIPS 2017 (arXiv:1706.03762).

Tokens are the N = H*W positions (row-major); q, k, v are 1x1 convs (linear maps over channels).
Q_h, K_h, V_h = the h-th slice of q(x), k(x), v(x)         (N x d_qk, N x d_qk, N x d_v per head)
A_h = softmax_key(mask((Q_h K_h^T / sqrt(d_qk)) * weights))  (N x N per head)
out = proj(concat_h(A_h V_h)),   y = x + out   (the residual is the `residual` option, on by default)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from attnviz.blocks.base import AttentionBlock, Tap, divisor_at_most, register
from attnviz.errors import BlockConfigError


def scaled_dot_product_attention_map(
    q: torch.Tensor,
    k: torch.Tensor,
    mask: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention weights softmax(mask((q k^T / sqrt(d)) * weights)) over the key axis.

    Args:
        q: Queries, (..., N_query, d).
        k: Keys, (..., N_key, d).
        mask: Optional bool tensor broadcastable to (..., N_query, N_key); True marks a score to drop. A dropped
            score is set to the dtype's most negative finite value rather than -inf, so a query whose keys are
            all masked gets a uniform row instead of NaN.
        weights: Optional tensor broadcastable to the scores that multiplies them before masking.

    Returns:
        (..., N_query, N_key) weights, non-negative and summing to 1 over the last axis.
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if weights is not None:
        scores = scores * weights
    if mask is not None:
        if mask.dtype != torch.bool:
            raise ValueError(f"attention mask must be a bool tensor (True = masked), got dtype {mask.dtype}")
        scores = scores.masked_fill(mask, torch.finfo(scores.dtype).min)
    return scores.softmax(dim=-1)


@register("mhsa")
class MultiHeadSelfAttention2d(AttentionBlock):
    """Multi-head scaled dot-product self-attention whose tokens are the pixels of a (B, C, H, W) map.

    The head count must divide both `channels` (values) and `qk_channels` (queries and keys); when it does not,
    the largest divisor of their greatest common divisor that is at most `heads` is used instead (so C = 6 with
    heads = 4 runs with 3 heads). The key projection has no bias: it would add the same q . b to every score of
    a query, which the softmax cancels.

    Args:
        channels: Channels of the input feature map (and of the values and the output).
        heads: Number of attention heads wanted (see above for odd channel counts).
        qk_channels: Total width of the queries and keys over all heads; defaults to `channels`.
        residual: Return x + out (default) rather than out alone.

    Raises:
        BlockConfigError: `heads` or `qk_channels` is not a positive int.
    """

    def __init__(self, channels: int, heads: int = 4, *, qk_channels: int | None = None, residual: bool = True) -> None:
        super().__init__()
        qk_channels = channels if qk_channels is None else qk_channels
        for option, value in (("heads", heads), ("qk_channels", qk_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BlockConfigError(f"mhsa's {option} must be a positive int, got {value!r}")
        self.heads = divisor_at_most(math.gcd(channels, qk_channels), heads)
        self.residual = residual
        self.query = nn.Conv2d(channels, qk_channels, 1)
        self.key = nn.Conv2d(channels, qk_channels, 1, bias=False)
        self.value = nn.Conv2d(channels, channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        self.tap = Tap("matrix", ("batch", "head", "query", "key"), norm="softmax", over=("key",), tokens="grid")

    def forward(
        self,
        x: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        attention_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend over the H*W positions of `x`.

        Args:
            x: Feature map, (B, C, H, W).
            attention_mask: Optional bool tensor broadcastable to (B, heads, H*W, H*W); True = masked.
            attention_weights: Optional tensor broadcastable to (B, heads, H*W, H*W) multiplying the scores.

        Returns:
            (B, C, H, W): x + proj(attention @ V), or the projection alone when `residual` is False.
        """
        height, width = x.shape[-2:]
        queries, keys, values = (self._split_heads(conv(x)) for conv in (self.query, self.key, self.value))
        attention = scaled_dot_product_attention_map(queries, keys, attention_mask, attention_weights)
        attention = self.tap(attention, grid=(height, width))
        out = self.proj(self._merge_heads(attention @ values, height, width))
        return x + out if self.residual else out

    def _split_heads(self, t: torch.Tensor) -> torch.Tensor:
        """(B, heads*d, H, W) -> (B, heads, H*W, d)."""
        batch, channels = t.shape[:2]
        return t.reshape(batch, self.heads, channels // self.heads, -1).transpose(-2, -1)

    def _merge_heads(self, t: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """(B, heads, H*W, d) -> (B, heads*d, H, W)."""
        batch, heads, _, depth = t.shape
        return t.transpose(-2, -1).reshape(batch, heads * depth, height, width)
