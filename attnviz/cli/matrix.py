"""`attnviz matrix BLOCK IMAGE... --query X,Y`: where a pixel looks, per head, for self-attention blocks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from attnviz.cli import batch
from attnviz.cli import options as opt
from attnviz.cli.common import guarded
from attnviz.errors import UsageError
from attnviz.options import KINDS, check_colour_scale


@guarded
def matrix(
    block: opt.OptionalBlockArg = None,
    images: Annotated[
        list[Path] | None, typer.Argument(help="Image files or folders of images.", show_default=False)
    ] = None,
    model: opt.ModelOpt = None,
    timm_attn: opt.TimmAttnOpt = None,
    query: Annotated[
        list[str] | None,
        typer.Option(
            "--query",
            "-q",
            help="Query pixel X,Y of the photo: X from 0 to width-1, Y from 0 to height-1, from the top-left corner; "
            "a fraction picks the pixel it falls in (repeatable; default: the centre).",
        ),
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
    batch_size: opt.BatchSizeOpt = None,
    workers: opt.WorkersOpt = None,
) -> None:
    """Overlay the attention row of each query pixel on the image (MHSA, DANet, criss-cross, ECA+MHSA).

    Self-attention over every pixel of an early stage is large, so by default blocks go into stages 3 and 4 only.
    """
    from attnviz.options import check_points, parse_heads

    block, images = opt.split_positionals(block, images or [], model, "matrix")
    if not images:
        raise UsageError("missing argument IMAGES", "give one or more image files or folders")
    opt.check_common(size=size, preprocess=preprocess, fmt=fmt, alpha=alpha, device=device, cmap=cmap)
    check_colour_scale(scale, vmin, vmax)
    opt.check_out_dir(out_dir)
    batch.check_batch(batch_size, workers)
    if model is None:
        opt.check_block_kinds(block, KINDS["matrix"], "matrix")
    head_list = parse_heads(heads)
    points = [opt.parse_point(q) for q in query] if query else None
    inputs = batch.gather(images, out_dir)
    if inputs.single:  # a query outside the one photo fails before the model is built
        photo = inputs.read[inputs.paths[0]]
        check_points(points or [(photo.width // 2, photo.height // 2)], photo.size)
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
    from attnviz.batch import MatrixTask, Writing
    from attnviz.views.base import Style

    task = MatrixTask(
        loaded,
        Writing(out_dir, fmt, save_raw),
        size=size,
        preprocess=preprocess,
        style=Style(cmap=cmap, alpha=alpha, colorbar=colorbar, scale=scale, vmin=vmin, vmax=vmax),
        points=points,
        heads=head_list,
        heatmaps=heatmaps,
        every_block=every_block,
    )
    head = batch.model_facts(loaded)
    batch.draw(
        "matrix", task, inputs, head=head, batch_size=batch_size, workers=workers, as_json=as_json, flat_json=True
    )
