"""Equation tests for eca, coord, sk, s2mlp, soca and nam: each tapped attention is recomputed from the paper's
equations with plain torch ops that read the block's parameters, never calling the block's submodules."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnviz.blocks.base import create_block
from attnviz.blocks.eca import EcaGate
from attnviz.blocks.s2mlp import SHIFT_1, SHIFT_2, spatial_shift
from attnviz.blocks.soca import covariance_pool, newton_schulz_sqrt
from attnviz.errors import BlockConfigError
from tests.tap_utils import record_taps


def _randomise_batchnorm(bn: torch.nn.Module) -> None:
    """Give a BatchNorm non-trivial affine parameters and running statistics, so eval mode is a real test."""
    with torch.no_grad():
        bn.weight.normal_()
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)


def _batchnorm_eval(v: torch.Tensor, bn: torch.nn.Module) -> torch.Tensor:
    """BN in eval mode written out along dim 1: (v - running_mean) / sqrt(running_var + eps) * weight + bias."""
    shape = (1, -1) + (1,) * (v.dim() - 2)
    mean, var = bn.running_mean.view(shape), bn.running_var.view(shape)
    return (v - mean) / (var + bn.eps).sqrt() * bn.weight.view(shape) + bn.bias.view(shape)


# ----------------------------------------------------------------------------------------------------------- eca


@pytest.mark.parametrize(("kernel_size", "expected_kernel"), [(None, 3), (7, 7)])
def test_eca_gate_is_sigmoid_of_conv1d_over_pooled_channels(kernel_size: int | None, expected_kernel: int) -> None:
    block = create_block("eca", 64, kernel_size=kernel_size).eval()
    conv = block.gate.conv
    assert conv.kernel_size == (expected_kernel,)
    with torch.no_grad():
        conv.weight.copy_(torch.linspace(-1.0, 1.5, expected_kernel).view(1, 1, -1))
    x = torch.randn(2, 64, 5, 9)
    with record_taps(block) as fired, torch.no_grad():
        out = block(x)

    pooled = x.mean(dim=(2, 3))[:, None, :]  # (B, 1, C)
    expected = torch.sigmoid(F.conv1d(pooled, conv.weight, padding=(expected_kernel - 1) // 2)).squeeze(1)
    assert len(fired) == 1 and fired[0].tap.axes == ("batch", "channel")
    torch.testing.assert_close(fired[0].value, expected)
    torch.testing.assert_close(out, x * expected[:, :, None, None])


@pytest.mark.parametrize("kernel_size", [4, 0, -3, 2.0])
def test_eca_rejects_kernels_that_are_not_positive_odd_ints(kernel_size: object) -> None:
    with pytest.raises(BlockConfigError, match="kernel_size"):
        create_block("eca", 64, kernel_size=kernel_size)
    with pytest.raises(BlockConfigError):
        EcaGate(64, kernel_size)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------------- coord


def _hardswish(v: torch.Tensor) -> torch.Tensor:
    return v * (v + 3).clamp(0, 6) / 6


@pytest.mark.parametrize(("height", "width"), [(5, 7), (1, 6), (4, 1)])
def test_coord_gates_follow_the_paper_in_eval_mode(height: int, width: int) -> None:
    block = create_block("coord", 16, reduction=4).eval()
    conv1, bn = block.encode[0], block.encode[1]
    _randomise_batchnorm(bn)
    x = torch.randn(2, 16, height, width)
    with record_taps(block) as fired, torch.no_grad():
        out = block(x)

    z = torch.cat([x.mean(dim=3), x.mean(dim=2)], dim=2)  # (B, C, H + W): z^h then z^w
    f = _hardswish(_batchnorm_eval(torch.einsum("mc,bcn->bmn", conv1.weight[:, :, 0, 0], z), bn))
    f_h, f_w = f[:, :, :height], f[:, :, height:]
    a_h = torch.sigmoid(torch.einsum("cm,bmh->bch", block.conv_h.weight[:, :, 0, 0], f_h) + block.conv_h.bias[:, None])
    a_w = torch.sigmoid(torch.einsum("cm,bmw->bcw", block.conv_w.weight[:, :, 0, 0], f_w) + block.conv_w.bias[:, None])

    assert [(f.tap.label, f.tap.axes) for f in fired] == [
        ("h", ("batch", "channel", "height")),
        ("w", ("batch", "channel", "width")),
    ]
    torch.testing.assert_close(fired[0].value, a_h)
    torch.testing.assert_close(fired[1].value, a_w)
    torch.testing.assert_close(out, x * a_h[:, :, :, None] * a_w[:, :, None, :])


# ------------------------------------------------------------------------------------------------------------ sk


@pytest.mark.parametrize("kernels", [(3, 5), (3, 5, 7)])
def test_sk_selection_is_softmax_over_branch_logits(kernels: tuple[int, ...]) -> None:
    block = create_block("sk", 24, kernels=kernels, reduction=4, min_dim=8).eval()
    with torch.no_grad():
        block.fuse_norm.weight.normal_()
        block.fuse_norm.bias.normal_()
    x = torch.randn(3, 24, 6, 5)
    with record_taps(block) as fired, torch.no_grad():
        out = block(x)
        branches = [branch(x) for branch in block.branches]  # U_k, reused from the block

    s = sum(branches).mean(dim=(2, 3))  # (B, C)
    v = s @ block.fuse.weight.T
    v = (v - v.mean(dim=1, keepdim=True)) / (v.var(dim=1, unbiased=False, keepdim=True) + block.fuse_norm.eps).sqrt()
    z = torch.relu(v * block.fuse_norm.weight + block.fuse_norm.bias)
    per_branch = block.select.weight.view(len(kernels), 24, -1)  # A_k: (K, C, d)
    logits = torch.einsum("kcd,bd->bkc", per_branch, z)
    expected = torch.exp(logits) / torch.exp(logits).sum(dim=1, keepdim=True)

    assert len(fired) == 1 and fired[0].tap.axes == ("batch", "branch", "channel")
    torch.testing.assert_close(fired[0].value, expected)
    torch.testing.assert_close(out, sum(expected[:, k, :, None, None] * u for k, u in enumerate(branches)))


def test_sk_branches_are_dilated_grouped_3x3_convs() -> None:
    block = create_block("sk", 48, kernels=(3, 5, 7))
    convs = [branch[0] for branch in block.branches]
    assert [(c.kernel_size, c.dilation, c.groups) for c in convs] == [((3, 3), (d, d), 24) for d in (1, 2, 3)]


def test_sk_trains_on_a_batch_of_one() -> None:
    block = create_block("sk", 16).train()
    x = torch.randn(1, 16, 4, 4)
    assert block(x).shape == x.shape


@pytest.mark.parametrize("kernels", [(3,), (3, 4), (1, 3)])
def test_sk_rejects_bad_kernels(kernels: tuple[int, ...]) -> None:
    with pytest.raises(BlockConfigError, match="kernel"):
        create_block("sk", 16, kernels=kernels)


# --------------------------------------------------------------------------------------------------------- s2mlp


def test_spatial_shift_moves_each_quarter_one_pixel_and_keeps_the_edge() -> None:
    x = torch.arange(4 * 3 * 4, dtype=torch.float32).view(1, 4, 3, 4)
    shifted = spatial_shift(x, SHIFT_1)
    down, up, right, left = (shifted[0, i] for i in range(4))
    torch.testing.assert_close(down, torch.cat([x[0, 0, :1], x[0, 0, :-1]], dim=0))
    torch.testing.assert_close(up, torch.cat([x[0, 1, 1:], x[0, 1, -1:]], dim=0))
    torch.testing.assert_close(right, torch.cat([x[0, 2, :, :1], x[0, 2, :, :-1]], dim=1))
    torch.testing.assert_close(left, torch.cat([x[0, 3, :, 1:], x[0, 3, :, -1:]], dim=1))
    assert not torch.equal(spatial_shift(x, SHIFT_2), shifted)
    row = torch.randn(2, 6, 1, 5)  # height 1: the vertical shifts leave their quarters as they are
    torch.testing.assert_close(spatial_shift(row, SHIFT_1)[:, :4], row[:, :4])


def test_s2mlp_selection_is_split_attention_over_three_branches() -> None:
    block = create_block("s2mlp", 10).eval()
    x = torch.randn(2, 10, 5, 6)
    with record_taps(block) as fired, torch.no_grad():
        out = block(x)

    projected = torch.einsum("oc,bchw->bohw", block.project_in.weight[:, :, 0, 0], x)
    projected = projected + block.project_in.bias[:, None, None]
    branches = [spatial_shift(projected[:, :10], SHIFT_1), spatial_shift(projected[:, 10:20], SHIFT_2)]
    branches.append(projected[:, 20:])
    pooled = sum(branches).mean(dim=(2, 3))
    first, second = block.attn_mlp[0].weight, block.attn_mlp[2].weight
    logits = (F.gelu(pooled @ first.T) @ second.T).view(2, 3, 10)
    expected = logits.softmax(dim=1)
    mixed = sum(expected[:, k, :, None, None] * b for k, b in enumerate(branches))
    expected_out = torch.einsum("oc,bchw->bohw", block.project_out.weight[:, :, 0, 0], mixed)

    torch.testing.assert_close(fired[0].value, expected)
    torch.testing.assert_close(out, expected_out + block.project_out.bias[:, None, None])


# ---------------------------------------------------------------------------------------------------------- soca


def _covariance(x: torch.Tensor) -> torch.Tensor:
    """Sigma = X I_bar X^T with I_bar = (1/M)(I - (1/M) 1 1^T), straight from the paper."""
    flat = x.flatten(2)
    m = flat.shape[2]
    i_bar = (torch.eye(m) - torch.full((m, m), 1.0 / m)) / m
    return flat @ i_bar @ flat.transpose(1, 2)


def test_soca_newton_schulz_root_squares_back_to_the_covariance() -> None:
    x = torch.randn(2, 4, 16, 20)  # 320 positions, 4 channels: a well-conditioned covariance
    sigma = _covariance(x)
    torch.testing.assert_close(covariance_pool(x), sigma, rtol=1e-4, atol=1e-5)
    root = newton_schulz_sqrt(sigma, iterations=5)
    relative = torch.linalg.matrix_norm(root @ root - sigma) / torch.linalg.matrix_norm(sigma)
    assert (relative < 1e-2).all(), relative
    one_step = newton_schulz_sqrt(sigma, iterations=1)
    assert (torch.linalg.matrix_norm(one_step @ one_step - sigma) > torch.linalg.matrix_norm(root @ root - sigma)).all()


def test_soca_gate_uses_the_row_means_of_the_covariance_root() -> None:
    block = create_block("soca", 4, reduction=2).eval()
    x = torch.randn(2, 4, 16, 20)
    with record_taps(block) as fired, torch.no_grad():
        out = block(x)

    eigenvalues, eigenvectors = torch.linalg.eigh(_covariance(x))
    root = eigenvectors @ torch.diag_embed(eigenvalues.clamp_min(0).sqrt()) @ eigenvectors.transpose(1, 2)
    z = root.mean(dim=2)
    w1, w2 = block.mlp[0].weight[:, :, 0, 0], block.mlp[2].weight[:, :, 0, 0]
    expected = torch.sigmoid(torch.relu(z @ w1.T + block.mlp[0].bias) @ w2.T + block.mlp[2].bias)
    torch.testing.assert_close(fired[0].value, expected, rtol=0, atol=1e-3)
    torch.testing.assert_close(out, x * fired[0].value[:, :, None, None])


@pytest.mark.parametrize("make", [torch.zeros, torch.ones], ids=["zeros", "constant"])
@pytest.mark.parametrize("size", [(6, 5), (1, 1)])
def test_soca_is_finite_for_a_zero_covariance(make: object, size: tuple[int, int]) -> None:
    block = create_block("soca", 8).train()
    x = make(2, 8, *size).requires_grad_()  # type: ignore[operator]
    out = block(x)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in block.parameters())


# ----------------------------------------------------------------------------------------------------------- nam


def test_nam_weights_are_the_share_of_absolute_bn_scales() -> None:
    block = create_block("nam", 6).eval()
    gamma = torch.tensor([1.0, -2.0, 0.5, -0.5, 0.0, 3.0])
    with torch.no_grad():
        block.norm.weight.copy_(gamma)
        block.norm.bias.normal_()
        block.norm.running_mean.normal_()
        block.norm.running_var.uniform_(0.5, 2.0)
    x = torch.randn(3, 6, 4, 5)
    with record_taps(block) as fired, torch.no_grad():
        out = block(x)

    expected = (gamma.abs() / gamma.abs().sum()).expand(3, -1)
    torch.testing.assert_close(fired[0].value, expected)
    normalised = _batchnorm_eval(x, block.norm)
    torch.testing.assert_close(out, torch.sigmoid(normalised * expected[:, :, None, None]) * x)


def test_nam_weights_start_uniform() -> None:
    block = create_block("nam", 5)
    with record_taps(block) as fired, torch.no_grad():
        block(torch.randn(2, 5, 3, 3))
    torch.testing.assert_close(fired[0].value, torch.full((2, 5), 0.2))
