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
from attnviz.images import Geometry, load_image, map_to_original, preprocess
from attnviz.maps import AttentionMap, coordinate_outer, plane
from attnviz.models import STAGES
from attnviz.models.backbones import ModelConfig, build_model
from attnviz.weights import WeightsInfo

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
    """A model ready to analyse images, and where its weights came from."""

    model: nn.Module
    config: ModelConfig
    device: torch.device
    source: str
    trained: bool
    weights_info: WeightsInfo | None = None

    @property
    def input_size(self) -> int | None:
        """The input side the weights were trained at, when known."""
        return self.weights_info.input_size if self.weights_info else None

    def stage_of(self, layer: str) -> int | None:
        return self.model.attnviz_blocks.get(layer)

    def layers_of_stage(self, stage: int) -> list[str]:
        return [path for path, s in self.model.attnviz_blocks.items() if s == stage]


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
    from attnviz.resources import demo_weights
    from attnviz.train import load_weights
    from attnviz.weights import read_sidecar

    if weights is None and not pretrained and demo:
        weights = demo_weights(block, backbone)
    info = read_sidecar(weights) if weights is not None else None
    if info is not None:
        if info.block != block:
            raise UsageError(
                f"{weights} holds weights for {info.block or 'a plain backbone'}, not {block}",
                f"use it with block {info.block}" if info.block else "pass a weights file trained with this block",
            )
        model = build_model(info.backbone, block, stages=info.stages, num_classes=info.num_classes)
        load_weights(model, weights, info)
        source = f"weights from {weights} ({info.backbone}, stages {','.join(map(str, info.stages))})"
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
    return LoadedModel(model.to(target).eval(), model.attnviz_config, target, source, trained, info)


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
    tensor, geometry = preprocess(photo, size=size, mode=mode)
    queries = query_fractions(query_points, geometry) if query_points else None
    with torch.inference_mode(), capture(loaded.model, kinds=kinds, layers=layers, queries=queries, heads=heads) as rec:
        output = loaded.model(tensor.to(loaded.device))
    return Analysis(Path(path), photo, geometry, rec, output, tensor.to(loaded.device))
