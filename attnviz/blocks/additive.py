"""Additive (Bahdanau) attention: a decoder state scores every encoder output through a small tanh layer.

Bahdanau, Cho, Bengio. "Neural Machine Translation by Jointly Learning to Align and Translate", ICLR 2015
(arXiv:1409.0473).

For a decoder state h (D_dec) and encoder outputs e_1..e_S (D_enc each):
    energy_s = v^T tanh(W_h h + W_e e_s + b)     (W_h: D_dec -> D_att, W_e: D_enc -> D_att, v: D_att -> 1)
    a = softmax_s(energy)                        (masked positions get weight 0)
    context = sum_s a_s e_s
Everything is batch first: h is (B, D_dec), the encoder outputs are (B, S, D_enc).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from attnviz.blocks.base import AttentionBlock, Tap, register
from attnviz.errors import BlockConfigError


def _check_width(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BlockConfigError(f"additive attention's {name} must be a positive int, got {value!r}")


@register("additive")
class AdditiveAttention(AttentionBlock):
    """Bahdanau's additive attention of one decoder state over a sequence of encoder outputs.

    Args:
        channels: Feature size of each encoder output (D_enc).
        decoder_channels: Size of the decoder state (D_dec); defaults to `channels`.
        attention_channels: Width of the tanh layer (D_att); defaults to `decoder_channels`.

    There is one bias b, carried by W_e; v has none because a constant added to every energy cancels in the
    softmax.
    """

    def __init__(
        self, channels: int, decoder_channels: int | None = None, attention_channels: int | None = None
    ) -> None:
        super().__init__()
        decoder_channels = channels if decoder_channels is None else decoder_channels
        attention_channels = decoder_channels if attention_channels is None else attention_channels
        for name, value in (("decoder_channels", decoder_channels), ("attention_channels", attention_channels)):
            _check_width(name, value)
        self.decoder_proj = nn.Linear(decoder_channels, attention_channels, bias=False)
        self.encoder_proj = nn.Linear(channels, attention_channels)
        self.score = nn.Linear(attention_channels, 1, bias=False)
        self.tap = Tap("matrix", ("batch", "query", "key"), norm="softmax", over=("key",), tokens="sequence")

    def forward(
        self, hidden: torch.Tensor, encoder_outputs: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Weigh the encoder outputs by their relevance to the decoder state.

        Args:
            hidden: Decoder state, (B, D_dec).
            encoder_outputs: Encoder outputs, (B, S, D_enc).
            mask: Optional bool (B, S); True marks a position to ignore (padding). Masked positions get weight 0;
                a row with every position masked gets uniform weights rather than NaN.

        Returns:
            context (B, D_enc) and weights (B, S), which sum to 1 over S.
        """
        features = torch.tanh(self.decoder_proj(hidden)[:, None, :] + self.encoder_proj(encoder_outputs))
        energy = self.score(features).squeeze(-1)  # (B, S)
        if mask is not None:
            if mask.dtype != torch.bool:
                raise ValueError(f"additive attention's mask must be bool (True = ignore), got dtype {mask.dtype}")
            energy = energy.masked_fill(mask, torch.finfo(energy.dtype).min)
        weights = self.tap(energy.softmax(dim=-1)[:, None, :])[:, 0]  # tapped as (B, 1 query, S keys)
        context = (weights[:, :, None] * encoder_outputs).sum(dim=1)
        return context, weights

    @classmethod
    def example_inputs(cls, batch: int, channels: int, height: int, width: int, *, seed: int = 0) -> tuple[Any, ...]:
        """A decoder state (B, channels) and height * width encoder outputs (B, height * width, channels)."""
        generator = torch.Generator().manual_seed(seed)
        hidden = torch.randn(batch, channels, generator=generator)
        encoder_outputs = torch.randn(batch, height * width, channels, generator=generator)
        return hidden, encoder_outputs
