"""Loading a model to analyse: attnviz's own backbone + block, or a model attnviz did not build.

`load(...)` is the one way in, for the CLI and for Python alike. It decides where the weights come from, the input
size the model wants, and which stages are drawn (`LoadedModel.drawn`, one mechanism for every model), and refuses,
before anything is drawn, a model whose attention a command cannot draw.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from attnviz.errors import UsageError, invocation, option
from attnviz.images import IMAGENET_MEAN, IMAGENET_STD, Size
from attnviz.models import STAGES
from attnviz.models.backbones import ModelConfig, build_model
from attnviz.options import COMMAND_FOR_KIND, check_block_kinds, names_a_model, parse_size, parse_stages

if TYPE_CHECKING:
    from attnviz.io.sidecars import WeightsInfo
    from attnviz.models.foreign import ForeignModel, ForeignReport

DEFAULT_SIZE = 224
"""Input side when neither the caller nor the weights say."""


def resolve_device(name: str) -> torch.device:
    """ "auto" picks CUDA when available; "cpu" and "cuda" are taken as asked (cuda must exist)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            flag = option("device")
            raise UsageError(f"{flag} cuda was asked for but no CUDA GPU is available", f"use {flag} cpu or auto")
        return torch.device("cuda")
    raise UsageError(f"unknown device {name!r}", "choose auto, cpu or cuda")


@dataclass
class LoadedModel:
    """A model ready to analyse images, and where its weights came from.

    Attributes:
        model: The network, in eval mode, on `device`, with `attnviz_blocks` (module path -> stage).
        config: What the model is (backbone, block, stages, classes).
        device: Where it runs.
        source: Where its weights came from, in words.
        trained: Whether the weights were trained at all.
        weights_info: The sidecar of attnviz weights, when there is one.
        name: The model's piece of file names: the block for attnviz's own models, a slug of the spec otherwise.
        foreign: For a model attnviz did not build, its recognised attention modules.
        native_size: The input side the model's own weights expect (timm's pretrained config), when known.
        mean: Per-channel input mean the weights expect.
        std: Per-channel input standard deviation the weights expect.
        drawn: The stages drawn, when not every stage that holds attention.
        spec: What the caller named: the block, or the model spec.
        placement: Where its cells sit on the input (attnviz.images.PLACEMENTS): "aligned" for attnviz's backbones,
            measured for other models (attnviz.models.geometry).
    """

    model: nn.Module
    config: ModelConfig
    device: torch.device
    source: str
    trained: bool
    weights_info: WeightsInfo | None = None
    name: str = ""
    foreign: ForeignReport | None = None
    native_size: int | None = None
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    drawn: tuple[int, ...] | None = None
    spec: str = ""
    placement: str = "aligned"
    cams: dict[str, Any] = field(default_factory=dict, repr=False)
    """CAM runners built for this model, by method (see attnviz.cam.stage_cams)."""

    @property
    def input_size(self) -> Size:
        """The input side to use when the caller gives none: the weights' training size, else 224."""
        if self.weights_info is not None:
            return self.weights_info.input_size
        return self.native_size or DEFAULT_SIZE

    def stage_of(self, layer: str) -> int | None:
        return self.model.attnviz_blocks.get(layer)

    def layers_of_stage(self, stage: int) -> list[str]:
        return [path for path, s in self.model.attnviz_blocks.items() if s == stage]

    def stages(self) -> list[int]:
        """Stages that hold attention and are drawn, in order."""
        held = sorted(set(self.model.attnviz_blocks.values()))
        return [s for s in held if self.drawn is None or s in self.drawn]

    def drawn_layers(self) -> list[str]:
        """Paths of the attention modules in the drawn stages."""
        stages = self.stages()
        return [path for path, stage in self.model.attnviz_blocks.items() if stage in stages]

    def stage_outputs(self) -> dict[int, nn.Module]:
        """Per drawn stage, a module whose output stands for the stage's (a CAM's target layer)."""
        from attnviz.models.backbones import stage_outputs

        model, stages = self.model, self.stages()
        if self.foreign is None or all(hasattr(model, f"layer{s}") for s in STAGES):
            return {s: m for s, m in stage_outputs(model).items() if s in stages}
        return {stage: model.get_submodule(path) for path, stage in model.attnviz_blocks.items() if stage in stages}

    def kinds(self) -> list[str]:
        """The kinds of attention the drawn modules emit, in order of first appearance."""
        if self.foreign is None:
            from attnviz.blocks.catalog import block_info

            return list(dict.fromkeys(block_info(self.config.block).kinds)) if self.config.block else []
        layers = set(self.drawn_layers())
        return list(dict.fromkeys(k for m in self.foreign.recognised if m.path in layers for k in m.kinds))


def is_model_spec(what: Any) -> bool:
    """Whether `what` names a model rather than a block: a module, "torchvision:NAME", "timm:NAME" or a file."""
    return isinstance(what, nn.Module) or (isinstance(what, str | os.PathLike) and names_a_model(what))


def load(
    block: str | nn.Module | None = None,
    *,
    model: str | os.PathLike[str] | nn.Module | None = None,
    backbone: str = "resnet18",
    stages: str | Sequence[int] | None = None,
    pretrained: bool = False,
    weights: str | os.PathLike[str] | None = None,
    trust: bool = False,
    timm_attn: str | None = None,
    device: str = "auto",
    size: int | str | tuple[int, int] | None = None,
    demo: bool = True,
    kinds: Sequence[str] = (),
    command: str = "",
    layer: int | None = None,
    default_stages: Sequence[int] = STAGES,
) -> LoadedModel:
    """Load a model to analyse.

    Args:
        block: An attention block name ("cbam"): attnviz builds `backbone` with it. A model spec or an nn.Module
            here is taken as `model`.
        model: A model attnviz did not build, whose own attention modules are found: "torchvision:NAME",
            "timm:NAME", a model file (a pickled model needs `trust`; a state dict fits `backbone` and `block`), or
            an nn.Module.
        backbone: The attnviz backbone (resnet18 ... mobilenet_v3_large).
        stages: Stages that get the block ("2,3,4" or (2, 3, 4); default `default_stages`). When weights place the
            block themselves (an attnviz weights file, the demo weights) it picks which of their stages are drawn;
            for `model`, which stages' attention modules are analysed.
        pretrained: torchvision's (or timm's) ImageNet weights.
        weights: Weights of the whole model (an attnviz weights file, or a state dict).
        trust: Allow a pickled model file (runs code from it).
        timm_attn: With a timm model, timm's attention layer for every block ("cbam", "se", ...).
        device: "auto", "cpu" or "cuda".
        size: The input: a side, or (width, height) (for `model`, the probe that finds each module's stage runs
            at it).
        demo: Use the shipped demo weights when no weights are given.
        kinds: Refuse a model that emits none of these kinds of attention (what `command` draws).
        command: The drawing command, for messages.
        layer: Refuse unless stage `layer` holds drawn attention.
        default_stages: The stages used when `stages` is None.

    Raises:
        UsageError: a bad combination of options, or a model without what `kinds`/`layer` ask for.
    """
    size = parse_size(size)
    if block is not None and model is None and is_model_spec(block):
        block, model = None, block
    explicit = stages is not None
    chosen = parse_stages(stages) if stages is not None else tuple(default_stages)
    if model is not None:
        loaded = _load_foreign(model, block, backbone, chosen, pretrained, weights, trust, timm_attn, device, size)
        _check_foreign(
            loaded, model if isinstance(model, str | os.PathLike) else loaded.name, timm_attn, kinds, command
        )
    elif timm_attn is not None:
        flag = option("timm_attn")
        raise UsageError(
            f"{flag} goes with {option('model')} timm:NAME", f"e.g. {option('model')} timm:resnet18 {flag} cbam"
        )
    elif block is None:
        raise UsageError(
            "missing argument BLOCK", f"e.g. attnviz {command or 'show'} cbam ..., or pass {option('model')}"
        )
    else:
        if kinds:
            check_block_kinds(block, kinds, command)
        loaded = load_native(
            block,
            backbone=backbone,
            stages=chosen,
            pretrained=pretrained,
            weights=weights,
            trust=trust,
            device=device,
            demo=demo,
        )
        _pick_stages(loaded, block, chosen if explicit else None)
    _check_layer(loaded, layer, model)
    loaded.spec = loaded.name if isinstance(model, nn.Module) else str(model if model is not None else block)
    return loaded


def load_native(
    block: str,
    *,
    backbone: str = "resnet18",
    stages: Sequence[int] = STAGES,
    pretrained: bool = False,
    weights: str | os.PathLike[str] | None = None,
    trust: bool = False,
    device: str = "auto",
    demo: bool = True,
) -> LoadedModel:
    """Build `backbone` with `block` in `stages`, load weights, move it to the device, in eval mode.

    Weights come from `weights` (an attnviz weights file with its JSON sidecar sets the backbone, stages and
    classes itself; a bare state dict must fit the options), else torchvision's with `pretrained`, else the shipped
    demo weights for this block and backbone when there are some (and `demo`), else random initialisation.
    """
    from attnviz.io.shipped import demo_weights
    from attnviz.io.sidecars import load_weights, read_sidecar

    is_demo = False
    if weights is None and not pretrained and demo:
        weights = demo_weights(block, backbone)
        is_demo = weights is not None
    info = read_sidecar(weights) if weights is not None else None
    if info is not None:
        if info.block != block:
            raise UsageError(
                f"{weights} holds weights for {info.block or 'a plain backbone'}, not {block}",
                f"use it with block {info.block}" if info.block else "pass a weights file trained with this block",
            )
        network = build_model(info.backbone, block, stages=info.stages, num_classes=info.num_classes)
        load_weights(network, weights, info)
        where = f"{info.backbone}, stages {','.join(map(str, info.stages))}"
        if is_demo:
            source = (
                f"demo weights from {weights} ({where}, trained on attnviz's scenes; {option('weights')} for your own)"
            )
        else:
            source = f"weights from {weights} ({where})"
    else:
        network = build_model(backbone, block, stages=stages, weights=weights, pretrained=pretrained, trust=trust)
        source = f"weights from {weights}"
    if weights is None:
        source = (
            f"torchvision's pretrained {backbone} backbone; the {block} blocks are untrained"
            if pretrained
            else f"randomly initialised {backbone} + {block} (no trained weights)"
        )
    target = resolve_device(device)
    config = network.attnviz_config
    return LoadedModel(network.to(target).eval(), config, target, source, weights is not None, info, name=block)


def _load_foreign(
    model: str | os.PathLike[str] | nn.Module,
    block: str | None,
    backbone: str,
    stages: Sequence[int],
    pretrained: bool,
    weights: str | os.PathLike[str] | None,
    trust: bool,
    timm_attn: str | None,
    device: str,
    size: Size | None,
) -> LoadedModel:
    """A model attnviz did not build, with taps on its attention modules (see attnviz.models.foreign), probed at
    `size`, else at the size the model says it wants (timm:botnet26t_256: 256 only), else DEFAULT_SIZE."""
    from attnviz.models.foreign.zoo import StateDictFile, open_model

    built = open_model(model, block=block, pretrained=pretrained, weights=weights, trust=trust, timm_attn=timm_attn)
    if isinstance(built, StateDictFile):
        return _load_state_dict_file(built.path, built.contents, block, backbone, stages, device, size or DEFAULT_SIZE)
    spec = str(model) if not isinstance(model, nn.Module) else type(model).__name__
    probe = size or built.input_size or DEFAULT_SIZE
    return _foreign_loaded(built, spec, getattr(built.model, "attnviz_config", None), stages, device, probe)


def _load_state_dict_file(
    path: str, contents: Any, block: str | None, backbone: str, stages: Sequence[int], device: str, size: Size
) -> LoadedModel:
    """A state dict given as a model file: attnviz's own model (its sidecar or `block` say which), or `backbone`
    alone with the attention it has built in (another model's state dict: see `usercode.load_into_backbone`)."""
    from attnviz.io.checkpoints import extract_state_dict
    from attnviz.io.sidecars import read_sidecar
    from attnviz.models import foreign
    from attnviz.models.usercode import load_into_backbone

    info = read_sidecar(path)
    if block is not None or (info is not None and info.block):
        return load_native(block or info.block, backbone=backbone, stages=stages, weights=path, device=device)
    network = build_model(info.backbone if info else backbone, None, num_classes=info.num_classes if info else 1000)
    load_into_backbone(network, extract_state_dict(contents, path), path, explain=info is None)
    label = f"torchvision's {network.attnviz_config.backbone}"
    built = foreign.ForeignModel(network, foreign.file_slug(Path(path).stem), label, f"with weights from {path}", True)
    return _foreign_loaded(built, path, network.attnviz_config, stages, device, size)


def _foreign_loaded(
    built: ForeignModel, spec: str, config: ModelConfig | None, stages: Sequence[int], device: str, size: Size
) -> LoadedModel:
    """Attach taps to a foreign model, draw the recognised modules of `stages`, and wrap it as a LoadedModel."""
    from attnviz.models.foreign import attach_taps
    from attnviz.models.geometry import measure_placement

    network = built.model
    report = attach_taps(network, size=size)
    placement = measure_placement(network, size) or "tiled"
    if not isinstance(config, ModelConfig):
        held = tuple(sorted({s for s in network.attnviz_blocks.values() if s in stages}))
        config = ModelConfig(spec, None, held, report.num_outputs or 0)
    target = resolve_device(device)
    return LoadedModel(
        network.to(target).eval(),
        config,
        target,
        built.source,
        built.trained,
        name=built.name,
        foreign=report,
        native_size=built.input_size,
        mean=built.mean or IMAGENET_MEAN,
        std=built.std or IMAGENET_STD,
        drawn=tuple(stages),
        placement=placement,
    )


def _check_foreign(
    loaded: LoadedModel, spec: str | os.PathLike[str], timm_attn: str | None, kinds: Sequence[str], command: str
) -> None:
    """Refuse a foreign model whose recognised attention (in the drawn stages) has none of `kinds`."""
    if not kinds:
        return
    named = f"{spec} {option('timm_attn')} {timm_attn}" if timm_attn else str(spec)
    found = loaded.kinds()
    if set(found) & set(kinds):
        return
    if not found:
        raise UsageError(
            f"no attention module of {named} was recognised in the chosen stages",
            f"{invocation('inspect', model=named)} lists what it holds",
        )
    better = sorted({COMMAND_FOR_KIND[k] for k in found if k in COMMAND_FOR_KIND})
    raise UsageError(
        f"{named} holds {', '.join(found)} attention, which `attnviz {command}` does not draw",
        f"try: {' or '.join(invocation(b, model=named) for b in better)}" if better else None,
    )


def _pick_stages(loaded: LoadedModel, block: str, asked: tuple[int, ...] | None) -> None:
    """With weights that placed the blocks, draw only the stages asked for, which must hold blocks."""
    if asked is None or loaded.weights_info is None:
        return
    have = loaded.stages()
    listed = ", ".join(map(str, have))
    missing = [s for s in asked if s not in have]
    if missing:
        raise UsageError(
            f"{option('stages')} {missing[0]}: the weights {loaded.weights_info.path.name} put {block} in stages "
            f"{listed} only",
            f"pick from {listed}, or leave {option('stages')} out to draw them all",
        )
    loaded.drawn = tuple(asked)


def _check_layer(loaded: LoadedModel, layer: int | None, model: Any) -> None:
    """Refuse `layer` (a stage) unless it holds drawn attention."""
    if layer is None or layer in loaded.stages():
        return
    flag, drawn = option("layer"), ", ".join(map(str, loaded.stages()))
    if model is not None:
        raise UsageError(
            f"{flag} {layer} is not a stage with recognised attention in {model}",
            f"stages with attention: {drawn or 'none'}",
        )
    picked = " picked by " + option("stages") if loaded.weights_info is not None and loaded.drawn else ""
    raise UsageError(
        f"{flag} {layer} is not a stage with {loaded.name} blocks",
        f"stages with blocks{picked}: {drawn}"
        + ("" if loaded.weights_info else f" (set them with {option('stages')})"),
    )
