"""`attnviz coords BLOCK IMAGE`: Coordinate Attention's H and W profiles beside the image, and their product."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from attnviz.cli import options as opt
from attnviz.cli.common import guarded, write_view
from attnviz.errors import UsageError
from attnviz.options import KINDS


@guarded
def coords(
    block: opt.OptionalBlockArg = None,
    image: Annotated[Path | None, typer.Argument(help="Image file.", show_default=False)] = None,
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
) -> None:
    """Draw Coordinate Attention's a_h and a_w strips as profiles along the image, and a_h x a_w as an overlay.

    With --model, the coordinate attention of a timm model (e.g. --model timm:resnet18 --timm-attn coord).
    """
    from attnviz import api
    from attnviz.io.photos import load_image

    block, images = opt.split_positionals(block, [image] if image else [], model, "coords")
    if len(images) != 1:
        raise UsageError("coords draws one image" if images else "missing argument IMAGE", "give one image file")
    image = images[0]
    opt.check_common(size=size, preprocess=preprocess, fmt=fmt, alpha=alpha, device=device, cmap=cmap)
    opt.check_out_dir(out_dir)
    if model is None:
        opt.check_block_kinds(block, KINDS["coords"], "coords")
    photo = load_image(image)
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
    view = api.coords(
        loaded, image, photo=photo, every_block=every_block, cmap=cmap, alpha=alpha, size=size, preprocess=preprocess
    )
    write_view(view, loaded, out_dir, fmt, save_raw=save_raw, as_json=as_json)
