"""SE and CBAM on fixed weights: the tapped attention equals the paper's equation written out independently."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnviz.blocks.base import create_block
from attnviz.errors import BlockConfigError
from tests.tap_utils import record_taps


def _fixed(module: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return module.eval()


def test_se_matches_paper_equation() -> None:
    block = _fixed(create_block("se", 32, reduction=4))
    x = torch.randn(3, 32, 5, 9)
    with record_taps(block) as fired, torch.no_grad():
        y = block(x)
    w1, b1 = block.fc1.weight, block.fc1.bias
    w2, b2 = block.fc2.weight, block.fc2.bias
    z = x.flatten(2).mean(-1)  # squeeze: global average pooling
    s = torch.sigmoid(torch.relu(z @ w1.T + b1) @ w2.T + b2)  # excitation
    (tap,) = fired
    torch.testing.assert_close(tap.value, s)
    torch.testing.assert_close(y, x * s[:, :, None, None])


@pytest.mark.parametrize("kernel", [3, 7])
def test_cbam_matches_paper_equation(kernel: int) -> None:
    block = _fixed(create_block("cbam", 24, reduction=4, kernel_size=kernel))
    x = torch.randn(2, 24, 6, 11)
    with record_taps(block) as fired, torch.no_grad():
        y = block(x)
    conv1, conv2 = block.channel.mlp[0], block.channel.mlp[2]

    def mlp(v: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(v @ conv1.weight.flatten(1).T + conv1.bias)
        return hidden @ conv2.weight.flatten(1).T + conv2.bias

    avg = x.flatten(2).mean(-1)
    peak = x.flatten(2).max(-1).values
    m_c = torch.sigmoid(mlp(avg) + mlp(peak))
    refined = x * m_c[:, :, None, None]
    pooled = torch.stack([refined.mean(1), refined.max(1).values], dim=1)
    m_s = torch.sigmoid(F.conv2d(pooled, block.spatial.conv.weight, padding=kernel // 2))[:, 0]
    channel_tap, spatial_tap = fired
    torch.testing.assert_close(channel_tap.value, m_c)
    torch.testing.assert_close(spatial_tap.value, m_s)
    torch.testing.assert_close(y, refined * m_s[:, None])


def test_cbam_rejects_other_kernel_sizes() -> None:
    with pytest.raises(BlockConfigError, match="3 or 7"):
        create_block("cbam", 16, kernel_size=5)
