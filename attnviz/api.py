"""The front door: one call per drawing command, returning the very pictures the CLI writes for the same arguments.

    >>> import attnviz
    >>> view = attnviz.show("cbam", "photo.jpg")      # a View: view.image in a notebook, view.save("out/")
    >>> view.summary["maps"][0]["shape"]

The first argument is a block name (attnviz builds the backbone with it and loads its weights), a model spec
("timm:NAME", "torchvision:NAME", a model file), an nn.Module, or a model already loaded with `attnviz.load`, which
saves loading it again for every photo. Options are checked before torch is imported, and a bad value is refused
with an `attnviz.errors.UsageError` naming the keyword.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from attnviz.blocks.catalog import block_info
from attnviz.errors import UsageError, option
from attnviz.options import (
    MATRIX_STAGES,
    check_block_kinds,
    check_channel_options,
    check_colour_scale,
    check_drawing,
    check_points,
    names_a_model,
    parse_heads,
    parse_point,
    parse_size,
)

if TYPE_CHECKING:
    from PIL import Image
    from torch import nn

    from attnviz.io.photos import ImageInput
    from attnviz.loading import LoadedModel
    from attnviz.views.base import Style, View


def load_for(
    command: str,
    block: str | nn.Module | LoadedModel | None = None,
    *,
    kinds: Sequence[str],
    default_stages: Sequence[int] | None = None,
    layer: int | None = None,
    **options: Any,
) -> LoadedModel:
    """The model a drawing command draws: `block` itself when already loaded, else `attnviz.load(block, ...)`,
    refused when it emits none of the `kinds` the command draws (or holds no attention in stage `layer`)."""
    if isinstance(block, str) and options.get("model") is None and not names_a_model(block):
        check_block_kinds(block, kinds, command)  # a block that cannot be drawn is refused before torch loads
    from attnviz.loading import LoadedModel, load
    from attnviz.models import STAGES

    if isinstance(block, LoadedModel):
        given = [k for k, v in options.items() if v is not None and k not in ("size", "device")]
        if given:
            raise UsageError(
                f"{option(given[0])} applies when a model is loaded, and {block.spec} is loaded already",
                "pass it to attnviz.load, or give the block name instead of the loaded model",
            )
        return block
    return load(
        block,
        kinds=kinds,
        command=command,
        layer=layer,
        default_stages=default_stages or STAGES,
        **options,
    )


def _style(
    cmap: str,
    alpha: float,
    *,
    contour: bool = False,
    colorbar: bool = True,
    scale: str = "per-map",
    vmin: float | None = None,
    vmax: float | None = None,
) -> Style:
    from attnviz.views.base import Style

    check_colour_scale(scale, vmin, vmax)
    return Style(cmap=cmap, alpha=alpha, contour=contour, colorbar=colorbar, scale=scale, vmin=vmin, vmax=vmax)


def _photo(image: ImageInput | None, photo: Image.Image | None) -> tuple[Any, Image.Image]:
    """(path, RGB photo) of `image`; `photo` is the file already read (the CLI reads it before loading the model)."""
    from pathlib import Path

    from attnviz.io.photos import read_image

    if image is None:
        raise UsageError("missing argument IMAGE", "give an image file or a PIL image")
    return (Path(image), photo) if photo is not None else read_image(image)


def show(
    block: str | nn.Module | LoadedModel | None = None,
    image: ImageInput | None = None,
    *,
    model: str | os.PathLike[str] | nn.Module | None = None,
    every_block: bool = False,
    contour: bool = False,
    colorbar: bool = True,
    cam: str | None = None,
    cmap: str = "viridis",
    alpha: float = 0.5,
    scale: str = "per-map",
    vmin: float | None = None,
    vmax: float | None = None,
    each: bool = False,
    heat_only: bool = False,
    size: int | str | tuple[int, int] | None = None,
    preprocess: str = "resize",
    device: str = "auto",
    photo: Image.Image | None = None,
    **load_options: Any,
) -> View:
    """The block's spatial attention (CBAM, scSE, Triplet, SimAM, CoT, coordinate...) overlaid on the photo: the
    picture `attnviz show` writes.

    Args:
        block: A block name, a model spec, an nn.Module, or a LoadedModel.
        image: The photo: a file, or a PIL image.
        model: A model attnviz did not build (as `attnviz.load`'s `model`).
        every_block: Draw every block, not only the last block of each stage.
        contour: Outline the peak of each map.
        colorbar: Put a colour bar with its values beside each map.
        cam: Draw the model's CAM (gradcam, gradcamplusplus, ...) beside each stage.
        cmap: Matplotlib colormap of the overlays (default viridis, perceptually uniform; "jet" as CAM tools).
        alpha: Opacity of the overlays, 0-1.
        scale: How maps share colours: "per-map", "per-stage" or "shared" (see `attnviz.Style`).
        vmin: Value of the colormap's first colour for every map (default: from `scale`).
        vmax: Value of the colormap's last colour for every map (default: from `scale`).
        each: Also one picture per map, the overlay at the photo's full resolution.
        heat_only: Also one transparent PNG layer per map at the photo's full resolution (the heat alone).
        size: The model input: a side, or (width, height) such as (640, 384) (default: what the weights were
            trained at, or 224).
        preprocess: Fit the photo to the input by "resize", "crop" or "letterbox".
        device: "auto", "cpu" or "cuda".
        photo: `image` already read with `attnviz.images.load_image` (skips reading it again).
        **load_options: backbone, stages, weights, pretrained, trust, timm_attn (see `attnviz.load`).
    """
    check_drawing(size=size, preprocess=preprocess, device=device, alpha=alpha, cmap=cmap)
    size = parse_size(size)
    style = _style(cmap, alpha, contour=contour, colorbar=colorbar, scale=scale, vmin=vmin, vmax=vmax)

    from attnviz.analysis import analyse
    from attnviz.views import show as view

    path, photo = _photo(image, photo)
    loaded = load_for("show", block, kinds=view.KINDS, model=model, size=size, device=device, **load_options)
    cams = None
    if cam:
        from attnviz.cam import stage_cams

        cams = stage_cams(loaded, cam)
    analysis = analyse(loaded, path, size=size, mode=preprocess, kinds=view.CAPTURED, photo=photo)
    return view.draw(
        analysis,
        loaded,
        style,
        every_block=every_block,
        cams=cams,
        cam_name=cam or "CAM",
        each=each,
        heat_only=heat_only,
    )


def channels(
    block: str | nn.Module | LoadedModel | None = None,
    image: ImageInput | None = None,
    *,
    model: str | os.PathLike[str] | nn.Module | None = None,
    layer: int | None = None,
    order: str = "sorted",
    top_k: int = 10,
    size: int | str | tuple[int, int] | None = None,
    preprocess: str = "resize",
    device: str = "auto",
    photo: Image.Image | None = None,
    **load_options: Any,
) -> View:
    """Per-channel weights (SE, ECA, CBAM's channel half, scSE, GAM, NAM...) as bar charts, and SK-style branch
    selection: the pictures `attnviz channels` writes.

    Args:
        block: A block name, a model spec, an nn.Module, or a LoadedModel.
        image: The photo (default: the bundled sample photo).
        model: A model attnviz did not build (as `attnviz.load`'s `model`).
        layer: Draw every block of this stage (1-4); default: the last block of every stage.
        order: Bars "sorted" by weight or in "channel" order.
        top_k: Mark the k strongest channels with their indices.
        size: The model input: a side, or (width, height) such as (640, 384) (default: what the weights were
            trained at, or 224).
        preprocess: Fit the photo to the input by "resize", "crop" or "letterbox".
        device: "auto", "cpu" or "cuda".
        photo: `image` already read with `attnviz.images.load_image` (skips reading it again).
        **load_options: backbone, stages, weights, pretrained, trust, timm_attn (see `attnviz.load`).
    """
    check_drawing(size=size, preprocess=preprocess, device=device)
    size = parse_size(size)
    check_channel_options(order, top_k)
    if isinstance(load_options.get("stages"), str):
        from attnviz.options import parse_stages

        parse_stages(load_options["stages"])  # a malformed stages option fails before anything is read

    from attnviz.analysis import analyse
    from attnviz.io.shipped import default_sample
    from attnviz.views import channels as view

    path, photo = _photo(image if image is not None else default_sample(), photo)
    loaded = load_for(
        "channels", block, kinds=view.KINDS, layer=layer, model=model, size=size, device=device, **load_options
    )
    layers = loaded.layers_of_stage(layer) if layer is not None else None
    analysis = analyse(loaded, path, size=size, mode=preprocess, kinds=view.KINDS, layers=layers, photo=photo)
    return view.draw(analysis, loaded, layer=layer, order=order, top_k=top_k)


def coords(
    block: str | nn.Module | LoadedModel | None = None,
    image: ImageInput | None = None,
    *,
    model: str | os.PathLike[str] | nn.Module | None = None,
    every_block: bool = False,
    cmap: str = "viridis",
    alpha: float = 0.5,
    size: int | str | tuple[int, int] | None = None,
    preprocess: str = "resize",
    device: str = "auto",
    photo: Image.Image | None = None,
    **load_options: Any,
) -> View:
    """Coordinate Attention's a_h and a_w profiles along the photo and a_h x a_w over it: the picture
    `attnviz coords` writes. Arguments as in `show`."""
    check_drawing(size=size, preprocess=preprocess, device=device, alpha=alpha, cmap=cmap)
    size = parse_size(size)
    style = _style(cmap, alpha)

    from attnviz.analysis import analyse
    from attnviz.views import coords as view

    path, photo = _photo(image, photo)
    loaded = load_for("coords", block, kinds=view.KINDS, model=model, size=size, device=device, **load_options)
    analysis = analyse(loaded, path, size=size, mode=preprocess, kinds=view.KINDS, photo=photo)
    return view.draw(analysis, loaded, style, every_block=every_block)


def matrix(
    block: str | nn.Module | LoadedModel | None = None,
    image: ImageInput | None = None,
    *,
    model: str | os.PathLike[str] | nn.Module | None = None,
    query: Sequence[str | Sequence[float]] | None = None,
    heads: str | Sequence[int] | None = None,
    heatmaps: bool = False,
    every_block: bool = False,
    cmap: str = "viridis",
    alpha: float = 0.5,
    colorbar: bool = True,
    scale: str = "per-map",
    vmin: float | None = None,
    vmax: float | None = None,
    size: int | str | tuple[int, int] | None = None,
    preprocess: str = "resize",
    device: str = "auto",
    photo: Image.Image | None = None,
    **load_options: Any,
) -> View:
    """Where each query pixel looks, per head, for self-attention (MHSA, DANet, criss-cross, ECA+MHSA, foreign
    self-attention): the pictures `attnviz matrix` writes. Blocks go into stages 3 and 4 unless `stages` says.

    Args:
        query: Query pixels of the photo, as "X,Y" or (x, y) (default: the centre).
        heads: Heads to draw ("0,2" or [0, 2]; default: all).
        heatmaps: Also draw the full query x key matrix of each head.
        The others: as in `show`.
    """
    check_drawing(size=size, preprocess=preprocess, device=device, alpha=alpha, cmap=cmap)
    size = parse_size(size)
    head_list = parse_heads(heads)
    style = _style(cmap, alpha, colorbar=colorbar, scale=scale, vmin=vmin, vmax=vmax)

    from attnviz.analysis import analyse
    from attnviz.views import matrix as view

    path, photo = _photo(image, photo)
    points = [parse_point(q) for q in query] if query else view.centre(photo.size)
    check_points(points, photo.size)
    loaded = load_for(
        "matrix",
        block,
        kinds=view.KINDS,
        default_stages=MATRIX_STAGES,
        model=model,
        size=size,
        device=device,
        **load_options,
    )
    analysis = analyse(
        loaded,
        path,
        size=size,
        mode=preprocess,
        kinds=view.KINDS,
        photo=photo,
        query_points=None if heatmaps else points,
        heads=head_list,
    )
    return view.draw(analysis, loaded, style, points=points, heatmaps=heatmaps, every_block=every_block)


def inspect(
    block: str | nn.Module | LoadedModel | None = None,
    *,
    model: str | os.PathLike[str] | nn.Module | None = None,
    size: int | str | tuple[int, int] | None = None,
    height: int | None = None,
    device: str = "auto",
    **load_options: Any,
) -> dict[str, Any]:
    """Where the attention sits in the model, what each module emits and its map shapes at the input size
    (default: the model's own): what `attnviz inspect --json` prints.

    Args:
        block: A block name, a model spec, an nn.Module, or a LoadedModel.
        model: A model attnviz did not build (as `attnviz.load`'s `model`).
        size: Input width (default: what the weights were trained at, or 224).
        height: Input height, for non-square inputs (default: `size`).
        device: "auto", "cpu" or "cuda".
        photo: `image` already read with `attnviz.images.load_image` (skips reading it again).
        **load_options: backbone, stages, weights, trust, timm_attn (see `attnviz.load`).
    """
    check_drawing(size=size, preprocess="resize", device=device)
    check_drawing(size=height, preprocess="resize", device=device)
    size = parse_size(size)
    if isinstance(block, str) and model is None and not names_a_model(block):
        block_info(block)  # a mistyped block name is refused before torch loads

    from attnviz.loading import LoadedModel, load
    from attnviz.views.inspect import inspect_model

    loaded = (
        block if isinstance(block, LoadedModel) else load(block, model=model, size=size, device=device, **load_options)
    )
    return inspect_model(loaded, size=size, height=height)
