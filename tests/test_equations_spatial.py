"""scSE, triplet, SimAM, GAM, shuffle, ASFF, FPN and the temporal gate on fixed weights: the tapped attention (and
where cheap the output) equals the paper's equation written out independently with plain torch ops."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from attnviz.blocks.base import create_block
from attnviz.blocks.shuffle import channel_shuffle_index
from attnviz.errors import BlockConfigError
from tests.tap_utils import record_taps


def _fixed(module: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Random weights and random BatchNorm statistics, in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
        for sub in module.modules():
            if isinstance(sub, torch.nn.BatchNorm2d):
                sub.running_mean.copy_(torch.randn(sub.running_mean.shape, generator=generator) * 0.2)
                sub.running_var.copy_(torch.rand(sub.running_var.shape, generator=generator) + 0.5)
    return module.eval()


def _bn(z: torch.Tensor, bn: torch.nn.BatchNorm2d) -> torch.Tensor:
    """Eval-mode batch norm written out."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return (z - bn.running_mean[:, None, None]) * scale[:, None, None] + bn.bias[:, None, None]


def _conv_bn_act(x: torch.Tensor, cna: torch.nn.Sequential, *, stride: int = 1, act: bool = True) -> torch.Tensor:
    conv = cna[0]
    z = _bn(F.conv2d(x, conv.weight, stride=stride, padding=conv.kernel_size[0] // 2), cna[1])
    return torch.relu(z) if act else z


# ------------------------------------------------------------------------------------------------------------ ASFF


def _pyramid(sizes: list[tuple[int, int]], channels: int = 8, batch: int = 2) -> list[torch.Tensor]:
    return [torch.randn(batch, channels, h, w) for h, w in sizes]


@pytest.mark.parametrize("level", [0, 1, 2])
def test_asff_level_weights_match_paper_equation(level: int) -> None:
    block = _fixed(create_block("asff", 8, level=level, compress=4))
    features = _pyramid([(12, 10), (6, 5), (3, 3)])
    with record_taps(block) as fired, torch.no_grad():
        y = block(features)
        size = tuple(features[level].shape[-2:])
        resized = [resize(f, size) for resize, f in zip(block.resize, features, strict=True)]
    compressed = torch.cat([_conv_bn_act(r, cna) for r, cna in zip(resized, block.compress, strict=True)], dim=1)
    logits = F.conv2d(compressed, block.weight_logits.weight, block.weight_logits.bias)
    weights = logits.exp() / logits.exp().sum(dim=1, keepdim=True)
    (tap,) = fired
    assert tap.tap.kind == "level" and tap.value.shape == (2, 3, *size)
    torch.testing.assert_close(tap.value, weights)
    fused = sum(weights[:, n : n + 1] * r for n, r in enumerate(resized))
    torch.testing.assert_close(y, _conv_bn_act(fused, block.expand))
    assert resized[level] is features[level]


def _nearest(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    rows = [i * x.shape[-2] // size[0] for i in range(size[0])]
    cols = [j * x.shape[-1] // size[1] for j in range(size[1])]
    return x[:, :, rows][:, :, :, cols]


def test_asff_resizes_levels_as_in_paper() -> None:
    p3, p4, p5 = _pyramid([(12, 10), (6, 5), (3, 3)])
    fine = _fixed(create_block("asff", 8, level=0))
    with torch.no_grad():
        up4, up5 = fine.resize[1](p4, (12, 10)), fine.resize[2](p5, (12, 10))
    torch.testing.assert_close(up4, _nearest(_conv_bn_act(p4, fine.resize[1].conv), (12, 10)))
    torch.testing.assert_close(up5, _nearest(_conv_bn_act(p5, fine.resize[2].conv), (12, 10)))
    coarse = _fixed(create_block("asff", 8, level=2))
    with torch.no_grad():
        down3, down4 = coarse.resize[0](p3, (3, 3)), coarse.resize[1](p4, (3, 3))
    pooled = F.max_pool2d(p3, 3, stride=2, padding=1)
    torch.testing.assert_close(down3, _conv_bn_act(pooled, coarse.resize[0].conv, stride=2))
    torch.testing.assert_close(down4, _conv_bn_act(p4, coarse.resize[1].conv, stride=2))


@pytest.mark.parametrize("level", [0, 1, 2])
@pytest.mark.parametrize("sizes", [[(12, 10), (6, 5), (3, 3)], [(13, 11), (7, 6), (4, 3)], [(15, 9), (7, 4), (5, 3)]])
def test_asff_output_has_the_size_of_its_level(level: int, sizes: list[tuple[int, int]]) -> None:
    block = create_block("asff", 8, level=level).eval()
    with torch.no_grad():
        y = block(_pyramid(sizes))
    assert y.shape == (2, 8, *sizes[level])
    assert torch.isfinite(y).all()


def test_asff_rejects_bad_options_and_inputs() -> None:
    with pytest.raises(BlockConfigError, match="level"):
        create_block("asff", 8, level=3)
    with pytest.raises(BlockConfigError, match="3 pyramid levels"):
        create_block("asff", 8).eval()(_pyramid([(8, 8), (4, 4)]))


# --------------------------------------------------------------------------------------------------------- triplet


def _triplet_gate(rotated: torch.Tensor, gate: torch.nn.Module) -> torch.Tensor:
    pooled = torch.stack([rotated.max(dim=1).values, rotated.mean(dim=1)], dim=1)
    k = gate.conv.kernel_size[0]
    return torch.sigmoid(_bn(F.conv2d(pooled, gate.conv.weight, padding=k // 2), gate.norm))[:, 0]


@pytest.mark.parametrize("kernel", [3, 7])
def test_triplet_branches_match_paper_equation(kernel: int) -> None:
    block = _fixed(create_block("triplet", 6, kernel_size=kernel))
    x = torch.randn(2, 6, 9, 13)
    with record_taps(block) as fired, torch.no_grad():
        y = block(x)
    gate_cw = _triplet_gate(x.transpose(1, 2), block.cw)  # (B, H, C, W) -> gate over (C, W)
    gate_hc = _triplet_gate(x.permute(0, 3, 2, 1), block.hc)  # (B, W, H, C) -> gate over (H, C)
    gate_hw = _triplet_gate(x, block.hw)  # (B, C, H, W) -> gate over (H, W)
    assert [f.tap.label for f in fired] == ["cw", "hc", "hw"]
    for f, expected in zip(fired, (gate_cw, gate_hc, gate_hw), strict=True):
        torch.testing.assert_close(f.value, expected)
    out_cw = x * gate_cw[:, :, None, :]
    out_hc = x * gate_hc.permute(0, 2, 1)[:, :, :, None]
    out_hw = x * gate_hw[:, None]
    torch.testing.assert_close(y, (out_cw + out_hc + out_hw) / 3)


def test_triplet_on_one_by_one_maps_and_without_spatial_branch() -> None:
    x = torch.randn(1, 5, 1, 1)
    block = create_block("triplet", 5)
    for train in (True, False):
        assert torch.isfinite(block.train(train)(x)).all()
    two = create_block("triplet", 5, no_spatial=True).eval()
    with record_taps(two) as fired, torch.no_grad():
        two(torch.randn(2, 5, 4, 3))
    assert [f.tap.label for f in fired] == ["cw", "hc"]


# ----------------------------------------------------------------------------------------------------------- SimAM


def test_simam_gate_matches_closed_form() -> None:
    block = create_block("simam", 4, e_lambda=1e-3)
    x = torch.randn(2, 4, 7, 10)
    with record_taps(block) as fired:
        y = block(x)
    variance = x.var(dim=(2, 3), unbiased=True, keepdim=True)  # sum of squared deviations / (H*W - 1)
    inverse_energy = (x - x.mean(dim=(2, 3), keepdim=True)) ** 2 / (4 * (variance + 1e-3)) + 0.5
    expected = 1 / (1 + torch.exp(-inverse_energy))
    (tap,) = fired
    torch.testing.assert_close(tap.value, expected)
    torch.testing.assert_close(y, x * expected)


@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (2, 3, 1, 1), (1, 1, 1, 7)])
def test_simam_constant_input_gives_sigmoid_half(shape: tuple[int, ...]) -> None:
    block = create_block("simam", shape[1])
    with record_taps(block) as fired:
        block(torch.full(shape, 2.5))
    torch.testing.assert_close(fired[0].value, torch.full(shape, 1 / (1 + math.exp(-0.5))))


def test_simam_passes_gradient_to_its_input() -> None:
    x = torch.randn(2, 3, 6, 5, requires_grad=True)
    (create_block("simam", 3)(x) * torch.randn(2, 3, 6, 5)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------------- scSE and GAM


@pytest.mark.parametrize("combine", ["add", "max"])
def test_scse_matches_paper_equation(combine: str) -> None:
    block = _fixed(create_block("scse", 16, reduction=4, combine=combine))
    x = torch.randn(2, 16, 5, 7)
    with record_taps(block) as fired, torch.no_grad():
        y = block(x)
    fc1, fc2, conv = block.channel.fc1, block.channel.fc2, block.spatial.conv
    c = torch.sigmoid(torch.relu(x.mean(dim=(2, 3)) @ fc1.weight.T + fc1.bias) @ fc2.weight.T + fc2.bias)
    s = torch.sigmoid(torch.einsum("bchw,c->bhw", x, conv.weight.flatten()) + conv.bias)
    channel_tap, spatial_tap = fired
    torch.testing.assert_close(channel_tap.value, c)
    torch.testing.assert_close(spatial_tap.value, s)
    by_channel, by_pixel = x * c[:, :, None, None], x * s[:, None]
    expected = by_channel + by_pixel if combine == "add" else torch.maximum(by_channel, by_pixel)
    torch.testing.assert_close(y, expected)


def test_gam_matches_paper_equation() -> None:
    block = _fixed(create_block("gam", 16, reduction=4, min_hidden=1, kernel_size=3))
    x = torch.randn(2, 16, 6, 5)
    with record_taps(block) as fired, torch.no_grad():
        y = block(x)
    lin1, lin2 = block.channel.mlp[0], block.channel.mlp[2]
    hidden = torch.relu(torch.einsum("bchw,kc->bkhw", x, lin1.weight) + lin1.bias[:, None, None])
    m_c = torch.sigmoid(torch.einsum("bkhw,ck->bchw", hidden, lin2.weight) + lin2.bias[:, None, None])
    x1 = x * m_c
    m_s = torch.sigmoid(_conv_bn_act(_conv_bn_act(x1, block.spatial.squeeze), block.spatial.expand, act=False))
    channel_tap, spatial_tap = fired
    assert block.spatial.squeeze[0].out_channels == 4
    torch.testing.assert_close(channel_tap.value, m_c)
    torch.testing.assert_close(spatial_tap.value, m_s)
    torch.testing.assert_close(y, x1 * m_s)


# --------------------------------------------------------------------------------------------------------- shuffle


def _shuffle_reference(x: torch.Tensor, block: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per group: channel half gated by its pooled mean, spatial half by its per-channel standardised map."""
    m = x.shape[1] // block.groups
    half = math.ceil(m / 2)
    cw, cb = block.cweight.flatten()[:, None, None], block.cbias.flatten()[:, None, None]
    sw, sb = block.sweight.flatten()[:, None, None], block.sbias.flatten()[:, None, None]
    channel_gates, spatial_gates, parts = [], [], []
    for g in range(block.groups):
        group = x[:, g * m : (g + 1) * m]
        first, second = group[:, :half], group[:, half:]
        c_gate = torch.sigmoid(cw * first.mean(dim=(2, 3), keepdim=True)[..., 0, 0, None, None] + cb)
        spatial_in = second if m > 1 else first
        std = torch.sqrt(spatial_in.var(dim=(2, 3), unbiased=False, keepdim=True) + block.norm.eps)
        s_gate = torch.sigmoid(sw * (spatial_in - spatial_in.mean(dim=(2, 3), keepdim=True)) / std + sb)
        channel_gates.append(c_gate[:, :, 0, 0])
        spatial_gates.append(s_gate)
        parts += [first * c_gate, second * s_gate] if m > 1 else [first * c_gate * s_gate]
    return torch.cat(channel_gates, 1), torch.cat(spatial_gates, 1), torch.cat(parts, 1)


@pytest.mark.parametrize(("channels", "groups"), [(1, 1), (3, 1), (6, 3), (64, 8)])
def test_shuffle_matches_paper_equation(channels: int, groups: int) -> None:
    block = _fixed(create_block("shuffle", channels))
    assert block.groups == groups
    x = torch.randn(2, channels, 5, 7)
    with record_taps(block) as fired, torch.no_grad():
        y = block(x)
    channel_gate, spatial_gate, mixed = _shuffle_reference(x, block)
    assert [f.tap.kind for f in fired] == ["channel", "spatial"]
    torch.testing.assert_close(fired[0].value, channel_gate)
    torch.testing.assert_close(fired[1].value, spatial_gate)
    if channels % 2 == 0:  # the usual 2-group shuffle: reshape (2, C/2), transpose, flatten
        shuffled = mixed.reshape(2, 2, channels // 2, 5, 7).transpose(1, 2).reshape(x.shape)
    else:
        shuffled = mixed[:, {1: [0], 3: [0, 2, 1]}[channels]]
    torch.testing.assert_close(y, shuffled)


def test_shuffle_index_is_a_permutation() -> None:
    for channels in range(1, 40):
        index = channel_shuffle_index(channels)
        assert sorted(index.tolist()) == list(range(channels))
    assert channel_shuffle_index(6).tolist() == [0, 3, 1, 4, 2, 5]
    assert channel_shuffle_index(5).tolist() == [0, 3, 1, 4, 2]


def test_shuffle_on_constant_and_one_by_one_input() -> None:
    block = _fixed(create_block("shuffle", 6))
    for x in (torch.zeros(2, 6, 4, 4), torch.full((1, 6, 1, 1), 3.0)):
        assert torch.isfinite(block(x)).all()


# ------------------------------------------------------------------------------------------------------------- FPN


def _strided(height: int, width: int, strides: tuple[int, ...]) -> list[tuple[int, int]]:
    return [(math.ceil(height / s), math.ceil(width / s)) for s in strides]


@pytest.mark.parametrize(("height", "width"), [(64, 48), (75, 61)])
def test_fpn_output_sizes(height: int, width: int) -> None:
    block = create_block("fpn", 8, in_channels=(16, 24, 32)).eval()
    sizes = _strided(height, width, (8, 16, 32))
    c3, c4, c5 = (torch.randn(2, c, h, w) for c, (h, w) in zip((16, 24, 32), sizes, strict=True))
    with torch.no_grad():
        outputs = block([c3, c4, c5])
    expected = _strided(height, width, (8, 16, 32, 64, 128))
    assert [tuple(p.shape) for p in outputs] == [(2, 8, h, w) for h, w in expected]
    assert len(create_block("fpn", 8, in_channels=(16, 24, 32), extra_levels=False)([c3, c4, c5])) == 3


def test_fpn_top_down_matches_paper_equation() -> None:
    block = _fixed(create_block("fpn", 4, in_channels=(3, 5, 6)))
    c3, c4, c5 = torch.randn(1, 3, 9, 7), torch.randn(1, 5, 5, 4), torch.randn(1, 6, 3, 2)
    with torch.no_grad():
        p3, p4, p5, p6, p7 = block([c3, c4, c5])

    def conv(x: torch.Tensor, layer: torch.nn.Conv2d, stride: int = 1) -> torch.Tensor:
        return F.conv2d(x, layer.weight, layer.bias, stride=stride, padding=layer.kernel_size[0] // 2)

    m5 = conv(c5, block.lateral[2])
    m4 = conv(c4, block.lateral[1]) + m5[:, :, [0, 0, 1, 1, 2]][:, :, :, [0, 0, 1, 1]]  # nearest 3x2 -> 5x4
    torch.testing.assert_close(p5, conv(m5, block.smooth[2]))
    torch.testing.assert_close(p4, conv(m4, block.smooth[1]))
    torch.testing.assert_close(p6, conv(c5, block.p6, 2))
    torch.testing.assert_close(p7, conv(torch.relu(p6), block.p7, 2))
    assert p3.shape == (1, 4, 9, 7)


# --------------------------------------------------------------------------------------------------- temporal gate


@pytest.mark.parametrize("steps", [1, 5, 24])
@pytest.mark.parametrize("dilation", [1, 2])
def test_temporal_gate_keeps_length_and_is_causal(steps: int, dilation: int) -> None:
    block = _fixed(create_block("temporal_gate", 4, out_channels=10, dilation=dilation))
    x = torch.randn(2, 4, 3, steps)
    with record_taps(block) as fired, torch.no_grad():
        y = block(x)
    assert y.shape == (2, 10, 3, steps)
    assert fired[0].value.shape == (2, 10, 3, steps) and fired[0].tap.kind == "gate"
    t = steps // 2
    changed = x.clone()
    changed[..., t:] += torch.randn_like(changed[..., t:])
    with torch.no_grad():
        y_changed = block(changed)
    torch.testing.assert_close(y_changed[..., :t], y[..., :t])
    assert not torch.allclose(y_changed[..., t], y[..., t])


def test_temporal_gate_matches_gated_inception() -> None:
    block = _fixed(create_block("temporal_gate", 3, out_channels=6, kernel_set=(2, 3)))
    x = torch.randn(1, 3, 2, 8)
    with record_taps(block) as fired, torch.no_grad():
        y = block(x)

    def inception(layer: torch.nn.Module) -> torch.Tensor:
        outs = []
        for branch, k in zip(layer.branches, (2, 3), strict=True):
            padded = torch.cat([torch.zeros(1, 3, 2, k - 1), x], dim=-1)
            windows = padded.unfold(-1, k, 1)  # (B, C, N, T, k)
            outs.append(torch.einsum("bcntk,ock->bont", windows, branch.conv.weight[:, :, 0]))
            outs[-1] = outs[-1] + branch.conv.bias[:, None, None]
        return torch.cat(outs, dim=1)

    gate = torch.sigmoid(inception(block.gate))
    torch.testing.assert_close(fired[0].value, gate)
    torch.testing.assert_close(y, torch.tanh(inception(block.filter)) * gate)


def test_temporal_gate_splits_uneven_channels() -> None:
    block = create_block("temporal_gate", 2, out_channels=10)
    assert [b.conv.out_channels for b in block.filter.branches] == [3, 3, 2, 2]
    assert [b.conv.out_channels for b in create_block("temporal_gate", 1).gate.branches] == [1]
    with pytest.raises(BlockConfigError, match="kernel"):
        create_block("temporal_gate", 2, kernel_set=(0, 3))
