"""torchvision backbones fitted with attention blocks.

Placement (the SE and CBAM papers' placement for ResNets):
- ResNet: in every residual block of the chosen stages, on the residual branch after the last batch norm, before the
  addition (`layerN.i.attn`).
- MobileNetV2: in every inverted residual of the chosen stages, right after the depthwise conv + BN + ReLU6
  (`features.i.conv.j.attn`).
- MobileNetV3: the chosen block replaces the built-in squeeze-excitation wherever the network has one
  (`features.i.block.j`); blocks without SE get nothing.
Stage N is the part of the network at output stride 2**(N+1) (4, 8, 16, 32): ResNet's layerN.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from attnviz.blocks.base import create_block
from attnviz.blocks.catalog import block_info, block_names
from attnviz.errors import CheckpointError, UnknownNameError, UsageError, option
from attnviz.io.checkpoints import apply_state_dict, extract_state_dict, read_checkpoint
from attnviz.models import BACKBONES, RESNETS, STAGES
from attnviz.models.surgery import append_to_sequential, attach_to_residual_block, replace_submodule


@dataclass
class ModelConfig:
    """How a model was built: enough to build it again and load its weights."""

    backbone: str
    block: str | None
    stages: tuple[int, ...] = STAGES
    num_classes: int = 1000
    block_options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stages"] = list(self.stages)
        return data


def check_backbone(name: str) -> str:
    if name not in BACKBONES:
        raise UnknownNameError("backbone", name, BACKBONES)
    return name


def check_stages(stages: Sequence[int]) -> tuple[int, ...]:
    chosen = tuple(sorted(set(stages)))
    bad = [s for s in chosen if s not in STAGES]
    if bad or not chosen:
        raise UsageError(f"stage {bad[0] if bad else '(none)'} does not exist", "stages are 1, 2, 3 and 4")
    return chosen


def check_block_fits(block: str) -> str:
    info = block_info(block)
    if not info.fits_backbone:
        raise UsageError(
            f"block {block!r} does not fit inside a backbone (it takes {info.inputs} inputs, not a feature map)",
            f"blocks that fit: {', '.join(block_names(backbone_only=True))}",
        )
    return block


def attention_sites(model: nn.Module, backbone: str) -> Iterator[tuple[int, str, nn.Module, int]]:
    """Where blocks can go: (stage, path, host module, channels) for every site of the backbone, in order."""
    if backbone in RESNETS:
        for stage in STAGES:
            layer = getattr(model, f"layer{stage}")
            for index, res_block in enumerate(layer):
                last_bn = getattr(res_block, "bn3", None) or res_block.bn2
                yield stage, f"layer{stage}.{index}", res_block, last_bn.num_features
        return
    for index, feature, stage in _mobilenet_features(model):
        if type(feature).__name__ != "InvertedResidual" or stage < 1:
            continue
        body = feature.conv if backbone == "mobilenet_v2" else feature.block
        for j, part in enumerate(body):
            if backbone == "mobilenet_v2" and _is_depthwise(part):
                yield stage, f"features.{index}.conv.{j}", part, part[0].out_channels
            if backbone != "mobilenet_v2" and type(part).__name__ == "SqueezeExcitation":
                yield stage, f"features.{index}.block.{j}", part, part.fc1.in_channels


def stage_prefixes(model: nn.Module, backbone: str, stages: Sequence[int]) -> tuple[str, ...]:
    """State-dict prefixes of the backbone modules that make up `stages` ("layer2." or "features.4." ...)."""
    if backbone in RESNETS:
        return tuple(f"layer{stage}." for stage in stages)
    return tuple(f"features.{index}." for index, _, stage in _mobilenet_features(model) if stage in stages)


def _mobilenet_features(model: nn.Module) -> Iterator[tuple[int, nn.Module, int]]:
    """(index, module, stage) of every module in a MobileNet's `features`; stage 0 is the stride-2 stem."""
    stride = 1
    for index, feature in enumerate(model.features):
        stride *= _stride_of(feature)
        yield index, feature, max(0, stride.bit_length() - 2)  # stride 4 -> 1 ... 32 -> 4


def _stride_of(module: nn.Module) -> int:
    strides = [m.stride[0] for m in module.modules() if isinstance(m, nn.Conv2d)]
    stride = 1
    for s in strides:
        stride *= s
    return stride


def _is_depthwise(module: nn.Module) -> bool:
    conv = module[0] if isinstance(module, nn.Sequential) and len(module) else module
    return isinstance(conv, nn.Conv2d) and conv.groups == conv.in_channels > 1


def insert_blocks(model: nn.Module, config: ModelConfig) -> dict[str, int]:
    """Put `config.block` at every site of the chosen stages; returns inserted block path -> stage."""
    paths: dict[str, int] = {}
    for stage, path, host, channels in list(attention_sites(model, config.backbone)):
        if stage not in config.stages:
            continue
        attn = create_block(config.block, channels, **config.block_options)
        if config.backbone in RESNETS:
            attach_to_residual_block(host, attn)
            path = f"{path}.attn"
        elif config.backbone == "mobilenet_v2":
            append_to_sequential(host, attn)
            path = f"{path}.attn"
        else:
            replace_submodule(model, path, attn)
        paths[path] = stage
    return paths


def pretrained_state_dict(backbone: str) -> dict[str, Any]:
    """torchvision's ImageNet weights for `backbone`, from the local torch cache when the file is there.

    Raises:
        CheckpointError: the file is not cached and cannot be fetched; the message says where to place it.
    """
    import torch.hub
    from torchvision.models import get_model_weights

    weights = get_model_weights(backbone).DEFAULT
    filename = os.path.basename(weights.url)
    target = os.path.join(torch.hub.get_dir(), "checkpoints", filename)
    try:
        # weights_only: never run code from the cache file, which the hint below asks users to place by hand.
        return weights.get_state_dict(progress=False, weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"cannot fetch torchvision's pretrained {backbone} weights ({type(exc).__name__})",
            f"download {weights.url} on a machine with internet and place it at {target}",
        ) from exc


def build_model(
    backbone: str,
    block: str | None,
    *,
    stages: Sequence[int] = STAGES,
    weights: str | os.PathLike[str] | None = None,
    pretrained: bool = False,
    num_classes: int = 1000,
    trust: bool = False,
    block_options: dict[str, Any] | None = None,
) -> nn.Module:
    """A torchvision backbone with `block` at every site of `stages`.

    Args:
        backbone: One of `attnviz.models.BACKBONES`.
        block: Registry name of a block that fits a backbone, or None for the plain network.
        stages: Which stages (1-4) get the block.
        weights: A safetensors or torch state dict of the FULL model (backbone + blocks) to load.
        pretrained: Load torchvision's ImageNet weights into the backbone first (blocks stay freshly initialised).
        num_classes: Size of the classifier head.
        trust: Allow `weights` to be a pickled module (runs code from the file).
        block_options: Keyword arguments for every inserted block.

    Returns:
        The model in eval mode, with its `ModelConfig` as `model.attnviz_config` and the inserted blocks as
        `model.attnviz_blocks` (path -> stage).
    """
    import torchvision

    config = ModelConfig(
        check_backbone(backbone),
        check_block_fits(block) if block else None,
        check_stages(stages),
        num_classes,
        dict(block_options or {}),
    )
    if num_classes < 1:
        raise UsageError(f"num_classes must be at least 1, got {num_classes}")
    model = torchvision.models.get_model(backbone, weights=None)
    if pretrained:
        apply_state_dict(model, pretrained_state_dict(backbone), f"torchvision's {backbone} weights")
    if num_classes != 1000:
        _replace_head(model, num_classes)
    paths = insert_blocks(model, config) if block else {}
    if block and not paths:
        usable = sorted({stage for stage, *_ in attention_sites(model, config.backbone)})
        raise UsageError(
            f"{backbone} has no place for a block in stage(s) {', '.join(map(str, config.stages))}",
            f"its blocks can go in stage(s) {', '.join(map(str, usable))} (set them with {option('stages')})",
        )
    if weights is not None:
        state = extract_state_dict(read_checkpoint(weights, trust=trust), str(weights))
        apply_state_dict(model, state, str(weights))
    model.attnviz_config = config
    model.attnviz_blocks = paths
    return model.eval()


def _replace_head(model: nn.Module, num_classes: int) -> None:
    if hasattr(model, "fc"):
        model.fc = nn.Linear(model.fc.in_features, num_classes)
        return
    last = model.classifier[-1]
    model.classifier[-1] = nn.Linear(last.in_features, num_classes)


def stage_outputs(model: nn.Module) -> dict[int, nn.Module]:
    """Per stage with blocks, the module whose output is that stage's output (e.g. a CAM's target layer)."""
    if hasattr(model, "layer1"):
        return {stage: getattr(model, f"layer{stage}")[-1] for stage in STAGES}
    last: dict[int, nn.Module] = {}
    for path, stage in model.attnviz_blocks.items():
        last[stage] = model.features[int(path.split(".")[1])]
    return last
