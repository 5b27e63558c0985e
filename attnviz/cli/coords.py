"""`attnviz coords BLOCK IMAGE`: Coordinate Attention's H and W profiles beside the image, and their product."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from attnviz.cli import options as opt
from attnviz.cli.common import guarded, report
from attnviz.errors import UsageError

KINDS = ("coordinate",)


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
    from attnviz.images import load_image
    from attnviz.io.raw import save_recording
    from attnviz.pipeline import analyse
    from attnviz.render.charts import coordinate_panel, figure_to_image
    from attnviz.render.overlay import grid
    from attnviz.render.save import save
    from attnviz.views.common import describe, stage_representatives

    block, images = opt.split_positionals(block, [image] if image else [], model, "coords")
    if len(images) != 1:
        raise UsageError("coords draws one image" if images else "missing argument IMAGE", "give one image file")
    image = images[0]
    opt.check_common(size=size, preprocess=preprocess, fmt=fmt, alpha=alpha, device=device, cmap=cmap)
    opt.check_out_dir(out_dir)
    if model is None:
        opt.check_block_kinds(block, KINDS, "coords")
    photo = load_image(image)
    loaded = opt.load(
        block,
        backbone=backbone,
        stages=stages,
        pretrained=pretrained,
        weights=weights,
        trust=trust,
        device=device,
        quiet=as_json,
        model=model,
        timm_attn=timm_attn,
        size=size,
        kinds=KINDS,
        command="coords",
    )
    name = loaded.name
    analysis = analyse(loaded, image, size=opt.input_size(size, loaded), mode=preprocess, kinds=KINDS, image=photo)
    by_layer = analysis.recording.by_layer()
    panels, summary = [], []
    for layer in stage_representatives(loaded, list(by_layer), every_block=every_block):
        h_map, w_map = by_layer[layer][:2]
        a_h, a_w, outer = analysis.coordinate(h_map, w_map)
        title = describe(h_map, loaded).rsplit(" · ", 1)[0]
        figure = coordinate_panel(analysis.image, a_h, a_w, outer, cmap=cmap, alpha=alpha, title=title)
        panels.append(figure_to_image(figure))
        summary.append(
            {
                "layer": layer,
                "h_shape": list(h_map.shape),
                "w_shape": list(w_map.shape),
                "peak_row": int(a_h.argmax()) if a_h.size else None,
                "peak_col": int(a_w.argmax()) if a_w.size else None,
            }
        )
    written = [
        save(
            grid(panels, columns=1 if len(panels) < 3 else 2),
            opt.output_path(out_dir, image.stem, name, "coords", fmt),
            fmt,
        )
    ]
    if save_raw:
        written += save_recording(analysis, out_dir / f"{image.stem}_{name}_raw")
    report(
        written,
        {"model": loaded.config.to_dict(), "weights": loaded.source, "image": str(image), "layers": summary},
        as_json=as_json,
    )
