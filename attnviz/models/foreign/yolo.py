"""The self-attention of the YOLO family (ultralytics), recomputed from the output of the module's own qkv conv.

Neither module returns its weights from a submodule, so a recipe-mode ForeignTap (see `taps`) catches the output of
its `qkv` Conv (conv + batch norm, or the fused conv) and a recipe here repeats the module's arithmetic on it, for
the asked query rows only when capture asks for rows. Both work over the (H, W) grid of the module's input, tokens
row-major, as (batch, head, query, key) matrices whose rows are softmaxes over the keys.

- `psa_attention` (ultralytics `Attention`, in `PSA`, `PSABlock`, `C2PSA` of YOLO11 and YOLOv10's `PSA`): the qkv
  channels are per head [q (key_dim), k (key_dim), v (head_dim)]; softmax(q^T k * scale) over all H*W keys.
- `area_attention` (ultralytics `AAttn`, in YOLO12's `ABlock`/`A2C2f`): the H*W tokens are cut into `area` runs of
  equal length (runs of whole rows when W divides H*W / area: horizontal strips) and each token attends within its
  own run; per head [q, k, v] of head_dim each; softmax(q^T k * head_dim^-0.5). A row is placed on the full key grid,
  zero outside the query's run.

Papers: Wang et al., YOLOv10: Real-Time End-to-End Object Detection, NeurIPS 2024 (PSA); Tian et al., YOLOv12:
Attention-Centric Real-Time Object Detectors, 2025 (area attention).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from attnviz.models.foreign.found import Emission, Found, token_index


def _per_head(qkv: torch.Tensor, heads: int) -> torch.Tensor:
    """A conv's (B, heads * width, H, W) output as (B, heads, width, H * W): channels are head-major."""
    return qkv.reshape(qkv.shape[0], heads, -1, qkv.shape[-2] * qkv.shape[-1])


def psa_attention(found: Found) -> Emission:
    """ultralytics `Attention`: softmax(q^T k * scale) over all H*W keys, for the asked query rows."""
    m = found.module
    (qkv,) = found.outputs  # (B, heads * (2 key_dim + head_dim), H, W)
    h, w = qkv.shape[-2:]
    per_head = _per_head(qkv, m.num_heads)
    q, k = per_head[:, :, : m.key_dim], per_head[:, :, m.key_dim : 2 * m.key_dim]
    rows = found.rows((h, w))
    if rows is not None:
        q = q.index_select(3, torch.tensor(rows, device=q.device))
    return ((q.transpose(-2, -1) @ k) * m.scale).softmax(dim=-1), (h, w), rows


def area_attention(found: Found) -> Emission:
    """ultralytics `AAttn`: each query's softmax over the keys of its own area, on the full key grid (zero outside)."""
    m = found.module
    (qkv,) = found.outputs  # (B, heads * 3 head_dim, H, W)
    h, w = qkv.shape[-2:]
    per_head = _per_head(qkv, m.num_heads)
    q, k = per_head[:, :, : m.head_dim], per_head[:, :, m.head_dim : 2 * m.head_dim]
    rows = found.rows((h, w))
    tokens = token_index(rows, h * w, qkv.device)
    length = h * w // max(int(m.area), 1)
    areas = tokens.div(length, rounding_mode="floor")
    weights = qkv.new_zeros(qkv.shape[0], m.num_heads, len(tokens), h * w)
    for area in areas.unique().tolist():
        picked = (areas == area).nonzero().squeeze(1)
        keys = slice(area * length, (area + 1) * length)
        logits = (q.index_select(3, tokens[picked]).transpose(-2, -1) @ k[..., keys]) * (m.head_dim**-0.5)
        weights[:, :, picked, keys] = logits.softmax(dim=-1)
    return weights, (h, w), rows


YOLO_RECIPES: dict[str, Callable[[Found], Emission | None]] = {
    "psa_attention": psa_attention,
    "area_attention": area_attention,
}
"""Recipe name -> function; merged into recompute.RECIPES."""
