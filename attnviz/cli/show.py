"""`attnviz show BLOCK IMAGE...`: the block's spatial-type maps at each stage, overlaid on each image."""

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
def show(
    block: opt.OptionalBlockArg = None,
    images: Annotated[
        list[Path] | None, typer.Argument(help="Image files or folders of images.", show_default=False)
    ] = None,
    model: opt.ModelOpt = None,
    timm_attn: opt.TimmAttnOpt = None,
    backbone: opt.BackboneOpt = "resnet18",
    stages: opt.DrawStagesOpt = None,
    every_block: Annotated[
        bool, typer.Option("--every-block", help="Draw every block, not only the last block of each stage.")
    ] = False,
    contour: Annotated[
        bool,
        typer.Option(
            "--contour",
            help="Outline where each map reaches 50% (solid) and 75% (dashed) of its range.",
        ),
    ] = False,
    each: Annotated[
        bool, typer.Option("--each", help="Also one file per map: its overlay at the photo's full resolution.")
    ] = False,
    heat_only: Annotated[
        bool,
        typer.Option("--heat-only", help="Also one transparent PNG layer per map at full resolution (the heat alone)."),
    ] = False,
    colorbar: opt.ColorbarOpt = True,
    cam: Annotated[
        str | None,
        typer.Option("--cam", help="Draw the same model's CAM beside each stage (gradcam, gradcamplusplus, ...)."),
    ] = None,
    pretrained: opt.PretrainedOpt = False,
    weights: opt.WeightsOpt = None,
    trust: opt.TrustOpt = False,
    size: opt.SizeOpt = None,
    preprocess: opt.PreprocessOpt = "resize",
    out_dir: opt.OutOpt = Path("attnviz-out"),
    fmt: opt.FormatOpt = "png",
    cmap: opt.CmapOpt = "viridis",
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
    """Overlay the block's spatial attention (CBAM, scSE, Triplet, SimAM, CoT, coordinate...) on each image.

    With --model, the spatial attention of a torchvision or timm model, or of your own model file, instead.
    """
    block, images = opt.split_positionals(block, images or [], model, "show")
    if not images:
        raise UsageError("missing argument IMAGES", "give one or more image files or folders")
    opt.check_common(size=size, preprocess=preprocess, fmt=fmt, alpha=alpha, device=device, cmap=cmap)
    check_colour_scale(scale, vmin, vmax)
    opt.check_out_dir(out_dir)
    batch.check_batch(batch_size, workers)
    if heat_only and fmt == "jpg":
        raise UsageError("--heat-only layers are transparent, which a JPEG cannot hold", "use --format png or webp")
    if model is None:
        opt.check_block_kinds(block, KINDS["show"], "show")
    from attnviz.cam import check_cam  # imports torch: after the checks that need none

    cam = check_cam(cam) if cam else None
    inputs = batch.gather(images, out_dir, folders_first=True)  # a single bad image fails before the model loads
    loaded = opt.load_model(
        "show",
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
    from attnviz.batch import ShowTask, Writing
    from attnviz.views.base import Style

    task = ShowTask(
        loaded,
        Writing(out_dir, fmt, save_raw),
        size=size,
        preprocess=preprocess,
        style=Style(cmap=cmap, alpha=alpha, contour=contour, colorbar=colorbar, scale=scale, vmin=vmin, vmax=vmax),
        every_block=every_block,
        cam=cam,
        each=each,
        heat_only=heat_only,
    )
    head = batch.model_facts(loaded)
    batch.draw(
        "show", task, inputs, head=head, batch_size=batch_size, workers=workers, as_json=as_json, flat_json=False
    )
