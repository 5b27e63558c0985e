"""`attnviz matrix BLOCK IMAGE --query X,Y`: where a pixel looks, per head, for self-attention blocks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from attnviz.cli import options as opt
from attnviz.cli.common import guarded, write_view
from attnviz.errors import UsageError
from attnviz.options import KINDS, check_colour_scale


@guarded
def matrix(
    block: opt.OptionalBlockArg = None,
    image: Annotated[Path | None, typer.Argument(help="Image file.", show_default=False)] = None,
    model: opt.ModelOpt = None,
    timm_attn: opt.TimmAttnOpt = None,
    query: Annotated[
        list[str] | None,
        typer.Option("--query", "-q", help="Query pixel X,Y of the image (repeatable; default: the centre)."),
    ] = None,
    heads: Annotated[str | None, typer.Option("--heads", help="Heads to draw, comma-separated (default: all).")] = None,
    heatmaps: Annotated[
        bool, typer.Option("--heatmaps", help="Also draw the full query x key matrix of each head.")
    ] = False,
    every_block: Annotated[
        bool, typer.Option("--every-block", help="Draw every block, not only the last block of each stage.")
    ] = False,
    backbone: opt.BackboneOpt = "resnet18",
    stages: opt.DrawStagesOpt = None,
    pretrained: opt.PretrainedOpt = False,
    weights: opt.WeightsOpt = None,
    trust: opt.TrustOpt = False,
    size: opt.SizeOpt = None,
    preprocess: opt.PreprocessOpt = "resize",
    out_dir: opt.OutOpt = Path("attnviz-out"),
    fmt: opt.FormatOpt = "png",
    cmap: opt.CmapOpt = "viridis",
    colorbar: opt.ColorbarOpt = True,
    scale: opt.ScaleOpt = "per-map",
    vmin: opt.VminOpt = None,
    vmax: opt.VmaxOpt = None,
    alpha: opt.AlphaOpt = 0.5,
    device: opt.DeviceOpt = "auto",
    as_json: opt.JsonOpt = False,
    save_raw: opt.SaveRawOpt = False,
) -> None:
    """Overlay the attention row of each query pixel on the image (MHSA, DANet, criss-cross, ECA+MHSA).

    Self-attention over every pixel of an early stage is large, so by default blocks go into stages 3 and 4 only.
    """
    from attnviz import api
    from attnviz.io.photos import load_image
    from attnviz.options import check_points, parse_heads

    block, images = opt.split_positionals(block, [image] if image else [], model, "matrix")
    if len(images) != 1:
        raise UsageError("matrix draws one image" if images else "missing argument IMAGE", "give one image file")
    image = images[0]
    opt.check_common(size=size, preprocess=preprocess, fmt=fmt, alpha=alpha, device=device, cmap=cmap)
    check_colour_scale(scale, vmin, vmax)
    opt.check_out_dir(out_dir)
    if model is None:
        opt.check_block_kinds(block, KINDS["matrix"], "matrix")
    head_list = parse_heads(heads)
    photo = load_image(image)
    points = [opt.parse_point(q) for q in query] if query else [(photo.width // 2, photo.height // 2)]
    check_points(points, photo.size)
    loaded = opt.load_model(
        "matrix",
        block,
        model=model,
        backbone=backbone,
        stages=stages,
        pretrained=pretrained,
        weights=weights,
        trust=trust,
        timm_attn=timm_attn,
        size=size,
        device=device,
        quiet=as_json,
    )
    view = api.matrix(
        loaded,
        image,
        photo=photo,
        query=points,
        heads=head_list,
        heatmaps=heatmaps,
        every_block=every_block,
        cmap=cmap,
        alpha=alpha,
        colorbar=colorbar,
        scale=scale,
        vmin=vmin,
        vmax=vmax,
        size=size,
        preprocess=preprocess,
    )
    write_view(view, loaded, out_dir, fmt, save_raw=save_raw, as_json=as_json)
