"""Recipes for the attention of third-party CNN blocks (mmcv, fightingcv's External-Attention-pytorch,
segmentation-models-pytorch), recomputed from the outputs of the submodules their own forward calls.

Each repeats the arithmetic of the module's forward on the tensors a recipe-mode ForeignTap caught (see `taps`),
never calling a submodule again; matrices over the grid keep only the asked query rows. Adapters are in
`thirdparty`.

- `mmcv_context` (mmcv `ContextBlock`, GCNet, pooling 'att'): the output of its `softmax` module, a softmax over the
  H*W positions of `conv_mask`'s (B, 1, H, W) logits, as a (B, H, W) map.
- `mmcv_non_local` (mmcv `NonLocal2d`): theta^T phi divided by sqrt(C') (`use_scale`) and softmaxed over the keys
  ('embedded_gaussian'), or divided by the number of keys ('dot_product'); one head.
- `mmcv_generalized` (mmcv `GeneralizedAttention`, '1111', no strides or range): per head, softmax over the keys of
  (q + appr_bias) k + (q + geom_bias) (p_x + p_y), the position features p_x (column offsets) and p_y (row offsets)
  being what `appr_geom_fc_x` and `appr_geom_fc_y` returned, divided by sqrt(2) as the module divides them.
- `fcv_a2_maps` (fightingcv `DoubleAttention`, A2-Net): `F.softmax(conv.view(b, c_n, -1))` with no dim, which torch
  takes as dim 0 for a 3-D tensor: the softmax runs over the batch, as the module computes it. (B, c_n, H, W).
- `fcv_pam` (fightingcv DANet `PositionAttentionModule`): its `ScaledDotProductAttention` over the H*W positions,
  softmax(q k^T / sqrt(d_k)) from the outputs of `fc_q` and `fc_k`.
- `fcv_cam` (fightingcv DANet `ChannelAttentionModule`): its `SimplifiedScaledDotProductAttention` over the channels
  of the conv output y (B, C, H*W): softmax(y y^T / sqrt(d_k)), channel x channel.
- `smp_pab` (segmentation-models-pytorch MAnet `PABBlock`): the output of its `map_softmax`, which softmaxes
  center^T top over the whole flattened (H*W) x (H*W) map at once (`sp_map.view(bsize, -1)`): the whole matrix
  sums to 1, not each row.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from attnviz.models.foreign.found import Emission, Found, token_index


def _pick_rows(matrix: torch.Tensor, rows: list[int] | None, dim: int) -> torch.Tensor:
    """`matrix` with only the query `rows` along `dim` (all of them when `rows` is None)."""
    return matrix if rows is None else matrix.index_select(dim, torch.tensor(rows, device=matrix.device))


def mmcv_context(found: Found) -> Emission:
    """mmcv `ContextBlock`: its softmax over positions, (B, 1, H*W) -> (B, H, W) on the module's input grid."""
    (weights,) = found.outputs
    h, w = found.args[0].shape[-2:]
    return weights.reshape(weights.shape[0], h, w), None, None


def mmcv_non_local(found: Found) -> Emission:
    """mmcv `NonLocal2d` ('embedded_gaussian' or 'dot_product'): the pairwise weights of the asked query rows."""
    m = found.module
    t, p = found.outputs  # theta and phi ConvModule outputs: (B, C', H, W)
    n, c, h, w = t.shape
    rows = found.rows((h, w))
    theta = _pick_rows(t.view(n, c, -1).permute(0, 2, 1), rows, 1)
    weights = torch.matmul(theta, p.view(n, c, -1))
    if m.mode == "dot_product":
        weights /= weights.shape[-1]
    else:  # embedded_gaussian, scaled as mmcv scales it (a float32 tensor power)
        if m.use_scale:
            weights /= torch.tensor(c, dtype=torch.float, device=weights.device) ** torch.tensor(
                0.5, device=weights.device
            )
        weights = weights.softmax(dim=-1)
    return weights.unsqueeze(1), (h, w), rows


def mmcv_generalized(found: Found) -> Emission:
    """mmcv `GeneralizedAttention` ('1111', q_stride = kv_stride = 1, no spatial range): the asked query rows."""
    m = found.module
    q_out, k_out, fc_x, fc_y = found.outputs  # (B, heads * d, H, W) twice; (W, W, heads * d); (H, H, heads * d)
    n, _, h, w = q_out.shape
    heads, d = m.num_heads, m.qk_embed_dim
    rows = found.rows((h, w))
    tokens = token_index(rows, h * w, q_out.device)
    q = q_out.view(n, heads, d, h * w).permute(0, 1, 3, 2).index_select(2, tokens)  # (B, heads, R, d)
    content = torch.matmul(q + m.appr_bias.view(1, heads, 1, d), k_out.view(n, heads, d, h * w))
    at_x = fc_x.view(w, w, heads, d).permute(2, 0, 1, 3) / math.sqrt(2)  # (heads, query column, key column, d)
    at_y = fc_y.view(h, h, heads, d).permute(2, 0, 1, 3) / math.sqrt(2)  # (heads, query row, key row, d)
    q = q + m.geom_bias.view(1, heads, 1, d)
    along_x = torch.einsum("nhrd,hrkd->nhrk", q, at_x[:, tokens % w])  # (B, heads, R, key column)
    along_y = torch.einsum("nhrd,hrkd->nhrk", q, at_y[:, tokens // w])  # (B, heads, R, key row)
    energy = content.view(n, heads, -1, h, w) + (along_x.unsqueeze(3) + along_y.unsqueeze(4))
    return F.softmax(energy.flatten(3), dim=3), (h, w), rows


def fcv_a2_maps(found: Found) -> Emission:
    """fightingcv `DoubleAttention`: `F.softmax` without a dim of convB's (gathering) or convV's (distribution)
    output viewed (b, c_n, H*W), i.e. over dim 0 (the batch), as (B, c_n, H, W)."""
    (out,) = found.outputs
    b, c, h, w = out.shape
    return F.softmax(out.view(b, c, -1), dim=0).view(b, c, h, w), None, None


def fcv_pam(found: Found) -> Emission:
    """fightingcv DANet `PositionAttentionModule`: softmax(q k^T / sqrt(d_k)) over the H*W positions."""
    pa = found.module.pa
    q_out, k_out = found.outputs  # fc_q and fc_k outputs: (B, H*W, heads * d_k)
    b, n = q_out.shape[:2]
    h, w = found.args[0].shape[-2:]
    rows = found.rows((h, w))
    q = _pick_rows(q_out.view(b, n, pa.h, pa.d_k).permute(0, 2, 1, 3), rows, 2)
    k = k_out.view(b, k_out.shape[1], pa.h, pa.d_k).permute(0, 2, 3, 1)
    return torch.softmax(torch.matmul(q, k) / math.sqrt(pa.d_k), -1), (h, w), rows


def fcv_cam(found: Found) -> Emission:
    """fightingcv DANet `ChannelAttentionModule`: softmax(y y^T / sqrt(d_k)) over the channels of its conv output."""
    pa = found.module.pa
    (out,) = found.outputs  # cnn output: (B, C, H, W)
    b, c = out.shape[:2]
    y = out.view(b, c, -1)
    q = y.view(b, c, pa.h, pa.d_k).permute(0, 2, 1, 3)
    k = y.view(b, c, pa.h, pa.d_k).permute(0, 2, 3, 1)
    return torch.softmax(torch.matmul(q, k) / math.sqrt(pa.d_k), -1), None, None


def smp_pab(found: Found) -> Emission:
    """smp MAnet `PABBlock`: the output of its `map_softmax`, a softmax over the whole flattened (H*W) x (H*W) map,
    as (B, 1, H*W, H*W) with only the asked query rows kept."""
    (flat,) = found.outputs  # (B, H*W * H*W)
    h, w = found.args[0].shape[-2:]
    rows = found.rows((h, w))
    return _pick_rows(flat.view(flat.shape[0], h * w, h * w), rows, 1).unsqueeze(1), (h, w), rows


THIRDPARTY_RECIPES: dict[str, Callable[[Found], Emission | None]] = {
    "mmcv_context": mmcv_context,
    "mmcv_non_local": mmcv_non_local,
    "mmcv_generalized": mmcv_generalized,
    "fcv_a2_maps": fcv_a2_maps,
    "fcv_pam": fcv_pam,
    "fcv_cam": fcv_cam,
    "smp_pab": smp_pab,
}
"""Recipe name -> function; merged into recompute.RECIPES."""
