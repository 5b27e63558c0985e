"""The two tiny models that give the sequence blocks something to do.

`DigitReverser`: a GRU encoder-decoder that reads digits and writes them back to front, attending over the encoder
outputs with attnviz's `additive` block (Bahdanau et al. 2015, the decoder's previous state as the query) at every
output step. `SeriesForecaster`: MTGNN's temporal convolution module without the graph part: stacked `temporal_gate`
blocks of growing dilation with residual 1x1 mixes, predicting the next HORIZON steps of every node from the last
step's features.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from attnviz.blocks.base import create_block
from attnviz.sequence.tasks import BOS, EOS, HORIZON, PAD, TOKENS


class DigitReverser(nn.Module):
    """Seq2seq with additive attention over a bidirectional GRU's outputs.

    Args:
        embed: Width of the token embeddings.
        encoder: Hidden size of each direction of the encoder GRU (its outputs are 2 x encoder wide).
        decoder: Hidden size of the decoder GRU cell.
        attention: Width of the additive attention's tanh layer.
    """

    def __init__(self, embed: int = 24, encoder: int = 48, decoder: int = 64, attention: int = 48) -> None:
        super().__init__()
        self.config = {"embed": embed, "encoder": encoder, "decoder": decoder, "attention": attention}
        self.embedding = nn.Embedding(len(TOKENS), embed, padding_idx=PAD)
        self.encoder = nn.GRU(embed, encoder, batch_first=True, bidirectional=True)
        self.bridge = nn.Linear(2 * encoder, decoder)
        self.attention = create_block("additive", 2 * encoder, decoder_channels=decoder, attention_channels=attention)
        self.decoder = nn.GRUCell(embed + 2 * encoder, decoder)
        self.output = nn.Linear(decoder + 2 * encoder, len(TOKENS))

    def encode(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(encoder outputs (B, S, 2 x encoder), the decoder's first state (B, decoder)) of (B, S) digit tokens."""
        outputs, _ = self.encoder(self.embedding(source))
        return outputs, torch.tanh(self.bridge(outputs.mean(dim=1)))

    def step(
        self, token: torch.Tensor, hidden: torch.Tensor, encoded: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One output step: (logits (B, vocab), new state, attention weights (B, S)) after reading `token`."""
        context, weights = self.attention(hidden, encoded)
        hidden = self.decoder(torch.cat([self.embedding(token), context], dim=-1), hidden)
        return self.output(torch.cat([hidden, context], dim=-1)), hidden, weights

    def forward(self, source: torch.Tensor, decoder_inputs: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, T, vocab): step t reads decoder_inputs[:, t] (<s>, then the target digits)."""
        encoded, hidden = self.encode(source)
        logits = []
        for t in range(decoder_inputs.shape[1]):
            step_logits, hidden, _ = self.step(decoder_inputs[:, t], hidden, encoded)
            logits.append(step_logits)
        return torch.stack(logits, dim=1)

    @torch.no_grad()
    def generate(self, source: torch.Tensor, steps: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy decoding: (tokens (B, T), attention weights (B, T, S)), T = S + 1 steps unless `steps` says.

        Every sequence runs the same number of steps (a string that ended keeps writing), so the rows line up.
        """
        encoded, hidden = self.encode(source)
        token = torch.full((source.shape[0],), BOS, dtype=torch.long, device=source.device)
        tokens, weights = [], []
        for _ in range(source.shape[1] + 1 if steps is None else steps):
            logits, hidden, step_weights = self.step(token, hidden, encoded)
            token = logits.argmax(dim=-1)
            tokens.append(token)
            weights.append(step_weights)
        return torch.stack(tokens, dim=1), torch.stack(weights, dim=1)


def written(tokens: Sequence[int]) -> list[int]:
    """The tokens up to (and including) the first </s>."""
    out = []
    for token in tokens:
        out.append(int(token))
        if token == EOS:
            break
    return out


class SeriesForecaster(nn.Module):
    """Stacked temporal gates over (B, N, T) series, forecasting the next `horizon` steps of every node.

    Args:
        channels: Channels of every temporal gate.
        dilations: One gated layer per dilation; the receptive field is 1 + (max(kernel_set) - 1) x sum(dilations).
        kernel_set: Kernel sizes of each dilated inception (MTGNN's (2, 3, 6, 7)).
        horizon: Steps ahead to predict.
    """

    def __init__(
        self,
        channels: int = 16,
        dilations: Sequence[int] = (1, 2, 4),
        kernel_set: Sequence[int] = (2, 3, 6, 7),
        horizon: int = HORIZON,
    ) -> None:
        super().__init__()
        self.config: dict[str, Any] = {
            "channels": channels,
            "dilations": list(dilations),
            "kernel_set": list(kernel_set),
            "horizon": horizon,
        }
        self.start = nn.Conv2d(1, channels, 1)
        self.gates = nn.ModuleList(
            [create_block("temporal_gate", channels, kernel_set=tuple(kernel_set), dilation=d) for d in dilations]
        )
        self.mixes = nn.ModuleList([nn.Conv2d(channels, channels, 1) for _ in dilations])
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, horizon, 1))

    @property
    def receptive_field(self) -> int:
        return 1 + (max(self.config["kernel_set"]) - 1) * sum(self.config["dilations"])

    def forward(self, series: torch.Tensor) -> torch.Tensor:
        """(B, N, T) standardised series -> (B, N, horizon) forecasts."""
        x = self.start(series[:, None])
        for gate, mix in zip(self.gates, self.mixes, strict=True):
            x = x + mix(gate(x))
        return self.head(x[..., -1:])[..., 0].transpose(1, 2)


MODELS: dict[str, type[nn.Module]] = {"digit_reverser": DigitReverser, "series_forecaster": SeriesForecaster}
"""Model name (as the sidecar says) -> class."""
MODEL_FOR_BLOCK = {"additive": "digit_reverser", "temporal_gate": "series_forecaster"}
"""The model each sequence block is drawn in."""
