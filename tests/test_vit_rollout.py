"""Attention rollout of a timm ViT (Abnar & Zuidema 2020): the last block's "rollout" tap equals the rollout written
out by hand from every block's own q and k, leaves the output bit-identical, and `show` draws it.

Models have random weights and nothing touches the network.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from attnviz.capture import capture
from attnviz.cli.app import app
from attnviz.models.foreign.recognise import attach_taps

timm = pytest.importorskip("timm")

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("no_network", "two_threads")  # see conftest.py


@pytest.fixture(scope="module")
def vit() -> nn.Module:
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()
    attach_taps(model, size=224)
    return model


def _inputs_of_attention(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The input of every block's Attention in one plain forward."""
    seen: list[torch.Tensor] = []
    handles = [block.attn.register_forward_hook(lambda _m, args, _o: seen.append(args[0])) for block in model.blocks]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def _by_hand(model: nn.Module, inputs: list[torch.Tensor]) -> torch.Tensor:
    """Rollout from each block's qkv Linear, q_norm/k_norm and scale head_dim ** -0.5: the class token's row."""
    product = None
    for block, x in zip(model.blocks, inputs, strict=True):
        attn = block.attn
        b, n, c = x.shape
        heads = attn.num_heads
        qkv = F.linear(x, attn.qkv.weight, attn.qkv.bias).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
        weights = (q @ k.transpose(-2, -1) * (c // heads) ** -0.5).softmax(-1).mean(1)
        step = 0.5 * weights + 0.5 * torch.eye(n)
        step = step / step.sum(-1, keepdim=True)
        product = step if product is None else step @ product
    assert product is not None
    return product[:, 0, 1:].reshape(product.shape[0], 14, 14)


def test_rollout_equals_the_rollout_by_hand_and_leaves_the_output_alone(vit: nn.Module) -> None:
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    inputs = _inputs_of_attention(vit, x)
    with torch.no_grad():
        plain = vit(x)
        with capture(vit) as rec:
            tapped = vit(x)
    assert torch.equal(plain, tapped)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in vit.modules())
    (rolled,) = [m for m in rec if m.label == "rollout"]
    assert rolled.layer == "blocks.11.attn" and rolled.kind == "spatial"
    assert rolled.axes == ("batch", "height", "width") and rolled.tensor.shape == (2, 14, 14)
    torch.testing.assert_close(rolled.tensor, _by_hand(vit, inputs), rtol=1e-4, atol=1e-6)
    assert vit.attnviz_rollout.product is None  # nothing kept once the last block has read it


def test_rollout_only_on_the_last_block_and_only_with_every_block_captured(vit: nn.Module) -> None:
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        with capture(vit, layers=["blocks.0", "blocks.1", "blocks.2"]):
            vit(x)  # the earlier blocks feed the chain, the last does not read it
        with capture(vit, layers=["blocks.11"]) as last_only:
            vit(x)
        with capture(vit, kinds=["spatial"]) as spatial:
            vit(x)
    assert [m.label for m in last_only] == ["matrix", "cls"]  # no stale rollout from the earlier capture
    labels = [(m.layer, m.label) for m in spatial]
    assert labels.count(("blocks.11.attn", "rollout")) == 1
    assert all(label != "rollout" or layer == "blocks.11.attn" for layer, label in labels)


def test_rollout_tap_pickles_and_works_after_loading(vit: nn.Module) -> None:
    buffer = io.BytesIO()
    torch.save(vit, buffer)
    loaded: Any = torch.load(io.BytesIO(buffer.getvalue()), weights_only=False)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    with torch.no_grad(), capture(loaded, kinds=["spatial"]) as rec:
        loaded(x)
    (rolled,) = [m for m in rec if m.label == "rollout"]
    torch.testing.assert_close(rolled.tensor, _by_hand(loaded, _inputs_of_attention(loaded, x)), rtol=1e-4, atol=1e-6)


def test_show_draws_the_rollout(tmp_path: Path) -> None:
    yy, xx = np.mgrid[0:60, 0:100]
    rgb = np.stack([xx / 100 * 255, yy / 60 * 255, np.full_like(xx, 80)], axis=-1)
    photo = tmp_path / "photo.png"
    Image.fromarray(rgb.astype(np.uint8)).save(photo)
    out = tmp_path / "out"
    args = ["show", "--model", "timm:vit_tiny_patch16_224", str(photo), "--device", "cpu", "--out", str(out)]
    result = runner.invoke(app, [*args, "--each", "--json"])
    assert result.exit_code == 0, result.stderr
    (found,) = json.loads(result.stdout)["results"]
    rolled = [m for m in found["maps"] if m["label"] == "rollout"]
    assert len(rolled) == 1 and rolled[0]["layer"] == "blocks.11.attn" and rolled[0]["shape"] == [1, 14, 14]
    files = {Path(f).name: Path(f) for f in found["files"]}
    drawn = [name for name in files if "blocks-11-attn_rollout" in name]  # its own overlay, from --each
    assert len(drawn) == 1 and files[drawn[0]].stat().st_size > 0
    assert files["photo_timm-vit_tiny_patch16_224_show.png"].stat().st_size > 0
