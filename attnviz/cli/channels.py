"""`attnviz channels BLOCK [IMAGE] --layer N`: channel-weight bars (and SK-style branch selection) for stage N."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from attnviz.cli import options as opt
from attnviz.cli.common import guarded, report
from attnviz.errors import UsageError

KINDS = ("channel", "selection")


@guarded
def channels(
    block: opt.OptionalBlockArg = None,
    image: Annotated[
        Path | None, typer.Argument(help="Image file (default: a bundled sample photo).", show_default=False)
    ] = None,
    model: opt.ModelOpt = None,
    timm_attn: opt.TimmAttnOpt = None,
    layer: Annotated[
        int | None, typer.Option("--layer", "-l", help="Stage 1-4 to draw (default: the last block of every stage).")
    ] = None,
    order: Annotated[str, typer.Option("--order", help="Bars sorted by weight or in channel order.")] = "sorted",
    top_k: Annotated[int, typer.Option("--top-k", help="Mark the k strongest channels with their indices.")] = 10,
    backbone: opt.BackboneOpt = "resnet18",
    stages: opt.DrawStagesOpt = None,
    pretrained: opt.PretrainedOpt = False,
    weights: opt.WeightsOpt = None,
    trust: opt.TrustOpt = False,
    size: opt.SizeOpt = None,
    preprocess: opt.PreprocessOpt = "resize",
    out_dir: opt.OutOpt = Path("attnviz-out"),
    fmt: opt.FormatOpt = "png",
    device: opt.DeviceOpt = "auto",
    as_json: opt.JsonOpt = False,
    save_raw: opt.SaveRawOpt = False,
) -> None:
    """Draw the per-channel weights of SE, ECA, CBAM's channel half, scSE, GAM, NAM... as bar charts.

    With --model, the channel attention of a torchvision or timm model, or of your own model file, instead.
    """
    from attnviz.images import load_image
    from attnviz.io.raw import save_recording
    from attnviz.io.shipped import default_sample
    from attnviz.maps import channel_vector, selection_weights
    from attnviz.pipeline import analyse
    from attnviz.render.charts import channel_bars, channel_small_multiples, selection_chart
    from attnviz.render.save import save
    from attnviz.views.common import channel_stats, describe, stage_representatives

    block, images = opt.split_positionals(block, [image] if image else [], model, "channels")
    if len(images) > 1:
        raise UsageError("channels draws one image", "give a single image file")
    opt.check_common(size=size, preprocess=preprocess, fmt=fmt, alpha=0.5, device=device)
    opt.check_out_dir(out_dir)
    if model is None:
        opt.check_block_kinds(block, KINDS, "channels")
    if order not in ("sorted", "channel"):
        raise UsageError(f"unknown --order {order!r}", "choose sorted or channel")
    if top_k < 0:
        raise UsageError(f"--top-k must be 0 or more, got {top_k}")
    if stages is not None:
        opt.parse_stages(stages)  # a malformed --stages fails before anything is read
    path = images[0] if images else default_sample()
    photo = load_image(path)
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
        command="channels",
        layer=layer,
    )
    name = loaded.name
    layers = loaded.layers_of_stage(layer) if layer is not None else None
    analysis = analyse(
        loaded, path, size=opt.input_size(size, loaded), mode=preprocess, kinds=KINDS, layers=layers, image=photo
    )
    drawn = stage_representatives(loaded, analysis.recording.layers(), every_block=layer is not None)
    maps = [m for m in analysis.recording if m.layer in drawn]
    channel_maps = [m for m in maps if m.kind == "channel"]
    selection_maps = [m for m in maps if m.kind == "selection"]
    if not channel_maps and not selection_maps:
        raise UsageError(f"no channel attention was captured for {model or block} at the chosen layers")
    what = f"channels_stage{layer}" if layer is not None else "channels"
    written = []
    summary = []
    if channel_maps:
        vectors = [(describe(m, loaded), channel_vector(m)[0]) for m in channel_maps]
        figure = (
            channel_bars(vectors[0][1], order=order, top_k=top_k, title=vectors[0][0])
            if len(vectors) == 1
            else channel_small_multiples(vectors, order=order, top_k=min(top_k, 5))
        )
        written.append(save(figure, opt.output_path(out_dir, path.stem, name, what, fmt), fmt))
        summary += [
            {"map": m.name, "channels": int(v.size), **channel_stats(v)}
            for (_, v), m in zip(vectors, channel_maps, strict=True)
        ]
    for m in selection_maps:
        weights_kc = selection_weights(m)[0]
        names = list(m.branches) or [f"branch {k}" for k in range(weights_kc.shape[0])]
        figure = selection_chart(weights_kc, branch_names=names, title=describe(m, loaded))
        what = f"selection_{m.layer.replace('.', '-')}"
        written.append(save(figure, opt.output_path(out_dir, path.stem, name, what, fmt), fmt))
        summary.append({"map": m.name, "branches": names, "branch_means": [float(v) for v in weights_kc.mean(axis=1)]})
    if save_raw:
        written += save_recording(analysis, out_dir / f"{path.stem}_{name}_raw")
    report(
        written,
        {"model": loaded.config.to_dict(), "weights": loaded.source, "image": str(path), "maps": summary},
        as_json=as_json,
    )
