"""`attnviz channels BLOCK [IMAGE...] --layer N`: channel-weight bars (and SK-style branch selection) for stage N."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from attnviz.cli import batch
from attnviz.cli import options as opt
from attnviz.cli.common import guarded
from attnviz.options import KINDS


@guarded
def channels(
    block: opt.OptionalBlockArg = None,
    images: Annotated[
        list[Path] | None,
        typer.Argument(help="Image files or folders of images (default: a bundled sample photo).", show_default=False),
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
    batch_size: opt.BatchSizeOpt = None,
    workers: opt.WorkersOpt = None,
) -> None:
    """Draw the per-channel weights of SE, ECA, CBAM's channel half, scSE, GAM, NAM... as bar charts.

    With --model, the channel attention of a torchvision or timm model, or of your own model file, instead.
    """
    from attnviz.io.shipped import default_sample
    from attnviz.options import check_channel_options

    block, images = opt.split_positionals(block, images or [], model, "channels")
    opt.check_common(size=size, preprocess=preprocess, fmt=fmt, alpha=0.5, device=device)
    opt.check_out_dir(out_dir)
    batch.check_batch(batch_size, workers)
    if model is None:
        opt.check_block_kinds(block, KINDS["channels"], "channels")
    check_channel_options(order, top_k)
    if stages is not None:
        opt.parse_stages(stages)  # a malformed --stages fails before anything is read
    inputs = batch.gather(images or [default_sample()], out_dir)
    loaded = opt.load_model(
        "channels",
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
        layer=layer,
    )
    from attnviz.batch import ChannelsTask, Writing

    task = ChannelsTask(
        loaded, Writing(out_dir, fmt, save_raw), size=size, preprocess=preprocess, layer=layer, order=order, top_k=top_k
    )
    head = batch.model_facts(loaded)
    batch.draw(
        "channels", task, inputs, head=head, batch_size=batch_size, workers=workers, as_json=as_json, flat_json=True
    )
