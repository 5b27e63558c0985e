"""`attnviz coords BLOCK IMAGE`: Coordinate Attention's H and W profiles beside the image, and their product."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from attnviz.cli import options as opt
from attnviz.cli.common import guarded, report
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
    cmap: opt.CmapOpt = "jet",
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
    from attnviz.io.raw import save_recording

    block, images = opt.split_positionals(block, [image] if image else [], model, "coords")
    if len(images) != 1:
        raise UsageError("coords draws one image" if images else "missing argument IMAGE", "give one image file")
    image = images[0]
    opt.check_common(size=size, preprocess=preprocess, fmt=fmt, alpha=alpha, device=device, cmap=cmap)
    opt.check_out_dir(out_dir)
    if model is None:
        opt.check_block_kinds(block, KINDS["coords"], "coords")
    photo = load_image(image)
    loaded = api.load_for(
        "coords",
        block,
        kinds=KINDS["coords"],
        model=model,
        size=size,
        device=device,
        **opt.model_options(
            backbone=backbone, stages=stages, pretrained=pretrained, weights=weights, trust=trust, timm_attn=timm_attn
        ),
    )
    opt.announce(loaded, quiet=as_json)
    view = api.coords(
        loaded, image, photo=photo, every_block=every_block, cmap=cmap, alpha=alpha, size=size, preprocess=preprocess
    )
    written = view.save(out_dir, fmt)
    if save_raw:
        written += save_recording(view.analysis, out_dir / f"{view.stem}_{view.name}_raw")
    report(written, {"model": loaded.config.to_dict(), "weights": loaded.source, **view.summary}, as_json=as_json)
