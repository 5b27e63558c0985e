"""Attention rollout (Abnar & Zuidema, Quantifying Attention Flow in Transformers, ACL 2020) for timm ViTs.

The rollout through block l is R_l = A_l R_(l-1), R_0 = I, with A_l = 0.5 * (block l's attention averaged over its
heads, over every token, prefix tokens included) + 0.5 * I, rows renormalised to sum to 1. The `rollout` tap of a
ViT's last attention block draws the class token's row of R_L over the patch grid.

The blocks' taps share one `RolloutChain` (kept on the ViT as `attnviz_rollout`, given to each tap in its params):
during a forward each block's recipe multiplies its A_l into the chain's running (batch, N, N) product, block 0
starting it afresh, so the chain holds one N x N matrix per image and nothing per block. It is fed only while
capture has connected the blocks' taps, and emptied once the last block has read it. A block whose predecessor did
not feed the chain in this forward (its taps were not captured) empties it, and the last block draws nothing unless
every earlier block's taps are connected.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from attnviz.models.foreign.found import Emission, Found, Grid

CHAIN_ATTRIBUTE = "attnviz_rollout"
"""Name of the ViT attribute holding its blocks' `RolloutChain`."""


class RolloutChain:
    """The running rollout of one ViT's attention blocks during a forward.

    Args:
        blocks: The attention module of each block, in forward order.

    Attributes:
        blocks: As given.
        product: The rollout through block `index`, (batch, N, N); None before block 0 of a forward has run.
        index: The last block fed in this forward; -1 when none.
    """

    def __init__(self, blocks: list[nn.Module]) -> None:
        self.blocks = blocks
        self.clear()

    def clear(self) -> None:
        """Forget the running product (kept between forwards only until the last block reads it)."""
        self.product: torch.Tensor | None = None
        self.index = -1
        self._keys: weakref.ref[torch.Tensor] | None = None  # the keys of the call that fed last

    def __getstate__(self) -> dict[str, Any]:
        """The blocks only: the running product belongs to one forward (and a weak reference does not pickle)."""
        return {"blocks": self.blocks}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.blocks = state["blocks"]
        self.clear()

    def connected(self, upto: int) -> bool:
        """Whether the taps of every block before `upto` are connected (capture hooks their trigger, `k_norm`)."""
        return all(block.get_submodule("k_norm")._forward_hooks for block in self.blocks[:upto])


def chain_of(vit: nn.Module, blocks: list[nn.Module]) -> RolloutChain:
    """The `RolloutChain` of `vit` over `blocks`: the one it holds when over the same modules, else a new one."""
    chain = getattr(vit, CHAIN_ATTRIBUTE, None)
    if not isinstance(chain, RolloutChain) or len(chain.blocks) != len(blocks):
        chain = None
    elif any(mine is not theirs for mine, theirs in zip(chain.blocks, blocks, strict=True)):
        chain = None
    if chain is None:
        chain = RolloutChain(blocks)
        setattr(vit, CHAIN_ATTRIBUTE, chain)
    return chain


def feed(found: Found, weights: Callable[[], torch.Tensor]) -> None:
    """Multiply this block's A_l into the chain of `found.params["rollout"]` (chain, block index).

    Args:
        found: What a tap of the block caught; its last output is the call's keys (several taps of one block feed
            the chain once per call).
        weights: The block's full attention, (batch, heads, N, N).
    """
    chain, index = found.params["rollout"]
    keys = found.outputs[-1]
    if chain._keys is not None and chain._keys() is keys:
        return  # another tap of this block fed it already
    if index > 0 and (chain.index != index - 1 or chain.product is None):
        chain.clear()  # the block before did not feed it in this forward
        return
    mean = weights().mean(dim=1)
    eye = torch.eye(mean.shape[-1], dtype=mean.dtype, device=mean.device)
    step = 0.5 * mean + 0.5 * eye
    step = step / step.sum(dim=-1, keepdim=True)
    chain.product = step if index == 0 else step @ chain.product
    chain.index, chain._keys = index, weakref.ref(keys)


def class_row(found: Found, prefix: int, grid: Grid | None) -> Emission | None:
    """The class token's rolled-out row over the patches, (batch, h, w), once the chain has reached this block.

    The chain is emptied afterwards; None when it did not reach this block in this forward, or without a grid.
    """
    chain, index = found.params["rollout"]
    product = chain.product
    complete = product is not None and chain.index == index and chain.connected(index)
    chain.clear()
    if not complete or grid is None or prefix < 1:
        return None
    return product[:, 0, prefix:].reshape(product.shape[0], *grid), None, None
