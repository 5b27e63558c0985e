"""`attnviz coords BLOCK IMAGE...`: Coordinate Attention's H and W profiles beside the image, and their product."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from attnviz.cli import batch
from attnviz.cli import options as opt
from attnviz.cli.common import guarded
from attnviz.errors import UsageError
from attnviz.options import KINDS


@guarded
def coords(
    block: opt.OptionalBlockArg = None,
    images: Annotated[
        list[Path] | None, typer.Argument(help="Image files or folders of images.", show_default=False)
    ] = None,
    model: opt.ModelOpt = None,
    timm_attn: opt.TimmAttnOpt = None,
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
    alpha: opt.AlphaOpt = 0.5,
    device: opt.DeviceOpt = "auto",
    as_json: opt.JsonOpt = False,
    save_raw: opt.SaveRawOpt = False,
    batch_size: opt.BatchSizeOpt = None,
    workers: opt.WorkersOpt = None,
) -> None:
    """Draw Coordinate Attention's a_h and a_w strips as profiles along the image, and a_h x a_w as an overlay.

    With --model, the coordinate attention of a timm model (e.g. --model timm:resnet18 --timm-attn coord).
    """
    block, images = opt.split_positionals(block, images or [], model, "coords")
    if not images:
        raise UsageError("missing argument IMAGES", "give one or more image files or folders")
    opt.check_common(size=size, preprocess=preprocess, fmt=fmt, alpha=alpha, device=device, cmap=cmap)
    opt.check_out_dir(out_dir)
    batch.check_batch(batch_size, workers)
    if model is None:
        opt.check_block_kinds(block, KINDS["coords"], "coords")
    inputs = batch.gather(images, out_dir)
    loaded = opt.load_model(
        "coords",
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
    from attnviz.batch import CoordsTask, Writing
    from attnviz.views.base import Style

    task = CoordsTask(
        loaded,
        Writing(out_dir, fmt, save_raw),
        size=size,
        preprocess=preprocess,
        style=Style(cmap=cmap, alpha=alpha),
        every_block=every_block,
    )
    head = batch.model_facts(loaded)
    batch.draw(
        "coords", task, inputs, head=head, batch_size=batch_size, workers=workers, as_json=as_json, flat_json=True
    )
