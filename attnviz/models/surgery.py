"""Insert attention blocks into a network by module path, keeping the original parameter names intact.

Inserting never renames an existing parameter, so a backbone's own weights (torchvision's pretrained files,
or a user's state dict) load before or after surgery with the same keys.
"""

from __future__ import annotations

from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck


class AttentiveBasicBlock(BasicBlock):
    """torchvision's BasicBlock with `attn` on the residual branch after bn2, before the addition."""

    attn: nn.Module

    def forward(self, x):  # type: ignore[no-untyped-def]
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.attn(self.bn2(self.conv2(out)))
        return self.relu(out + identity)


class AttentiveBottleneck(Bottleneck):
    """torchvision's Bottleneck with `attn` on the residual branch after bn3, before the addition."""

    attn: nn.Module

    def forward(self, x):  # type: ignore[no-untyped-def]
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.attn(self.bn3(self.conv3(out)))
        return self.relu(out + identity)


def attach_to_residual_block(block: BasicBlock | Bottleneck, attn: nn.Module) -> None:
    """Turn a torchvision ResNet block into its attentive twin in place (same parameters, new `attn` child)."""
    block.__class__ = AttentiveBottleneck if isinstance(block, Bottleneck) else AttentiveBasicBlock
    block.attn = attn


def append_to_sequential(sequence: nn.Sequential, attn: nn.Module, name: str = "attn") -> None:
    """Append `attn` to a Sequential under `name`: it then runs last, and existing keys keep their indices."""
    sequence.add_module(name, attn)


def replace_submodule(model: nn.Module, path: str, new: nn.Module) -> nn.Module:
    """Replace the submodule at dotted `path` with `new`; returns the module that was there."""
    parent_path, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    old = parent.get_submodule(child)
    setattr(parent, child, new)
    return old
