"""`attnviz report IMAGE... (BLOCK | --model SPEC)`: one interactive, self-contained HTML file per image."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from attnviz.blocks.catalog import block_names
from attnviz.cli import batch
from attnviz.cli import options as opt
from attnviz.cli.common import err, guarded
from attnviz.errors import UsageError
from attnviz.report.page import DEFAULT_BUDGET_MB

if TYPE_CHECKING:
    from attnviz.pipeline import Outcome


def split_arguments(items: list[str], model: str | None) -> tuple[str | None, list[Path]]:
    """(BLOCK, images) from the positional arguments, in either order: a block name that is not also a file is the
    block; with --model there is none.

    Raises:
        UsageError: no block (without --model), two blocks, or no image.
    """
    blocks = [item for item in items if item in block_names() and not Path(item).exists()]
    images = [Path(item) for item in items if item not in blocks]
    if model is None and not blocks:
        raise UsageError("missing argument BLOCK", "e.g. attnviz report photo.jpg mhsa, or pass --model")
    if len(blocks) > 1:
        raise UsageError(f"give one block, got {', '.join(blocks)}", "one report draws one model")
    if not images:
        raise UsageError("missing argument IMAGE", "give one or more image files or folders")
    return (blocks[0] if blocks else None), images


@guarded
def report(
    items: Annotated[
        list[str] | None,
        typer.Argument(
            help="Image files or folders, and the attention block (e.g. mhsa), in either order. Left out with --model.",
            show_default=False,
            metavar="IMAGE... [BLOCK]",
        ),
    ] = None,
    model: opt.ModelOpt = None,
    timm_attn: opt.TimmAttnOpt = None,
    backbone: opt.BackboneOpt = "resnet18",
    stages: opt.DrawStagesOpt = None,
    pretrained: opt.PretrainedOpt = False,
    weights: opt.WeightsOpt = None,
    trust: opt.TrustOpt = False,
    size: opt.SizeOpt = None,
    preprocess: opt.PreprocessOpt = "resize",
    heads: Annotated[
        str | None, typer.Option("--heads", help="Self-attention heads to keep, comma-separated (default: all).")
    ] = None,
    cam: Annotated[
        str | None,
        typer.Option(
            "--cam", help="Also the model's CAM of each stage, beside its maps (gradcam, gradcamplusplus...)."
        ),
    ] = None,
    max_mb: Annotated[
        float,
        typer.Option(
            "--max-mb",
            help="Largest file written: attention rows are kept for a coarser grid of queries until the report fits; "
            "a report that still does not fit is refused.",
        ),
    ] = DEFAULT_BUDGET_MB,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder the reports are written to.")] = Path(
        "attnviz-out"
    ),
    cmap: opt.CmapOpt = "viridis",
    alpha: opt.AlphaOpt = 0.5,
    device: opt.DeviceOpt = "auto",
    as_json: opt.JsonOpt = False,
    batch_size: opt.BatchSizeOpt = None,
    workers: opt.WorkersOpt = None,
) -> None:
    """Write one self-contained HTML report per image: every stage's maps over the photo, the attention row of any
    pixel you click, channel weights to hover and sort, CAMs with --cam. Opens offline, from file://.
    """
    from attnviz.options import parse_heads
    from attnviz.report.api import check_budget

    block, images = split_arguments(items or [], model)
    opt.check_common(size=size, preprocess=preprocess, fmt="png", alpha=alpha, device=device, cmap=cmap)
    check_budget(max_mb)
    head_list = parse_heads(heads)
    opt.check_out_dir(out_dir)
    batch.check_batch(batch_size, workers)
    if stages is not None:
        opt.parse_stages(stages)
    from attnviz.cam import check_cam  # imports torch: after the checks that need none
    from attnviz.report.api import load_for_report, report_task

    cam = check_cam(cam) if cam else None
    inputs = batch.gather(images, out_dir)  # a single bad image fails before the model loads
    loaded = load_for_report(
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
    )
    opt.announce(loaded, quiet=as_json)
    options = {"heads": head_list, "cam": cam, "cmap": cmap, "alpha": alpha, "max_mb": max_mb}
    task = report_task(loaded, out_dir, size=size, preprocess=preprocess, **options)

    def say_size(outcome: Outcome) -> None:
        if not as_json:
            summary = outcome.summary
            image = escape(summary["image"])
            err.print(f"report of {image}: {len(summary['maps'])} maps ({summary['bytes'] / 2**20:.2f} MB)")

    head = batch.model_facts(loaded)
    batch.draw(
        "report",
        task,
        inputs,
        head=head,
        batch_size=batch_size,
        workers=workers,
        as_json=as_json,
        flat_json=False,
        on_drawn=say_size,
    )
