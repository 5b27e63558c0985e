"""`attnviz matrix BLOCK IMAGE --query X,Y`: where a pixel looks, per head, for self-attention blocks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from attnviz.cli import options as opt
from attnviz.cli.common import guarded, report
from attnviz.errors import UsageError

KINDS = ("matrix",)


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
    cmap: opt.CmapOpt = "jet",
    alpha: opt.AlphaOpt = 0.5,
    device: opt.DeviceOpt = "auto",
    as_json: opt.JsonOpt = False,
    save_raw: opt.SaveRawOpt = False,
) -> None:
    """Overlay the attention row of each query pixel on the image (MHSA, DANet, criss-cross, ECA+MHSA).

    Self-attention over every pixel of an early stage is large, so by default blocks go into stages 3 and 4 only.
    """
    from attnviz.images import load_image
    from attnviz.maps import matrix_rows
    from attnviz.pipeline import analyse, check_points
    from attnviz.render.charts import matrix_heatmaps
    from attnviz.render.save import save
    from attnviz.views.common import describe, query_tiles, stage_representatives, tile_grid

    block, images = opt.split_positionals(block, [image] if image else [], model, "matrix")
    if len(images) != 1:
        raise UsageError("matrix draws one image" if images else "missing argument IMAGE", "give one image file")
    image = images[0]
    opt.check_common(size=size, preprocess=preprocess, fmt=fmt, alpha=alpha, device=device, cmap=cmap)
    opt.check_out_dir(out_dir)
    if model is None:
        opt.check_block_kinds(block, KINDS, "matrix")
    head_list = _parse_heads(heads)
    photo = load_image(image)
    points = [opt.parse_point(q) for q in query] if query else [(photo.width // 2, photo.height // 2)]
    check_points(points, photo.size)
    loaded = opt.load(
        block,
        backbone=backbone,
        stages=stages,
        default_stages="3,4",
        pretrained=pretrained,
        weights=weights,
        trust=trust,
        device=device,
        quiet=as_json,
        model=model,
        timm_attn=timm_attn,
        size=size,
        kinds=KINDS,
        command="matrix",
    )
    name = loaded.name
    analysis = analyse(
        loaded,
        image,
        size=opt.input_size(size, loaded),
        mode=preprocess,
        kinds=KINDS,
        image=photo,
        query_points=None if heatmaps else points,
        heads=head_list,
    )
    tiles = query_tiles(analysis, loaded, points, cmap=cmap, alpha=alpha, every_block=every_block)
    written = []
    if tiles:
        written.append(save(tile_grid(tiles), opt.output_path(out_dir, image.stem, name, "matrix", fmt), fmt))
    drawn = stage_representatives(loaded, analysis.recording.layers(), every_block=every_block)
    for m in analysis.recording:
        full = m.queries is None and m.tokens in ("grid", "channel")
        if m.layer in drawn and full and (heatmaps or m.tokens == "channel"):
            what = f"heatmap_{m.layer.replace('.', '-')}_{m.label}"
            unit = "channel" if m.tokens == "channel" else "token"
            figure = matrix_heatmaps(matrix_rows(m)[0], title=describe(m, loaded), unit=unit)
            written.append(save(figure, opt.output_path(out_dir, image.stem, name, what, fmt), fmt))
    if save_raw:
        from attnviz.io.raw import save_recording

        written += save_recording(analysis, out_dir / f"{image.stem}_{name}_raw")
    report(
        written,
        {
            "model": loaded.config.to_dict(),
            "weights": loaded.source,
            "image": str(image),
            "queries": [list(p) for p in points],
            "maps": [m.summary() for m in analysis.recording],
        },
        as_json=as_json,
    )


def _parse_heads(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        heads = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--heads must be comma-separated head numbers, got {text!r}", "e.g. --heads 0,2") from None
    if not heads or min(heads) < 0:
        raise UsageError(f"--heads must list head numbers from 0 up, got {text!r}")
    return heads
