"""Matrix-attention blocks (mhsa, eca_mhsa, danet, criss_cross, additive) and CoT against their equations.

Each test fixes the block's weights, runs it, and recomputes the attention with plain torch ops from the block's
parameters (never through its submodules), then compares with what the block's taps recorded and, where cheap,
with the block's output.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnviz.blocks.additive import AdditiveAttention
from attnviz.blocks.cot import ContextualTransformer
from attnviz.blocks.criss_cross import CrissCrossAttention
from attnviz.blocks.danet import DualAttention
from attnviz.blocks.eca_mhsa import EcaMultiHeadSelfAttention
from attnviz.blocks.mhsa import MultiHeadSelfAttention2d
from tests.tap_utils import record_taps

TOL = {"atol": 1e-5, "rtol": 1e-4}


def _linear(conv: nn.Conv2d | nn.Linear) -> tuple[torch.Tensor, torch.Tensor | float]:
    """Weight (out, in) and bias (or 0.0) of a 1x1 conv or a linear layer."""
    weight = conv.weight.detach().reshape(conv.weight.shape[0], -1)
    return weight, (conv.bias.detach() if conv.bias is not None else 0.0)


def _tokens(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """(B, N, out): the 1x1 conv applied to every position of x, row-major."""
    weight, bias = _linear(conv)
    return x.flatten(2).transpose(1, 2) @ weight.T + bias


# --------------------------------------------------------------------------------------------------- mhsa


def _mhsa_reference(
    block: MultiHeadSelfAttention2d, x: torch.Tensor, mask: torch.Tensor | None, weights: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention (B, heads, N, N) and output of multi-head self-attention, one head at a time."""
    batch, channels, height, width = x.shape
    q, k, v = (_tokens(x, conv) for conv in (block.query, block.key, block.value))
    heads = block.heads
    dq, dv = q.shape[-1] // heads, channels // heads
    maps, outs = [], []
    for h in range(heads):
        qh, kh, vh = q[..., h * dq : (h + 1) * dq], k[..., h * dq : (h + 1) * dq], v[..., h * dv : (h + 1) * dv]
        scores = torch.einsum("bnd,bmd->bnm", qh, kh) / math.sqrt(dq)
        if weights is not None:
            scores = scores * weights.expand(batch, heads, -1, -1)[:, h]
        if mask is not None:
            scores = scores.masked_fill(mask.expand(batch, heads, -1, -1)[:, h], float("-inf"))
        att = torch.exp(scores - scores.amax(-1, keepdim=True))
        att = att / att.sum(-1, keepdim=True)
        maps.append(att)
        outs.append(att @ vh)
    proj_w, proj_b = _linear(block.proj)
    out = torch.cat(outs, dim=-1) @ proj_w.T + proj_b  # (B, N, C)
    return torch.stack(maps, dim=1), x + out.transpose(1, 2).reshape(batch, channels, height, width)


@pytest.mark.parametrize("masked", [False, True], ids=["plain", "mask+weights"])
def test_mhsa_matches_scaled_dot_product_attention(masked: bool) -> None:
    block = MultiHeadSelfAttention2d(8, heads=2, qk_channels=6).eval()
    x = torch.randn(2, 8, 3, 5)  # non-square
    n = 15
    mask = weights = None
    if masked:
        mask = torch.rand(2, 1, n, n) < 0.4
        mask &= ~torch.eye(n, dtype=torch.bool)  # every query keeps at least itself
        weights = torch.rand(1, 2, n, n) + 0.5
    with record_taps(block) as fired, torch.no_grad():
        out = block(x, attention_mask=mask, attention_weights=weights)
    expected_att, expected_out = _mhsa_reference(block, x, mask, weights)
    assert len(fired) == 1 and fired[0].grid == (3, 5)
    torch.testing.assert_close(fired[0].value, expected_att, **TOL)
    torch.testing.assert_close(out, expected_out, **TOL)
    if masked:
        assert (fired[0].value[mask.expand(2, 2, n, n)] == 0).all()


def test_mhsa_fully_masked_row_is_uniform_not_nan() -> None:
    block = MultiHeadSelfAttention2d(4, heads=2).eval()
    x = torch.randn(1, 4, 2, 3)
    mask = torch.zeros(6, 6, dtype=torch.bool)
    mask[2] = True  # query 2 sees no key
    with record_taps(block) as fired, torch.no_grad():
        out = block(x, attention_mask=mask)
    att = fired[0].value
    assert torch.isfinite(att).all() and torch.isfinite(out).all()
    torch.testing.assert_close(att[:, :, 2], torch.full((1, 2, 6), 1 / 6))


def test_mhsa_heads_fall_back_to_a_divisor() -> None:
    assert MultiHeadSelfAttention2d(6, heads=4).heads == 3
    assert MultiHeadSelfAttention2d(8, heads=4, qk_channels=6).heads == 2


# ---------------------------------------------------------------------------------------------------- danet


@pytest.mark.parametrize(("height", "width"), [(5, 7), (9, 4)])
def test_danet_position_and_channel_attention(height: int, width: int) -> None:
    torch.manual_seed(1)
    block = DualAttention(16).eval()
    with torch.no_grad():
        block.position.alpha.fill_(0.7)
        block.channel.beta.fill_(-0.3)
    x = 0.3 * torch.randn(2, 16, height, width)
    with record_taps(block) as fired, torch.no_grad():
        out = block(x)
    assert [f.tap.label for f in fired] == ["position", "channel"]

    query, key, value = (_tokens(x, conv) for conv in (block.position.query, block.position.key, block.position.value))
    position = torch.softmax(torch.einsum("bic,bjc->bij", query, key), dim=-1)  # row i = query position
    features = x.flatten(2)
    channel = torch.softmax(torch.einsum("bcn,bdn->bcd", features, features), dim=-1)
    assert fired[0].grid == (height, width)
    torch.testing.assert_close(fired[0].value, position[:, None], **TOL)
    torch.testing.assert_close(fired[1].value, channel[:, None], **TOL)

    from_positions = torch.einsum("bij,bjc->bci", position, value).reshape_as(x)
    from_channels = torch.einsum("bcd,bdn->bcn", channel, features).reshape_as(x)
    torch.testing.assert_close(out, x + 0.7 * from_positions - 0.3 * from_channels, **TOL)


def test_danet_starts_as_identity() -> None:
    x = torch.randn(1, 8, 4, 6)
    torch.testing.assert_close(DualAttention(8).eval()(x), x)


# ---------------------------------------------------------------------------------------------- criss_cross


def test_criss_cross_weights_cover_column_and_row_with_self_once() -> None:
    torch.manual_seed(2)
    block = CrissCrossAttention(8).eval()
    with torch.no_grad():
        block.gamma.fill_(0.5)
    height, width = 4, 6
    x = torch.randn(2, 8, height, width)
    with record_taps(block) as fired, torch.no_grad():
        out = block(x)
    att = fired[0].value
    assert att.shape == (2, height, width, height + width)

    wq, bq = _linear(block.query)
    wk, _ = _linear(block.key)
    wv, bv = _linear(block.value)
    keys = torch.einsum("oc,bchw->bohw", wk, x)
    values = torch.einsum("oc,bchw->bohw", wv, x) + bv[:, None, None]
    for i, j in [(0, 0), (2, 3), (3, 5), (1, 0)]:
        q = x[:, :, i, j] @ wq.T + bq  # (B, C')
        others_in_column = [h for h in range(height) if h != i]
        column = torch.stack([(q * keys[:, :, h, j]).sum(1) for h in others_in_column], dim=1)
        row = torch.stack([(q * keys[:, :, i, w]).sum(1) for w in range(width)], dim=1)
        expected = torch.softmax(torch.cat([column, row], dim=1), dim=1)  # H - 1 + W entries: self once
        tapped = att[:, i, j]
        assert (tapped[:, i] == 0).all(), "the pixel itself must be dropped from its column"
        torch.testing.assert_close(tapped[:, others_in_column], expected[:, : height - 1], **TOL)
        torch.testing.assert_close(tapped[:, height:], expected[:, height - 1 :], **TOL)

        gathered = sum(expected[:, n, None] * values[:, :, h, j] for n, h in enumerate(others_in_column))
        gathered = gathered + sum(expected[:, height - 1 + w, None] * values[:, :, i, w] for w in range(width))
        torch.testing.assert_close(out[:, :, i, j], x[:, :, i, j] + 0.5 * gathered, **TOL)


# ------------------------------------------------------------------------------------------------- additive


def test_additive_attention_matches_bahdanau() -> None:
    torch.manual_seed(3)
    block = AdditiveAttention(5, decoder_channels=3, attention_channels=4).eval()
    hidden, encoder_outputs = torch.randn(2, 3), torch.randn(2, 7, 5)
    mask = torch.zeros(2, 7, dtype=torch.bool)
    mask[0, 5:] = True
    mask[1, [0, 3]] = True
    with record_taps(block) as fired, torch.no_grad():
        context, weights = block(hidden, encoder_outputs, mask)

    wh, _ = _linear(block.decoder_proj)
    we, be = _linear(block.encoder_proj)
    v, _ = _linear(block.score)
    expected = torch.zeros(2, 7)
    for b in range(2):
        kept = (~mask[b]).nonzero().flatten()
        energy = torch.stack([v[0] @ torch.tanh(wh @ hidden[b] + we @ encoder_outputs[b, s] + be) for s in kept])
        expected[b, kept] = torch.exp(energy) / torch.exp(energy).sum()
    torch.testing.assert_close(weights, expected, **TOL)
    assert (weights[mask] == 0).all()
    assert fired[0].value.shape == (2, 1, 7)
    torch.testing.assert_close(fired[0].value[:, 0], expected, **TOL)
    torch.testing.assert_close(context, (expected[:, :, None] * encoder_outputs).sum(1), **TOL)


# ------------------------------------------------------------------------------------------------- eca_mhsa


def test_eca_mhsa_gates_channels_then_attends_over_positions() -> None:
    block = EcaMultiHeadSelfAttention(12, heads=4).eval()
    x = torch.randn(2, 12, 5, 3)
    with record_taps(block) as fired, torch.no_grad():
        out = block(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert [f.tap.kind for f in fired] == ["channel", "matrix"]
    gate, attention = fired[0].value, fired[1].value
    assert gate.shape == (2, 12) and attention.shape == (2, 4, 15, 15) and fired[1].grid == (5, 3)
    expected_att, expected_out = _mhsa_reference(block.attention, x * gate[:, :, None, None], None, None)
    torch.testing.assert_close(attention, expected_att, **TOL)
    torch.testing.assert_close(out, expected_out, **TOL)


# ------------------------------------------------------------------------------------------------------ cot


def _conv_bn(x: torch.Tensor, seq: nn.Sequential, groups: int = 1) -> torch.Tensor:
    """Conv (no bias) then eval-mode BatchNorm, from the parameters of a ConvNormAct."""
    conv, bn = seq[0], seq[1]
    y = F.conv2d(x, conv.weight, padding=conv.weight.shape[-1] // 2, groups=groups)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return (y - bn.running_mean[:, None, None]) * scale[:, None, None] + bn.bias[:, None, None]


def test_cot_spatial_softmax_and_output() -> None:
    torch.manual_seed(4)
    channels, height, width = 6, 5, 4
    block = ContextualTransformer(channels).eval()
    with torch.no_grad():
        for bn in (m for m in block.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
    x = torch.randn(2, channels, height, width)
    with record_taps(block) as fired, torch.no_grad():
        out = block(x)
        static = torch.relu(_conv_bn(x, block.key_embed, groups=3))  # divisor of 6 at most 4
        values = _conv_bn(x, block.value_embed)
        hidden = torch.relu(_conv_bn(torch.cat([static, x], dim=1), block.attention_embed[0]))
        logits = F.conv2d(hidden, block.attention_embed[1].weight).reshape(2, channels, 9, height, width).mean(2)
        attention = torch.softmax(logits.reshape(2, channels, -1), dim=-1).reshape(2, channels, height, width)
    torch.testing.assert_close(fired[0].value, attention, **TOL)
    torch.testing.assert_close(out, static + attention * values, **TOL)
