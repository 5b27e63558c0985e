"""mmcv's `GeneralizedAttention` (Zhu et al., ICCV 2019) with all four terms, no spatial range and no strides:
recognised by type, recomputed equal to the four-term energy written out by hand, outputs bit-identical.

mmcv is not installed: a look-alike `mmcv.cnn.bricks.generalized_attention`, with the forward of the real module
for attention_type '1111' (and its strided inputs), is written to a temporary folder.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import nn

from attnviz.capture import capture
from attnviz.models.foreign.recognise import attach_taps

SIZE = 32
"""The input side; a stride-4 stem gives the block an 8 x 8 grid of 16 channels."""
QUERY = (0.3, 0.6)

GENERALIZED_ATTENTION = """
import math
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
class GeneralizedAttention(nn.Module):
    _abbr_ = 'gen_attention_block'
    def __init__(self, in_channels, spatial_range=-1, num_heads=9, position_embedding_dim=-1,
                 position_magnitude=1, kv_stride=2, q_stride=1, attention_type='1111'):
        super().__init__()
        self.position_embedding_dim = position_embedding_dim if position_embedding_dim > 0 else in_channels
        self.position_magnitude = position_magnitude
        self.num_heads = num_heads
        self.in_channels = in_channels
        self.spatial_range = spatial_range
        self.kv_stride = kv_stride
        self.q_stride = q_stride
        self.attention_type = [bool(int(_)) for _ in attention_type]
        assert all(self.attention_type), 'the look-alike has the four-term path only'
        self.qk_embed_dim = in_channels // num_heads
        out_c = self.qk_embed_dim * num_heads
        self.query_conv = nn.Conv2d(in_channels, out_c, kernel_size=1, bias=False)
        self.key_conv = nn.Conv2d(in_channels, out_c, kernel_size=1, bias=False)
        self.v_dim = in_channels // num_heads
        self.value_conv = nn.Conv2d(in_channels, self.v_dim * num_heads, kernel_size=1, bias=False)
        self.appr_geom_fc_x = nn.Linear(self.position_embedding_dim // 2, out_c, bias=False)
        self.appr_geom_fc_y = nn.Linear(self.position_embedding_dim // 2, out_c, bias=False)
        stdv = 1.0 / math.sqrt(self.qk_embed_dim * 2)
        self.appr_bias = nn.Parameter(-2 * stdv * torch.rand(out_c) + stdv)
        self.geom_bias = nn.Parameter(-2 * stdv * torch.rand(out_c) + stdv)
        self.proj_conv = nn.Conv2d(self.v_dim * num_heads, in_channels, kernel_size=1, bias=True)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.q_downsample = nn.AvgPool2d(kernel_size=1, stride=self.q_stride) if self.q_stride > 1 else None
        self.kv_downsample = nn.AvgPool2d(kernel_size=1, stride=self.kv_stride) if self.kv_stride > 1 else None
    def get_position_embedding(self, h, w, h_kv, w_kv, q_stride, kv_stride, device, dtype, feat_dim,
                               wave_length=1000):
        h_idxs = torch.linspace(0, h - 1, h).to(device=device, dtype=dtype)
        h_idxs = h_idxs.view((h, 1)) * q_stride
        w_idxs = torch.linspace(0, w - 1, w).to(device=device, dtype=dtype)
        w_idxs = w_idxs.view((w, 1)) * q_stride
        h_kv_idxs = torch.linspace(0, h_kv - 1, h_kv).to(device=device, dtype=dtype)
        h_kv_idxs = h_kv_idxs.view((h_kv, 1)) * kv_stride
        w_kv_idxs = torch.linspace(0, w_kv - 1, w_kv).to(device=device, dtype=dtype)
        w_kv_idxs = w_kv_idxs.view((w_kv, 1)) * kv_stride
        h_diff = h_idxs.unsqueeze(1) - h_kv_idxs.unsqueeze(0)
        h_diff *= self.position_magnitude
        w_diff = w_idxs.unsqueeze(1) - w_kv_idxs.unsqueeze(0)
        w_diff *= self.position_magnitude
        feat_range = torch.arange(0, feat_dim / 4).to(device=device, dtype=dtype)
        dim_mat = torch.Tensor([wave_length]).to(device=device, dtype=dtype)
        dim_mat = dim_mat**((4. / feat_dim) * feat_range)
        dim_mat = dim_mat.view((1, 1, -1))
        embedding_x = torch.cat(((w_diff / dim_mat).sin(), (w_diff / dim_mat).cos()), dim=2)
        embedding_y = torch.cat(((h_diff / dim_mat).sin(), (h_diff / dim_mat).cos()), dim=2)
        return embedding_x, embedding_y
    def forward(self, x_input):
        num_heads = self.num_heads
        x_q = self.q_downsample(x_input) if self.q_downsample is not None else x_input
        n, _, h, w = x_q.shape
        x_kv = self.kv_downsample(x_input) if self.kv_downsample is not None else x_input
        _, _, h_kv, w_kv = x_kv.shape
        proj_query = self.query_conv(x_q).view((n, num_heads, self.qk_embed_dim, h * w))
        proj_query = proj_query.permute(0, 1, 3, 2)
        proj_key = self.key_conv(x_kv).view((n, num_heads, self.qk_embed_dim, h_kv * w_kv))
        position_embed_x, position_embed_y = self.get_position_embedding(
            h, w, h_kv, w_kv, self.q_stride, self.kv_stride, x_input.device, x_input.dtype,
            self.position_embedding_dim)
        position_feat_x = self.appr_geom_fc_x(position_embed_x).view(1, w, w_kv, num_heads, self.qk_embed_dim)
        position_feat_x = position_feat_x.permute(0, 3, 1, 2, 4).repeat(n, 1, 1, 1, 1)
        position_feat_y = self.appr_geom_fc_y(position_embed_y).view(1, h, h_kv, num_heads, self.qk_embed_dim)
        position_feat_y = position_feat_y.permute(0, 3, 1, 2, 4).repeat(n, 1, 1, 1, 1)
        position_feat_x /= math.sqrt(2)
        position_feat_y /= math.sqrt(2)
        appr_bias = self.appr_bias.view(1, num_heads, 1, self.qk_embed_dim)
        energy = torch.matmul(proj_query + appr_bias, proj_key).view(n, num_heads, h, w, h_kv, w_kv)
        geom_bias = self.geom_bias.view(1, num_heads, 1, self.qk_embed_dim)
        proj_query_reshape = (proj_query + geom_bias).view(n, num_heads, h, w, self.qk_embed_dim)
        energy_x = torch.matmul(proj_query_reshape.permute(0, 1, 3, 2, 4), position_feat_x.permute(0, 1, 2, 4, 3))
        energy_x = energy_x.permute(0, 1, 3, 2, 4).unsqueeze(4)
        energy_y = torch.matmul(proj_query_reshape, position_feat_y.permute(0, 1, 2, 4, 3))
        energy_y = energy_y.unsqueeze(5)
        energy += energy_x + energy_y
        energy = energy.view(n, num_heads, h * w, h_kv * w_kv)
        attention = F.softmax(energy, 3)
        proj_value = self.value_conv(x_kv)
        proj_value_reshape = proj_value.view((n, num_heads, self.v_dim, h_kv * w_kv)).permute(0, 1, 3, 2)
        out = torch.matmul(attention, proj_value_reshape).permute(0, 1, 3, 2).contiguous().view(
            n, self.v_dim * self.num_heads, h, w)
        out = self.proj_conv(out)
        if self.q_downsample is not None:
            out = F.interpolate(out, size=x_input.shape[2:], mode='bilinear', align_corners=False)
        out = self.gamma * out + x_input
        return out
"""


def _forget() -> None:
    for name in [n for n in sys.modules if n.split(".")[0] == "mmcv"]:
        del sys.modules[name]


@pytest.fixture
def generalized(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The look-alike `mmcv.cnn.bricks.generalized_attention`, importable while the test runs."""
    root = tmp_path / "site"
    path = root / "mmcv" / "cnn" / "bricks" / "generalized_attention.py"
    path.parent.mkdir(parents=True)
    path.write_text(GENERALIZED_ATTENTION, encoding="utf-8")
    for folder in path.relative_to(root).parents[:-1]:
        (root / folder / "__init__.py").touch()
    monkeypatch.syspath_prepend(str(root))
    _forget()
    yield __import__("mmcv.cnn.bricks.generalized_attention", fromlist=["_"])
    _forget()


def _net(block: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for parameter in block.parameters():  # well away from zero, so no map comes out flat
        nn.init.normal_(parameter, std=0.5)
    return nn.Sequential(nn.Conv2d(3, 16, 4, 4), block).eval()


def _by_hand(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Per head: softmax over keys (a, b) of (q_ij + u) k_ab + (q_ij + v) (W_x e(j - b) + W_y e(i - a)) / sqrt(2)."""
    n, c, h, w = x.shape
    heads, d = m.num_heads, m.qk_embed_dim
    q = m.query_conv(x).view(n, heads, d, h, w)
    k = m.key_conv(x).view(n, heads, d, h, w)
    u, v = m.appr_bias.view(heads, d), m.geom_bias.view(heads, d)
    offsets_x, offsets_y = m.get_position_embedding(h, w, h, w, 1, 1, x.device, x.dtype, c)
    at_x = (offsets_x @ m.appr_geom_fc_x.weight.T).view(w, w, heads, d) / math.sqrt(2)  # (j, b, head, d)
    at_y = (offsets_y @ m.appr_geom_fc_y.weight.T).view(h, h, heads, d) / math.sqrt(2)  # (i, a, head, d)
    content = torch.einsum("nhdij,nhdab->nhijab", q + u[None, :, :, None, None], k)
    geometry = q + v[None, :, :, None, None]
    along_x = torch.einsum("nhdij,jbhd->nhijb", geometry, at_x)[:, :, :, :, None, :]
    along_y = torch.einsum("nhdij,iahd->nhija", geometry, at_y)[:, :, :, :, :, None]
    energy = (content + along_x + along_y).reshape(n, heads, h * w, h * w)
    return energy.softmax(-1)


def test_recognised_and_equal_to_the_four_terms_by_hand(generalized: ModuleType) -> None:
    net = _net(generalized.GeneralizedAttention(16, num_heads=2, kv_stride=1))
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = net(x)
        report = attach_taps(net, size=SIZE)
        with capture(net) as every_row:
            full = net(x)
        with capture(net, queries=[QUERY]) as asked:
            rows = net(x)
        expected = _by_hand(net[1], net[0](x))
    assert [(m.path, m.how, m.kinds, m.calls) for m in report.recognised] == [("1", "type", ("matrix",), 1)]
    assert report.unrecognised == []
    assert torch.equal(full, plain) and torch.equal(rows, plain)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())
    (whole,), (kept,) = list(every_row), list(asked)
    assert (whole.layer, whole.label, whole.grid, whole.norm) == ("1", "matrix", (8, 8), "softmax")
    assert whole.axes == ("batch", "head", "query", "key") and whole.tensor.shape == (2, 2, 64, 64)
    torch.testing.assert_close(whole.tensor, expected, rtol=1e-5, atol=1e-6)
    assert kept.queries is not None and len(kept.queries) == 1
    torch.testing.assert_close(kept.tensor, whole.tensor[:, :, kept.queries], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("options", [{}, {"kv_stride": 1, "q_stride": 2}, {"kv_stride": 1, "spatial_range": 3}])
def test_strided_or_ranged_attention_is_listed_not_recognised(generalized: ModuleType, options: dict) -> None:
    net = _net(generalized.GeneralizedAttention(16, num_heads=2, **options))  # kv_stride=2 by default
    report = attach_taps(net, size=SIZE)
    assert report.recognised == [] and report.unrecognised == [("1", "GeneralizedAttention")]
