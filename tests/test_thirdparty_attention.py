"""Third-party CNN attention blocks (mmcv, fightingcv's External-Attention-pytorch, segmentation-models-pytorch,
monai): recognised by type, recomputed equal to the module's own intermediate written out by hand, and the outputs
bit-identical with and without capture.

None of these libraries is installed: look-alike packages named as the real ones (`mmcv`, `model`,
`segmentation_models_pytorch`, `monai`) are written to a temporary folder with the forward code of the real
modules, so the adapters' (package, class) keys match.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnviz.blocks.criss_cross import CrissCrossAttention
from attnviz.capture import capture
from attnviz.models.foreign.recognise import attach_taps

SIZE = 32
"""The input side; a stride-4 stem gives the blocks an 8 x 8 grid of 16 channels."""
QUERY = (0.3, 0.6)
pytestmark = pytest.mark.filterwarnings("ignore:Implicit dimension choice for softmax")  # fightingcv's A2-Net

CONTEXT_BLOCK = """
import torch
from torch import nn
class ContextBlock(nn.Module):
    _abbr_ = 'context_block'
    def __init__(self, in_channels, ratio, pooling_type='att', fusion_types=('channel_add',)):
        super().__init__()
        assert pooling_type in ['avg', 'att']
        self.in_channels, self.ratio = in_channels, ratio
        self.planes = int(in_channels * ratio)
        self.pooling_type, self.fusion_types = pooling_type, fusion_types
        if pooling_type == 'att':
            self.conv_mask = nn.Conv2d(in_channels, 1, kernel_size=1)
            self.softmax = nn.Softmax(dim=2)
        else:
            self.avg_pool = nn.AdaptiveAvgPool2d(1)
        def transform():
            return nn.Sequential(nn.Conv2d(self.in_channels, self.planes, kernel_size=1),
                                 nn.LayerNorm([self.planes, 1, 1]), nn.ReLU(inplace=True),
                                 nn.Conv2d(self.planes, self.in_channels, kernel_size=1))
        self.channel_add_conv = transform() if 'channel_add' in fusion_types else None
        self.channel_mul_conv = transform() if 'channel_mul' in fusion_types else None
    def spatial_pool(self, x):
        batch, channel, height, width = x.size()
        if self.pooling_type == 'att':
            input_x = x
            input_x = input_x.view(batch, channel, height * width)
            input_x = input_x.unsqueeze(1)
            context_mask = self.conv_mask(x)
            context_mask = context_mask.view(batch, 1, height * width)
            context_mask = self.softmax(context_mask)
            context_mask = context_mask.unsqueeze(-1)
            context = torch.matmul(input_x, context_mask)
            context = context.view(batch, channel, 1, 1)
        else:
            context = self.avg_pool(x)
        return context
    def forward(self, x):
        context = self.spatial_pool(x)
        out = x
        if self.channel_mul_conv is not None:
            channel_mul_term = torch.sigmoid(self.channel_mul_conv(context))
            out = out * channel_mul_term
        if self.channel_add_conv is not None:
            channel_add_term = self.channel_add_conv(context)
            out = out + channel_add_term
        return out
"""

NON_LOCAL = """
import torch
from torch import nn
class ConvModule(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, conv_cfg=None, norm_cfg=None, act_cfg=None):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size)
        self.bn = nn.BatchNorm2d(out_channels) if norm_cfg else None
        self.activate = nn.ReLU() if act_cfg else None
    def forward(self, x):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.activate(x) if self.activate is not None else x
class _NonLocalNd(nn.Module):
    def __init__(self, in_channels, reduction=2, use_scale=True, conv_cfg=None, norm_cfg=None,
                 mode='embedded_gaussian', **kwargs):
        super().__init__()
        self.in_channels, self.reduction, self.use_scale = in_channels, reduction, use_scale
        self.inter_channels = max(in_channels // reduction, 1)
        self.mode = mode
        self.g = ConvModule(self.in_channels, self.inter_channels, kernel_size=1, conv_cfg=conv_cfg, act_cfg=None)
        self.conv_out = ConvModule(self.inter_channels, self.in_channels, kernel_size=1, conv_cfg=conv_cfg,
                                   norm_cfg=norm_cfg, act_cfg=None)
        if self.mode != 'gaussian':
            self.theta = ConvModule(self.in_channels, self.inter_channels, kernel_size=1, conv_cfg=conv_cfg,
                                    act_cfg=None)
            self.phi = ConvModule(self.in_channels, self.inter_channels, kernel_size=1, conv_cfg=conv_cfg,
                                  act_cfg=None)
    def gaussian(self, theta_x, phi_x):
        pairwise_weight = torch.matmul(theta_x, phi_x)
        pairwise_weight = pairwise_weight.softmax(dim=-1)
        return pairwise_weight
    def embedded_gaussian(self, theta_x, phi_x):
        pairwise_weight = torch.matmul(theta_x, phi_x)
        if self.use_scale:
            pairwise_weight /= torch.tensor(
                theta_x.shape[-1], dtype=torch.float, device=pairwise_weight.device
            ) ** torch.tensor(0.5, device=pairwise_weight.device)
        pairwise_weight = pairwise_weight.softmax(dim=-1)
        return pairwise_weight
    def dot_product(self, theta_x, phi_x):
        pairwise_weight = torch.matmul(theta_x, phi_x)
        pairwise_weight /= pairwise_weight.shape[-1]
        return pairwise_weight
    def forward(self, x):
        n = x.size(0)
        g_x = self.g(x).view(n, self.inter_channels, -1)
        g_x = g_x.permute(0, 2, 1)
        if self.mode == 'gaussian':
            theta_x = x.view(n, self.in_channels, -1)
            theta_x = theta_x.permute(0, 2, 1)
            if self.sub_sample:
                phi_x = self.phi(x).view(n, self.in_channels, -1)
            else:
                phi_x = x.view(n, self.in_channels, -1)
        else:
            theta_x = self.theta(x).view(n, self.inter_channels, -1)
            theta_x = theta_x.permute(0, 2, 1)
            phi_x = self.phi(x).view(n, self.inter_channels, -1)
        pairwise_func = getattr(self, self.mode)
        pairwise_weight = pairwise_func(theta_x, phi_x)
        y = torch.matmul(pairwise_weight, g_x)
        y = y.permute(0, 2, 1).contiguous().reshape(n, self.inter_channels, *x.size()[2:])
        output = x + self.conv_out(y)
        return output
class NonLocal2d(_NonLocalNd):
    _abbr_ = 'nonlocal_block'
    def __init__(self, in_channels, sub_sample=False, conv_cfg=dict(type='Conv2d'), **kwargs):
        super().__init__(in_channels, conv_cfg=conv_cfg, **kwargs)
        self.sub_sample = sub_sample
        if sub_sample:
            max_pool_layer = nn.MaxPool2d(kernel_size=(2, 2))
            self.g = nn.Sequential(self.g, max_pool_layer)
            if self.mode != 'gaussian':
                self.phi = nn.Sequential(self.phi, max_pool_layer)
            else:
                self.phi = max_pool_layer
"""

CRISS_CROSS = """
import torch
import torch.nn as nn
from torch.nn import Softmax
def INF(B, H, W):
    return -torch.diag(torch.tensor(float("inf")).repeat(H), 0).unsqueeze(0).repeat(B * W, 1, 1)
class CrissCrossAttention(nn.Module):
    def __init__(self, in_dim):
        super(CrissCrossAttention, self).__init__()
        self.query_conv = nn.Conv2d(in_channels=in_dim, out_channels=in_dim // 8, kernel_size=1)
        self.key_conv = nn.Conv2d(in_channels=in_dim, out_channels=in_dim // 8, kernel_size=1)
        self.value_conv = nn.Conv2d(in_channels=in_dim, out_channels=in_dim, kernel_size=1)
        self.softmax = Softmax(dim=3)
        self.INF = INF
        self.gamma = nn.Parameter(torch.zeros(1))
    def forward(self, x):
        m_batchsize, _, height, width = x.size()
        proj_query = self.query_conv(x)
        proj_query_H = proj_query.permute(0, 3, 1, 2).contiguous().view(m_batchsize * width, -1, height)\
            .permute(0, 2, 1)
        proj_query_W = proj_query.permute(0, 2, 1, 3).contiguous().view(m_batchsize * height, -1, width)\
            .permute(0, 2, 1)
        proj_key = self.key_conv(x)
        proj_key_H = proj_key.permute(0, 3, 1, 2).contiguous().view(m_batchsize * width, -1, height)
        proj_key_W = proj_key.permute(0, 2, 1, 3).contiguous().view(m_batchsize * height, -1, width)
        proj_value = self.value_conv(x)
        proj_value_H = proj_value.permute(0, 3, 1, 2).contiguous().view(m_batchsize * width, -1, height)
        proj_value_W = proj_value.permute(0, 2, 1, 3).contiguous().view(m_batchsize * height, -1, width)
        energy_H = (torch.bmm(proj_query_H, proj_key_H) + self.INF(m_batchsize, height, width)).view(
            m_batchsize, width, height, height).permute(0, 2, 1, 3)
        energy_W = torch.bmm(proj_query_W, proj_key_W).view(m_batchsize, height, width, width)
        concate = self.softmax(torch.cat([energy_H, energy_W], 3))
        att_H = concate[:, :, :, 0:height].permute(0, 2, 1, 3).contiguous().view(m_batchsize * width, height, height)
        att_W = concate[:, :, :, height:height + width].contiguous().view(m_batchsize * height, width, width)
        out_H = torch.bmm(proj_value_H, att_H.permute(0, 2, 1)).view(m_batchsize, width, -1, height).permute(0, 2, 3, 1)
        out_W = torch.bmm(proj_value_W, att_W.permute(0, 2, 1)).view(m_batchsize, height, -1, width).permute(0, 2, 1, 3)
        return self.gamma * (out_H + out_W) + x
"""

DOUBLE_ATTENTION = """
import torch
from torch import nn
from torch.nn import functional as F
class DoubleAttention(nn.Module):
    def __init__(self, in_channels, c_m, c_n, reconstruct=True):
        super().__init__()
        self.in_channels, self.reconstruct, self.c_m, self.c_n = in_channels, reconstruct, c_m, c_n
        self.convA = nn.Conv2d(in_channels, c_m, 1)
        self.convB = nn.Conv2d(in_channels, c_n, 1)
        self.convV = nn.Conv2d(in_channels, c_n, 1)
        if self.reconstruct:
            self.conv_reconstruct = nn.Conv2d(c_m, in_channels, kernel_size=1)
    def forward(self, x):
        b, c, h, w = x.shape
        assert c == self.in_channels
        A = self.convA(x)
        B = self.convB(x)
        V = self.convV(x)
        tmpA = A.view(b, self.c_m, -1)
        attention_maps = F.softmax(B.view(b, self.c_n, -1))
        attention_vectors = F.softmax(V.view(b, self.c_n, -1))
        global_descriptors = torch.bmm(tmpA, attention_maps.permute(0, 2, 1))
        tmpZ = global_descriptors.matmul(attention_vectors)
        tmpZ = tmpZ.view(b, self.c_m, h, w)
        if self.reconstruct:
            tmpZ = self.conv_reconstruct(tmpZ)
        return tmpZ
"""

SELF_ATTENTION = """
import numpy as np
import torch
from torch import nn
class ScaledDotProductAttention(nn.Module):
    def __init__(self, d_model, d_k, d_v, h, dropout=.1):
        super().__init__()
        self.fc_q = nn.Linear(d_model, h * d_k)
        self.fc_k = nn.Linear(d_model, h * d_k)
        self.fc_v = nn.Linear(d_model, h * d_v)
        self.fc_o = nn.Linear(h * d_v, d_model)
        self.dropout = nn.Dropout(dropout)
        self.d_model, self.d_k, self.d_v, self.h = d_model, d_k, d_v, h
    def forward(self, queries, keys, values, attention_mask=None, attention_weights=None):
        b_s, nq = queries.shape[:2]
        nk = keys.shape[1]
        q = self.fc_q(queries).view(b_s, nq, self.h, self.d_k).permute(0, 2, 1, 3)
        k = self.fc_k(keys).view(b_s, nk, self.h, self.d_k).permute(0, 2, 3, 1)
        v = self.fc_v(values).view(b_s, nk, self.h, self.d_v).permute(0, 2, 1, 3)
        att = torch.matmul(q, k) / np.sqrt(self.d_k)
        if attention_weights is not None:
            att = att * attention_weights
        if attention_mask is not None:
            att = att.masked_fill(attention_mask, -np.inf)
        att = torch.softmax(att, -1)
        att = self.dropout(att)
        out = torch.matmul(att, v).permute(0, 2, 1, 3).contiguous().view(b_s, nq, self.h * self.d_v)
        out = self.fc_o(out)
        return out
"""

SIMPLIFIED_SELF_ATTENTION = (
    SELF_ATTENTION.replace("class ScaledDot", "class _Unused")
    + """
class SimplifiedScaledDotProductAttention(nn.Module):
    def __init__(self, d_model, h, dropout=.1):
        super().__init__()
        self.d_model, self.d_k, self.d_v, self.h = d_model, d_model // h, d_model // h, h
        self.fc_o = nn.Linear(h * self.d_v, d_model)
        self.dropout = nn.Dropout(dropout)
    def forward(self, queries, keys, values, attention_mask=None, attention_weights=None):
        b_s, nq = queries.shape[:2]
        nk = keys.shape[1]
        q = queries.view(b_s, nq, self.h, self.d_k).permute(0, 2, 1, 3)
        k = keys.view(b_s, nk, self.h, self.d_k).permute(0, 2, 3, 1)
        v = values.view(b_s, nk, self.h, self.d_v).permute(0, 2, 1, 3)
        att = torch.matmul(q, k) / np.sqrt(self.d_k)
        if attention_weights is not None:
            att = att * attention_weights
        if attention_mask is not None:
            att = att.masked_fill(attention_mask, -np.inf)
        att = torch.softmax(att, -1)
        att = self.dropout(att)
        out = torch.matmul(att, v).permute(0, 2, 1, 3).contiguous().view(b_s, nq, self.h * self.d_v)
        out = self.fc_o(out)
        return out
"""
)

DANET = """
from torch import nn
from model.attention.SelfAttention import ScaledDotProductAttention
from model.attention.SimplifiedSelfAttention import SimplifiedScaledDotProductAttention
class PositionAttentionModule(nn.Module):
    def __init__(self, d_model=512, kernel_size=3, H=7, W=7):
        super().__init__()
        self.cnn = nn.Conv2d(d_model, d_model, kernel_size=kernel_size, padding=(kernel_size - 1) // 2)
        self.pa = ScaledDotProductAttention(d_model, d_k=d_model, d_v=d_model, h=1)
    def forward(self, x):
        bs, c, h, w = x.shape
        y = self.cnn(x)
        y = y.view(bs, c, -1).permute(0, 2, 1)
        y = self.pa(y, y, y)
        return y
class ChannelAttentionModule(nn.Module):
    def __init__(self, d_model=512, kernel_size=3, H=7, W=7):
        super().__init__()
        self.cnn = nn.Conv2d(d_model, d_model, kernel_size=kernel_size, padding=(kernel_size - 1) // 2)
        self.pa = SimplifiedScaledDotProductAttention(H * W, h=1)
    def forward(self, x):
        bs, c, h, w = x.shape
        y = self.cnn(x)
        y = y.view(bs, c, -1)
        y = self.pa(y, y, y)
        return y
class DAModule(nn.Module):
    def __init__(self, d_model=512, kernel_size=3, H=7, W=7):
        super().__init__()
        self.position_attention_module = PositionAttentionModule(d_model=d_model, kernel_size=3, H=H, W=W)
        self.channel_attention_module = ChannelAttentionModule(d_model=d_model, kernel_size=3, H=H, W=W)
    def forward(self, input):
        bs, c, h, w = input.shape
        p_out = self.position_attention_module(input)
        c_out = self.channel_attention_module(input)
        p_out = p_out.permute(0, 2, 1).view(bs, c, h, w)
        c_out = c_out.view(bs, c, h, w)
        return p_out + c_out
"""

MANET = """
import torch
from torch import nn
class PABBlock(nn.Module):
    def __init__(self, in_channels, pab_channels=64):
        super(PABBlock, self).__init__()
        self.pab_channels, self.in_channels = pab_channels, in_channels
        self.top_conv = nn.Conv2d(in_channels, pab_channels, kernel_size=1)
        self.center_conv = nn.Conv2d(in_channels, pab_channels, kernel_size=1)
        self.bottom_conv = nn.Conv2d(in_channels, in_channels, kernel_size=3, padding=1)
        self.map_softmax = nn.Softmax(dim=1)
        self.out_conv = nn.Conv2d(in_channels, in_channels, kernel_size=3, padding=1)
    def forward(self, x):
        bsize = x.size()[0]
        h = x.size()[2]
        w = x.size()[3]
        x_top = self.top_conv(x)
        x_center = self.center_conv(x)
        x_bottom = self.bottom_conv(x)
        x_top = x_top.flatten(2)
        x_center = x_center.flatten(2).transpose(1, 2)
        x_bottom = x_bottom.flatten(2).transpose(1, 2)
        sp_map = torch.matmul(x_center, x_top)
        sp_map = self.map_softmax(sp_map.view(bsize, -1)).view(bsize, h * w, h * w)
        sp_map = torch.matmul(sp_map, x_bottom)
        sp_map = sp_map.reshape(bsize, self.in_channels, h, w)
        x = x + sp_map
        x = self.out_conv(x)
        return x
"""

MONAI_SE = """
import torch
from torch import nn
ACT = {"relu": nn.ReLU, "leakyrelu": nn.LeakyReLU, "sigmoid": nn.Sigmoid}
def split_args(args):
    return (args, {}) if isinstance(args, str) else args
class ChannelSELayer(nn.Module):
    def __init__(self, spatial_dims, in_channels, r=2, acti_type_1=("relu", {"inplace": True}),
                 acti_type_2="sigmoid", add_residual=False):
        super().__init__()
        self.add_residual = add_residual
        self.avg_pool = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)[spatial_dims - 1](1)
        channels = int(in_channels // r)
        if channels <= 0:
            raise ValueError(f"r must be positive and smaller than in_channels, got r={r} in_channels={in_channels}.")
        act_1, act_1_args = split_args(acti_type_1)
        act_2, act_2_args = split_args(acti_type_2)
        self.fc = nn.Sequential(
            nn.Linear(in_channels, channels, bias=True),
            ACT[act_1](**act_1_args),
            nn.Linear(channels, in_channels, bias=True),
            ACT[act_2](**act_2_args),
        )
    def forward(self, x):
        b, c = x.shape[:2]
        y = self.avg_pool(x).view(b, c)
        y = self.fc(y).view([b, c] + [1] * (x.ndim - 2))
        result = x * y
        if self.add_residual:
            result += x
        return result
class ResidualSELayer(ChannelSELayer):
    def __init__(self, spatial_dims, in_channels, r=2, acti_type_1="leakyrelu", acti_type_2="relu"):
        super().__init__(spatial_dims=spatial_dims, in_channels=in_channels, r=r, acti_type_1=acti_type_1,
                         acti_type_2=acti_type_2, add_residual=True)
"""

PACKAGES = {
    "mmcv/cnn/bricks/context_block.py": CONTEXT_BLOCK,
    "mmcv/cnn/bricks/non_local.py": NON_LOCAL,
    "model/attention/CrissCrossAttention.py": CRISS_CROSS,
    "model/attention/A2Atttention.py": DOUBLE_ATTENTION,
    "model/attention/SelfAttention.py": SELF_ATTENTION,
    "model/attention/SimplifiedSelfAttention.py": SIMPLIFIED_SELF_ATTENTION,
    "model/attention/DANet.py": DANET,
    "segmentation_models_pytorch/decoders/manet/decoder.py": MANET,
    "monai/networks/blocks/squeeze_and_excitation.py": MONAI_SE,
}
"""The look-alikes, at the real modules' paths."""
TOP_LEVEL = ("mmcv", "model", "segmentation_models_pytorch", "monai")


def _forget() -> None:
    for name in [n for n in sys.modules if n.split(".")[0] in TOP_LEVEL]:
        del sys.modules[name]


@pytest.fixture
def mods(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, ModuleType]]:
    """The look-alike modules by file name, importable while the test runs and forgotten after it."""
    root = tmp_path / "site"
    for name, source in PACKAGES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
        for folder in path.relative_to(root).parents[:-1]:
            (root / folder / "__init__.py").touch()
    monkeypatch.syspath_prepend(str(root))
    _forget()
    names = [Path(name).with_suffix("").as_posix().replace("/", ".") for name in PACKAGES]
    yield {name.rpartition(".")[2]: __import__(name, fromlist=["_"]) for name in names}
    _forget()


Expected = Callable[[nn.Module, torch.Tensor], dict[str, torch.Tensor]]


def _context(m: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    b, c, h, w = x.shape
    mask = F.softmax(m.conv_mask(x).view(b, 1, h * w), dim=2)
    context = (x.view(b, c, h * w) @ mask.transpose(1, 2)).view(b, c, 1, 1)
    return {"context": mask.view(b, h, w), "channel": torch.sigmoid(m.channel_mul_conv(context)).view(b, c)}


def _non_local(m: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    b, n = x.shape[0], x.shape[2] * x.shape[3]
    theta, phi = m.theta(x).view(b, -1, n), m.phi(x).view(b, -1, n)
    logits = theta.transpose(1, 2) @ phi
    if m.mode == "dot_product":
        return {"matrix": (logits / n).unsqueeze(1)}
    return {"matrix": (logits / math.sqrt(theta.shape[1])).softmax(-1).unsqueeze(1)}


def _criss_cross(m: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"matrix": CrissCrossAttention.criss_cross_weights(m.query_conv(x), m.key_conv(x))}


def _double(m: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    b, _, h, w = x.shape
    with warnings.catch_warnings():  # the module's own call: F.softmax with no dim (dim 0 for a 3-D tensor)
        warnings.simplefilter("ignore")
        gather = F.softmax(m.convB(x).view(b, m.c_n, -1)).view(b, m.c_n, h, w)
        distribute = F.softmax(m.convV(x).view(b, m.c_n, -1)).view(b, m.c_n, h, w)
    torch.testing.assert_close(gather.sum(0), torch.ones_like(gather[0]))  # over the batch, as the module does
    return {"gather": gather, "distribute": distribute}


def _pam(m: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    y = m.cnn(x).flatten(2).transpose(1, 2)  # (B, N, C)
    q, k = m.pa.fc_q(y), m.pa.fc_k(y)
    return {"matrix": (q @ k.transpose(1, 2) / math.sqrt(q.shape[-1])).softmax(-1).unsqueeze(1)}


def _cam(m: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    y = m.cnn(x).flatten(2)  # (B, C, N)
    return {"channel": (y @ y.transpose(1, 2) / math.sqrt(y.shape[-1])).softmax(-1).unsqueeze(1)}


def _pab(m: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    b, n = x.shape[0], x.shape[2] * x.shape[3]
    logits = m.center_conv(x).flatten(2).transpose(1, 2) @ m.top_conv(x).flatten(2)
    return {"matrix": logits.reshape(b, -1).softmax(-1).view(b, 1, n, n)}


def _se(m: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"channel": m.fc(x.mean((2, 3)))}


CASES: dict[str, tuple[Callable[[dict[str, ModuleType]], nn.Module], tuple[str, ...], tuple[str, ...], Expected]] = {
    "ContextBlock": (
        lambda p: p["context_block"].ContextBlock(16, 0.25, "att", ("channel_add", "channel_mul")),
        ("spatial", "channel"),
        ("context", "channel"),
        _context,
    ),
    "NonLocal2d": (lambda p: p["non_local"].NonLocal2d(16), ("matrix",), ("matrix",), _non_local),
    "NonLocal2d-dot": (
        lambda p: p["non_local"].NonLocal2d(16, mode="dot_product"),
        ("matrix",),
        ("matrix",),
        _non_local,
    ),
    "CrissCrossAttention": (
        lambda p: p["CrissCrossAttention"].CrissCrossAttention(16),
        ("matrix",),
        ("matrix",),
        _criss_cross,
    ),
    "DoubleAttention": (
        lambda p: p["A2Atttention"].DoubleAttention(16, 8, 4),
        ("spatial",),
        ("gather", "distribute"),
        _double,
    ),
    "PositionAttentionModule": (
        lambda p: p["DANet"].PositionAttentionModule(16, H=8, W=8),
        ("matrix",),
        ("matrix",),
        _pam,
    ),
    "ChannelAttentionModule": (
        lambda p: p["DANet"].ChannelAttentionModule(16, H=8, W=8),
        ("matrix",),
        ("channel",),
        _cam,
    ),
    "PABBlock": (lambda p: p["decoder"].PABBlock(16, 8), ("matrix",), ("matrix",), _pab),
    "ChannelSELayer": (
        lambda p: p["squeeze_and_excitation"].ChannelSELayer(2, 16),
        ("channel",),
        ("channel",),
        _se,
    ),
    "ResidualSELayer": (
        lambda p: p["squeeze_and_excitation"].ResidualSELayer(2, 16),
        ("channel",),
        ("channel",),
        _se,
    ),
}
"""Case -> (the block, its kinds, its tap labels, its attention computed by hand from its weights)."""


def _net(block: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for parameter in block.parameters():  # well away from zero, so no map comes out flat
        nn.init.normal_(parameter, std=0.5)
    return nn.Sequential(nn.Conv2d(3, 16, 4, 4), block).eval()


def _image() -> torch.Tensor:
    return torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("case", list(CASES))
def test_recognised_by_type_with_its_kinds(case: str, mods: dict[str, ModuleType]) -> None:
    build, kinds, labels, _ = CASES[case]
    report = attach_taps(_net(build(mods)), size=SIZE)
    assert [(m.path, m.how, m.kinds, m.calls) for m in report.recognised] == [("1", "type", kinds, 1)]
    assert [t.label for t in report.recognised[0].taps] == list(labels)
    assert report.unrecognised == []


@pytest.mark.parametrize("case", list(CASES))
def test_maps_equal_the_modules_own_and_outputs_bit_identical(case: str, mods: dict[str, ModuleType]) -> None:
    build, _, labels, by_hand = CASES[case]
    net = _net(build(mods))
    x = _image()
    with torch.no_grad():
        plain = net(x)
        attach_taps(net, size=SIZE)
        with capture(net) as every_row:
            full = net(x)
        with capture(net, queries=[QUERY]) as asked:
            rows = net(x)
        expected = by_hand(net[1], net[0](x))
    assert torch.equal(full, plain) and torch.equal(rows, plain)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())
    assert [(m.layer, m.label) for m in every_row] == [("1", label) for label in labels]
    for whole, kept in zip(every_row, asked, strict=True):
        torch.testing.assert_close(whole.tensor, expected[whole.label], rtol=1e-5, atol=1e-6)
        if whole.kind == "matrix" and whole.grid is not None:  # only the asked rows, equal to the full ones
            assert kept.queries is not None and len(kept.queries) == 1
            torch.testing.assert_close(kept.tensor, whole.tensor[:, :, kept.queries], rtol=1e-5, atol=1e-6)
        else:
            assert torch.equal(kept.tensor, whole.tensor)


def test_a_subclass_with_its_own_forward_and_unsupported_modes_are_listed_not_recognised(
    mods: dict[str, ModuleType],
) -> None:
    class DoubledAttention(mods["DANet"].PositionAttentionModule):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) * 2

    for block, name in (
        (DoubledAttention(16, H=8, W=8), "DoubledAttention"),
        (mods["non_local"].NonLocal2d(16, sub_sample=True), "NonLocal2d"),
    ):
        report = attach_taps(_net(block), size=SIZE)
        assert report.recognised == [] and report.unrecognised == [("1", name)]
