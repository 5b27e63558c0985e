"""The attention of foreign self-attention modules, recomputed from the tensors their own submodules returned.

A `ForeignTap` in recipe mode catches, during one call of its module, the outputs of the submodules that carry
the queries and keys (timm's ViT `Attention` fuses the softmax into scaled_dot_product_attention, so no module
returns the weights). A recipe here turns them into the weights the module used, computed as the module computes
them (up to rounding where it runs a fused kernel), without calling any submodule again (a second call could
change state, e.g. batch-norm statistics) and without touching the module's output.

Matrices are (batch, head, query, key). For grid tokens only the rows of the asked query points are computed when
capture asks for rows (`Found.rows`); otherwise the full matrix, which capture's byte budget bounds.

- `vit_matrix`, `vit_cls` (timm `Attention`): softmax(q k^T * head_dim^-0.5 + mask) with q and k after `q_norm` and
  `k_norm`; patch rows and patch keys only (prefix tokens are not grid cells, so a row sums to 1 minus its weight
  on the prefix tokens). `vit_cls` is the class token's row over the patches, as a (batch, head, h, w) map.
  `vit_rollout`: a ViT's attention rollout through its blocks, the class token's row as a (batch, h, w) map (the
  blocks' recipes feed it; see `rollout`).
- `bot` (timm `BottleneckAttn`): softmax(q k * scale + relative logits) over all positions, the relative logits
  being what its `pos_embed` returned.
- `halo` (timm `HaloAttn`): block-local softmax over each query block's window, scattered into the full key grid
  (zero outside the window, and the weight a border window puts on the zero padding dropped). A strided HaloAttn
  gives each input cell the row of the query that covers it.
- `lambda_keys` (timm `LambdaLayer`): no query-key softmax exists; its keys, softmaxed over positions.
- `non_local` (timm `NonLocalAttn`): softmax(theta^T phi * scale) over positions, one head.
- `bat` (timm `BatNonLocalAttn`): the bilinear transform y = P x Q as a matrix, A[(r, c), (r', c')] =
  P[r, r'] Q[c', c] per channel group, each factor normalised so a row sums to 1.
- `mha` (`torch.nn.MultiheadAttention`): per-head weights from torch's own function on the call's arguments, over
  the sequence; `mha_matrix`, `mha_cls` inside a ViT whose layout is known (torchvision's), as for timm's.
- `mha_grid` (the `TransformerBlock` of yolov5 and ultralytics' C3TR): as `mha`, over the pixels of the block's input
  map, so the rows lie on its (H, W) grid.

The YOLO family's own self-attention (ultralytics `Attention`, `AAttn`) has its recipes in `yolo`, third-party CNN
blocks' (mmcv, fightingcv, smp) in `thirdparty_recipes`; `Found` and `Emission` are in `found`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from attnviz.models.foreign import rollout
from attnviz.models.foreign.found import Emission, Found, Grid, token_index
from attnviz.models.foreign.thirdparty_recipes import THIRDPARTY_RECIPES
from attnviz.models.foreign.yolo import YOLO_RECIPES

# ------------------------------------------------------------------------------------------------ timm Attention


def vit_layout(tokens: int, params: dict[str, Any]) -> tuple[int, Grid | None]:
    """(prefix tokens before the patches, patch grid) of a ViT sequence of `tokens`.

    The prefix (class token, registers) is the layout's ("prefix"), else what is left over the largest square.
    The grid is the layout's ("grid", the model's own input size) when it has that many cells, else the square one
    (attnviz's inputs are square unless asked otherwise), else unknown.
    """
    prefix = params.get("prefix")
    prefix = int(prefix) if prefix is not None else tokens - math.isqrt(tokens) ** 2
    patches = tokens - prefix
    grid = params.get("grid")
    if grid is not None and grid[0] * grid[1] == patches:
        return prefix, (int(grid[0]), int(grid[1]))
    side = math.isqrt(patches)
    return prefix, ((side, side) if side * side == patches else None)


def _vit_mask(found: Found, tokens: int, like: torch.Tensor) -> torch.Tensor | None:
    """The additive mask timm's Attention applies (is_causal first, then a bool or float attn_mask)."""
    mask = found.argument(1, "attn_mask")
    if found.argument(2, "is_causal"):
        return like.new_full((tokens, tokens), float("-inf")).triu_(1)
    if mask is None or mask.dtype != torch.bool:
        return mask
    return torch.zeros_like(mask, dtype=like.dtype).masked_fill_(~mask, float("-inf"))


def _vit_weights(found: Found, index: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T * scale + mask) for the query tokens at `index`, over every key: (B, heads, len(index), N)."""
    q, k = found.outputs  # after q_norm and k_norm: (B, heads, N, head_dim)
    logits = (q.index_select(2, index) * found.module.scale) @ k.transpose(-2, -1)
    mask = _vit_mask(found, k.shape[2], logits)
    if mask is not None:
        logits = logits + (mask.index_select(-2, index) if mask.dim() >= 2 and mask.shape[-2] > 1 else mask)
    return logits.softmax(dim=-1)


def _patch_rows(found: Found, tokens: int, weights_of: Callable[[torch.Tensor], torch.Tensor]) -> Emission:
    """Patch rows over patch keys of a ViT sequence, given the weights of the query tokens at an index."""
    prefix, grid = vit_layout(tokens, found.params)
    rows = found.rows(grid) if grid is not None else None
    index = token_index(rows, tokens - prefix, found.module_device) + prefix
    return weights_of(index)[..., prefix:], grid, rows


def _class_row(found: Found, tokens: int, weights_of: Callable[[torch.Tensor], torch.Tensor]) -> Emission | None:
    """The class token's (token 0) weights on the patches, as a (B, heads, h, w) map; None without a grid."""
    prefix, grid = vit_layout(tokens, found.params)
    if grid is None or prefix < 1:
        return None
    weights = weights_of(torch.zeros(1, dtype=torch.long, device=found.module_device))
    return weights[:, :, 0, prefix:].reshape(weights.shape[0], weights.shape[1], *grid), None, None


def _feed_rollout(found: Found) -> None:
    """A block of a ViT with a rollout (params "rollout"): its full attention into the rollout's running product."""
    if "rollout" in found.params:
        tokens = found.outputs[1].shape[2]
        rollout.feed(found, lambda: _vit_weights(found, torch.arange(tokens, device=found.outputs[1].device)))


def vit_matrix(found: Found) -> Emission:
    """timm `Attention`: patch rows over patch keys."""
    _feed_rollout(found)
    return _patch_rows(found, found.outputs[1].shape[2], lambda index: _vit_weights(found, index))


def vit_cls(found: Found) -> Emission | None:
    """timm `Attention`: the class token's row over the patches."""
    _feed_rollout(found)
    return _class_row(found, found.outputs[1].shape[2], lambda index: _vit_weights(found, index))


def vit_rollout(found: Found) -> Emission | None:
    """timm `Attention`, a ViT's last block: the class token's rolled-out row over the patches (see `rollout`)."""
    _feed_rollout(found)
    return rollout.class_row(found, *vit_layout(found.outputs[1].shape[2], found.params))


# ---------------------------------------------------------------------------------------- timm BoT, HaloNet, Lambda


def bot(found: Found) -> Emission:
    """timm `BottleneckAttn`: softmax over all H*W keys of q k * scale plus the relative logits of `pos_embed`."""
    m = found.module
    qkv, rel = found.outputs  # qkv conv output (B, 2 qk + v, H, W); pos_embed output (B * heads, HW, HW)
    b, _, h, w = qkv.shape
    q, k, _ = torch.split(qkv, [m.dim_out_qk, m.dim_out_qk, m.dim_out_v], dim=1)
    q = q.reshape(b * m.num_heads, m.dim_head_qk, -1).transpose(-1, -2)
    k = k.reshape(b * m.num_heads, m.dim_head_qk, -1)
    rows = found.rows((h, w))
    if rows is not None:
        index = torch.tensor(rows, device=q.device)
        q, rel = q.index_select(1, index), rel.index_select(1, index)
    logits = (q @ k + rel) * m.scale if m.scale_pos_embed else (q @ k) * m.scale + rel
    return logits.softmax(dim=-1).reshape(b, m.num_heads, -1, h * w), (h, w), rows


def _halo_windows(m: nn.Module, q_out: torch.Tensor, kv_out: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
    """HaloAttn's softmax, as its forward computes it: (B * heads, blocks, block_ds ** 2, win ** 2)."""
    b, _, h, w = kv_out.shape
    nbh, nbw = h // m.block_size, w // m.block_size
    q = q_out.reshape(-1, m.dim_head_qk, nbh, m.block_size_ds, nbw, m.block_size_ds).permute(0, 1, 3, 5, 2, 4)
    q = q.reshape(b * m.num_heads, m.dim_head_qk, -1, nbh * nbw).transpose(1, 3)
    kv = F.pad(kv_out, [m.halo_size] * 4)
    kv = kv.unfold(2, m.win_size, m.block_size).unfold(3, m.win_size, m.block_size)
    kv = kv.reshape(b * m.num_heads, m.dim_head_qk + m.dim_head_v, nbh * nbw, -1).permute(0, 2, 3, 1)
    k = kv[..., : m.dim_head_qk]
    logits = q @ k.transpose(-1, -2)
    logits = (logits + rel) * m.scale if m.scale_pos_embed else logits * m.scale + rel
    return logits.softmax(dim=-1)


def _halo_scatter(m: nn.Module, windows: torch.Tensor, grid: Grid, tokens: torch.Tensor) -> torch.Tensor:
    """Each token's window weights placed on the (h, w) key grid: (B, heads, len(tokens), h * w)."""
    h, w = grid
    bds, step, halo, win = m.block_size_ds, m.block_size, m.halo_size, m.win_size
    nbw = w // step
    qr, qc = (tokens // w) // m.block_stride, (tokens % w) // m.block_stride  # the query covering each cell
    bh, i, bw, j = qr // bds, qr % bds, qc // bds, qc % bds
    windows = windows.reshape(-1, m.num_heads, *windows.shape[1:])[:, :, bh * nbw + bw, i * bds + j]
    wp = w + 2 * halo
    offsets = torch.arange(win, device=tokens.device)
    index = ((bh * step)[:, None, None] + offsets[:, None]) * wp + (bw * step)[:, None, None] + offsets
    canvas = windows.new_zeros(*windows.shape[:3], (h + 2 * halo) * wp)
    canvas.scatter_(-1, index.reshape(len(tokens), -1).expand_as(windows), windows)
    canvas = canvas.reshape(*canvas.shape[:3], h + 2 * halo, wp)[..., halo : halo + h, halo : halo + w]
    return canvas.reshape(*canvas.shape[:3], h * w)


def halo(found: Found) -> Emission:
    """timm `HaloAttn`: each query's window softmax, scattered into the full key grid (zero outside it)."""
    q_out, kv_out, rel = found.outputs
    grid = (kv_out.shape[-2], kv_out.shape[-1])
    rows = found.rows(grid)
    windows = _halo_windows(found.module, q_out, kv_out, rel)
    tokens = token_index(rows, grid[0] * grid[1], kv_out.device)
    return _halo_scatter(found.module, windows, grid, tokens), grid, rows


def lambda_keys(found: Found) -> Emission:
    """timm `LambdaLayer`: its keys softmaxed over positions, as (B, key dims, H, W) spatial maps."""
    m = found.module
    (qkv,) = found.outputs
    b, _, h, w = qkv.shape
    k = qkv[:, m.num_heads * m.dim_qk : (m.num_heads + 1) * m.dim_qk]
    return F.softmax(k.reshape(b, m.dim_qk, h * w), dim=-1).reshape(b, m.dim_qk, h, w), None, None


# ------------------------------------------------------------------------------------------------- non-local, BAT


def non_local(found: Found) -> Emission:
    """timm `NonLocalAttn`: softmax(theta^T phi * scale) over all positions, as one head."""
    t, p = found.outputs  # theta and phi: (B, C', H, W)
    b, c, h, w = t.shape
    rows = found.rows((h, w))
    theta = t.reshape(b, c, -1).permute(0, 2, 1)
    if rows is not None:
        theta = theta.index_select(1, torch.tensor(rows, device=t.device))
    weights = F.softmax(torch.bmm(theta, p.reshape(b, c, -1)) * found.module.scale, dim=2)
    return weights.unsqueeze(1), (h, w), rows


def _bat_factor(logits: torch.Tensor, groups: int, size: int, dim: int) -> torch.Tensor:
    """BilinearAttnTransform's sigmoid factor normalised along `dim`: (B, groups, size, size)."""
    factor = logits.reshape(logits.shape[0], groups, size, size).sigmoid()
    return factor / factor.sum(dim=dim, keepdim=True)


def _expanded(factor: torch.Tensor, picked: torch.Tensor, length: int) -> torch.Tensor:
    """Entries [picked, all] of kron(factor, I_t) with t = length // size: (B, groups, len(picked), length)."""
    t = length // factor.shape[-1]
    keys = torch.arange(length, device=picked.device)
    same = (picked % t)[:, None] == (keys % t)[None, :]
    return factor[:, :, picked // t][..., keys // t] * same


def bat(found: Found) -> Emission:
    """timm `BatNonLocalAttn`: weight of input cell (r', c') in output cell (r, c), P[r, r'] * Q[c', c]."""
    ba = found.module.ba
    p_logits, q_logits = found.outputs  # conv_p and conv_q outputs
    p = _bat_factor(p_logits, ba.groups, ba.block_size, 3)
    q = _bat_factor(q_logits, ba.groups, ba.block_size, 2)
    h, w = found.args[0].shape[-2:]
    rows = found.rows((h, w))
    tokens = token_index(rows, h * w, p.device)
    along_h = _expanded(p, tokens // w, h)
    along_w = _expanded(q.transpose(-1, -2), tokens % w, w)  # Q[c', c] read as row c
    return (along_h[..., :, None] * along_w[..., None, :]).flatten(-2), (h, w), rows


# ----------------------------------------------------------------------------------------- nn.MultiheadAttention


def _mha_weights(found: Found) -> torch.Tensor:
    """`torch.nn.MultiheadAttention`'s per-head weights (dropout left out) for the call: (B, heads, L, S)."""
    m = found.module
    query, key, value = (found.argument(i, name) for i, name in enumerate(("query", "key", "value")))
    if m.batch_first and query.dim() == 3:
        query, key, value = (x.transpose(0, 1) for x in (query, key, value))
    _, weights = F.multi_head_attention_forward(
        query,
        key,
        value,
        m.embed_dim,
        m.num_heads,
        m.in_proj_weight,
        m.in_proj_bias,
        m.bias_k,
        m.bias_v,
        m.add_zero_attn,
        0.0,
        m.out_proj.weight,
        m.out_proj.bias,
        training=False,
        key_padding_mask=found.argument(3, "key_padding_mask"),
        need_weights=True,
        attn_mask=found.argument(5, "attn_mask"),
        use_separate_proj_weight=not m._qkv_same_embed_dim,
        q_proj_weight=m.q_proj_weight,
        k_proj_weight=m.k_proj_weight,
        v_proj_weight=m.v_proj_weight,
        average_attn_weights=False,
        is_causal=bool(found.argument(7, "is_causal")),
    )
    return weights if weights.dim() == 4 else weights.unsqueeze(0)


def mha(found: Found) -> Emission:
    """`torch.nn.MultiheadAttention` over a sequence: every query over every key."""
    return _mha_weights(found), None, None


def mha_matrix(found: Found) -> Emission:
    """`torch.nn.MultiheadAttention` inside a ViT (class token, then patches): patch rows over patch keys."""
    weights = _mha_weights(found)
    return _patch_rows(found, weights.shape[-1], lambda index: weights.index_select(2, index))


def mha_cls(found: Found) -> Emission | None:
    """`torch.nn.MultiheadAttention` inside a ViT: the class token's row over the patches."""
    weights = _mha_weights(found)
    return _class_row(found, weights.shape[-1], lambda index: weights.index_select(2, index))


def mha_grid(found: Found) -> Emission:
    """A `TransformerBlock` of yolov5 or ultralytics (C3TR): the MultiheadAttention of its layer `params["layer"]`
    over the pixels of the block's (B, C, H, W) input, flattened row-major, fed the outputs of the layer's q and k
    Linear (its query and key; `found.outputs`)."""
    attention = found.module.get_submodule(found.params["layer"])
    query, key, _ = found.outputs
    weights = _mha_weights(Found(attention, (), (query, key, key)))
    h, w = found.args[0].shape[-2:]
    if h * w != weights.shape[-1]:
        return weights, None, None
    rows = found.rows((h, w))
    if rows is not None:
        weights = weights.index_select(2, torch.tensor(rows, device=weights.device))
    return weights, (h, w), rows


RECIPES: dict[str, Callable[[Found], Emission | None]] = {
    "vit_matrix": vit_matrix,
    "vit_cls": vit_cls,
    "vit_rollout": vit_rollout,
    "bot": bot,
    "halo": halo,
    "lambda_keys": lambda_keys,
    "non_local": non_local,
    "bat": bat,
    "mha": mha,
    "mha_matrix": mha_matrix,
    "mha_cls": mha_cls,
    "mha_grid": mha_grid,
    **YOLO_RECIPES,
    **THIRDPARTY_RECIPES,
}
"""Recipe name -> the function recomputing that attention; by name, so a ForeignTap stays picklable."""
