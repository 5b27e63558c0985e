"""The main job, as a library: load a model, run images through it under capture, map attention back to pixels.

The CLI commands are thin layers over these functions: parse options, call here, render, report.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from attnviz.capture import Recording, capture
from attnviz.errors import ImageError, UsageError
from attnviz.images import IMAGENET_MEAN, IMAGENET_STD, Geometry, load_image, map_to_original, preprocess
from attnviz.io.sidecars import WeightsInfo
from attnviz.maps import AttentionMap, coordinate_outer, plane
from attnviz.models import STAGES
from attnviz.models.backbones import ModelConfig, build_model
from attnviz.models.foreign import ForeignModel, ForeignReport

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
SPATIAL_KINDS = ("spatial", "coordinate", "level")


def resolve_device(name: str) -> torch.device:
    """ "auto" picks CUDA when available; "cpu" and "cuda" are taken as asked (cuda must exist)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("--device cuda was asked for but no CUDA GPU is available", "use --device cpu or auto")
        return torch.device("cuda")
    raise UsageError(f"unknown device {name!r}", "choose auto, cpu or cuda")


@dataclass
class LoadedModel:
    """A model ready to analyse images, and where its weights came from.

    `name` goes into file names: the block for attnviz's own models, a slug of --model for foreign ones, whose
    recognised attention modules `foreign` lists (None for attnviz's own models).
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
    shown: tuple[int, ...] | None = None
    """The stages to draw when not all that hold blocks (`--stages` with weights that placed the blocks)."""

    @property
    def input_size(self) -> int | None:
        """The input side the weights were trained at, when known."""
        return self.weights_info.input_size if self.weights_info else self.native_size

    def stage_of(self, layer: str) -> int | None:
        return self.model.attnviz_blocks.get(layer)

    def layers_of_stage(self, stage: int) -> list[str]:
        return [path for path, s in self.model.attnviz_blocks.items() if s == stage]

    def stages(self) -> list[int]:
        """Stages that hold attention and are drawn, in order."""
        held = sorted(set(self.model.attnviz_blocks.values()))
        return [s for s in held if self.shown is None or s in self.shown]

    def drawn_layers(self) -> list[str]:
        """Paths of the blocks in the drawn stages."""
        return [path for path, stage in self.model.attnviz_blocks.items() if stage in self.stages()]

    def stage_outputs(self) -> dict[int, nn.Module]:
        """Per stage with attention, a module whose output stands for the stage's (a CAM's target layer)."""
        from attnviz.models.backbones import stage_outputs

        model = self.model
        if self.foreign is None or all(hasattr(model, f"layer{s}") for s in STAGES):
            return {s: m for s, m in stage_outputs(model).items() if s in self.stages()}
        return {stage: model.get_submodule(path) for path, stage in model.attnviz_blocks.items()}


def load_model(
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
        model = build_model(info.backbone, block, stages=info.stages, num_classes=info.num_classes)
        load_weights(model, weights, info)
        where = f"{info.backbone}, stages {','.join(map(str, info.stages))}"
        if is_demo:
            source = f"demo weights from {weights} ({where}, trained on attnviz's scenes; --weights for your own)"
        else:
            source = f"weights from {weights} ({where})"
    else:
        model = build_model(backbone, block, stages=stages, weights=weights, pretrained=pretrained, trust=trust)
        source = f"weights from {weights}"
    trained = weights is not None
    if weights is None:
        source = (
            f"torchvision's pretrained {backbone} backbone; the {block} blocks are untrained"
            if pretrained
            else f"randomly initialised {backbone} + {block} (no trained weights)"
        )
    target = resolve_device(device)
    return LoadedModel(model.to(target).eval(), model.attnviz_config, target, source, trained, info, name=block)


def load_foreign(
    spec: str,
    *,
    block: str | None = None,
    backbone: str = "resnet18",
    stages: Sequence[int] = STAGES,
    pretrained: bool = False,
    weights: str | os.PathLike[str] | None = None,
    trust: bool = False,
    timm_attn: str | None = None,
    device: str = "auto",
    size: int = 224,
) -> LoadedModel:
    """Load a model attnviz did not build and attach taps to its attention modules (see models/foreign.py).

    Args:
        spec: "torchvision:NAME", "timm:NAME", or a model file: a pickled model (needs `trust`), or a state dict,
            which is attnviz's `backbone` with `block` (the backbone's own attention when `block` is None, e.g.
            MobileNetV3's squeeze-excitation) and these weights.
        block: Only for a state-dict file: the attnviz block it was trained with.
        backbone: Only for a state-dict file: the attnviz backbone it fits.
        stages: Stages whose attention modules are analysed.
        pretrained: torchvision's or timm's pretrained weights.
        weights: A state dict to load into a torchvision or timm model (e.g. after fine-tuning).
        trust: Allow a pickled model file (runs code from it).
        timm_attn: timm's attn_layer for models that take one (resnet18...).
        device: "auto", "cpu" or "cuda".
        size: Input side of the dummy forward that finds each module's stage.

    Never uses attnviz's demo weights.
    """
    from attnviz.io.checkpoints import apply_state_dict, extract_state_dict, read_checkpoint
    from attnviz.models import foreign

    source_kind, name = foreign.parse_model_spec(spec)
    if timm_attn and source_kind != "timm":
        raise UsageError("--timm-attn goes with --model timm:NAME", f"drop it, or use a timm model instead of {spec}")
    if block is not None and source_kind != "file":
        raise UsageError(
            f"--model {spec} brings its own attention; a block name ({block}) cannot be added to it",
            f"leave {block} out" + (f", or use --timm-attn {block}" if source_kind == "timm" else ""),
        )
    if source_kind == "file":
        if pretrained or weights is not None:
            raise UsageError("--pretrained and --weights do not apply to a model file", "leave them out")
        module, contents = foreign.model_file(name, trust=trust)
        if module is None:
            return _load_state_dict_file(name, contents, block, backbone, stages, device, size)
        if block is not None:
            raise UsageError(f"{name} holds a whole model with its own attention", f"leave {block} out")
        config = getattr(module, "attnviz_config", None)
        built = ForeignModel(
            module, foreign.file_slug(Path(name).stem), f"the pickled model {name}", "with the weights it holds", True
        )
    elif source_kind == "torchvision":
        built = foreign.torchvision_model(name, pretrained=pretrained)
        config = None
    else:
        built = foreign.timm_model(name, pretrained=pretrained, attn=timm_attn)
        config = None
    if weights is not None:
        apply_state_dict(built.model, extract_state_dict(read_checkpoint(weights, trust=trust), str(weights)))
        built.weights, built.trained = f"with weights from {weights}", True
    return _foreign_loaded(built, spec, config, stages, device, size)


def _load_state_dict_file(
    path: str, contents: Any, block: str | None, backbone: str, stages: Sequence[int], device: str, size: int
) -> LoadedModel:
    """A state dict given as --model: attnviz's own model (its sidecar or `block` say which), or `backbone` alone
    with the attention it has built in."""
    from attnviz.io.checkpoints import apply_state_dict, extract_state_dict
    from attnviz.io.sidecars import read_sidecar
    from attnviz.models import foreign

    info = read_sidecar(path)
    if block is not None or (info is not None and info.block):
        return load_model(block or info.block, backbone=backbone, stages=stages, weights=path, device=device)
    model = build_model(info.backbone if info else backbone, None, num_classes=info.num_classes if info else 1000)
    apply_state_dict(model, extract_state_dict(contents, path), path)
    label = f"torchvision's {model.attnviz_config.backbone}"
    built = ForeignModel(model, foreign.file_slug(Path(path).stem), label, f"with weights from {path}", True)
    return _foreign_loaded(built, path, model.attnviz_config, stages, device, size)


def _foreign_loaded(
    built: ForeignModel, spec: str, config: ModelConfig | None, stages: Sequence[int], device: str, size: int
) -> LoadedModel:
    """Attach taps to a foreign model, keep the recognised modules of `stages`, and wrap it as a LoadedModel."""
    from attnviz.models.foreign import attach_taps

    model = built.model
    report = attach_taps(model, size=size)
    chosen = set(stages)
    model.attnviz_blocks = {path: s for path, s in model.attnviz_blocks.items() if s in chosen}
    if not isinstance(config, ModelConfig):
        config = ModelConfig(spec, None, tuple(sorted(set(model.attnviz_blocks.values()))), report.num_outputs or 0)
    target = resolve_device(device)
    return LoadedModel(
        model.to(target).eval(),
        config,
        target,
        built.source,
        built.trained,
        name=built.name,
        foreign=report,
        native_size=built.input_size,
        mean=built.mean or IMAGENET_MEAN,
        std=built.std or IMAGENET_STD,
    )


def image_paths(inputs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand folders into the image files they hold (sorted); keep files as given.

    Raises:
        ImageError: a path does not exist, or a folder holds no images.
    """
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                raise ImageError(
                    f"folder {path} holds no images", f"expected files ending in {', '.join(sorted(IMAGE_SUFFIXES))}"
                )
            found.extend(images)
        elif path.exists():
            found.append(path)
        else:
            raise ImageError(f"image not found: {path}", "check the path")
    return found


@dataclass
class Analysis:
    """One image through the model: the photo, how it was fed in, and what the attention blocks computed."""

    path: Path
    image: Image.Image
    geometry: Geometry
    recording: Recording
    output: Any
    tensor: torch.Tensor | None = None
    _thumbnails: dict[int, Image.Image] = field(default_factory=dict, repr=False)

    def thumbnail(self, width: int | None) -> Image.Image:
        """The photo scaled to `width` pixels wide, keeping its aspect (the photo itself for None)."""
        if width is None or width == self.image.width:
            return self.image
        if width not in self._thumbnails:
            height = max(1, round(self.image.height * width / self.image.width))
            self._thumbnails[width] = self.image.resize((width, height), Image.Resampling.BILINEAR)
        return self._thumbnails[width]

    def on_photo(self, cells: np.ndarray, width: int | None = None) -> np.ndarray:
        """A map covering the model input, drawn back on the photo (at `thumbnail(width)`'s size); NaN where the
        model saw nothing of the photo."""
        size = self.thumbnail(width).size if width is not None else None
        return map_to_original(np.asarray(cells, dtype=np.float32), self.geometry, size=size)

    def spatial(self, m: AttentionMap, width: int | None = None, index: int = 0) -> np.ndarray:
        """A spatial-type map drawn back on the photo's pixels (see `on_photo`)."""
        return self.on_photo(plane(m)[index], width)

    def coordinate(
        self, h_map: AttentionMap, w_map: AttentionMap, width: int | None = None, index: int = 0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Coordinate Attention on the photo's pixels: (H profile, W profile, outer-product map)."""
        outer = self.on_photo(coordinate_outer(h_map, w_map)[index], width)
        with np.errstate(all="ignore"):
            a_h = np.nanmean(self.on_photo(plane(h_map)[index], width), axis=1)
            a_w = np.nanmean(self.on_photo(plane(w_map)[index], width), axis=0)
        return a_h, a_w, outer


def check_points(points: Sequence[tuple[float, float]], image_size: tuple[int, int]) -> None:
    """Raise UsageError for the first query point outside an image of `image_size` (width, height) pixels."""
    width, height = image_size
    for x, y in points:
        if not (0 <= x < width and 0 <= y < height):
            raise UsageError(
                f"query point {x:g},{y:g} lies outside the image ({width}x{height} pixels)",
                f"give X in 0..{width - 1} and Y in 0..{height - 1}",
            )


def query_fractions(points: Sequence[tuple[float, float]], geometry: Geometry) -> list[tuple[float, float]]:
    """Original-image pixels -> (x, y) fractions of the model input, as `capture(queries=...)` wants.

    Raises:
        UsageError: a point lies outside the image.
    """
    check_points(points, geometry.original_size)
    fractions = []
    for x, y in points:
        ix, iy = geometry.to_input(x + 0.5, y + 0.5)
        in_w, in_h = geometry.input_size
        fractions.append((ix / in_w, iy / in_h))
    return fractions


def analyse(
    loaded: LoadedModel,
    path: str | os.PathLike[str],
    *,
    size: int = 224,
    mode: str = "resize",
    kinds: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
    query_points: Sequence[tuple[float, float]] | None = None,
    heads: Sequence[int] | None = None,
    image: Image.Image | None = None,
) -> Analysis:
    """Run one image through the model under capture.

    Args:
        loaded: The model (see `load_model`).
        path: The image file.
        size: Side of the square model input.
        mode: How the image is fitted to the input: "resize", "crop" or "letterbox".
        kinds: Record only these kinds of attention.
        layers: Record only blocks at or under these module paths.
        query_points: For attention matrices, keep only the rows of these original-image pixels (x, y).
        heads: For attention matrices, keep only these heads.
        image: The already-loaded image, to skip reading `path` again.
    """
    photo = image if image is not None else load_image(path)
    tensor, geometry = preprocess(photo, size=size, mode=mode, mean=loaded.mean, std=loaded.std)
    if layers is None and (loaded.foreign is not None or loaded.shown is not None):  # the chosen stages' modules
        layers = loaded.drawn_layers()
    queries = query_fractions(query_points, geometry) if query_points else None
    with torch.inference_mode(), capture(loaded.model, kinds=kinds, layers=layers, queries=queries, heads=heads) as rec:
        output = loaded.model(tensor.to(loaded.device))
    return Analysis(Path(path), photo, geometry, rec, output, tensor.to(loaded.device))
