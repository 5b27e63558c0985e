"""`attnviz show BLOCK IMAGE...`: the block's spatial-type maps at each stage, overlaid on each image."""

from __future__ import annotations

import json
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from attnviz.cli import options as opt
from attnviz.cli.common import err, guarded, out, progress
from attnviz.errors import ImageError, UsageError
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
) -> None:
    """Overlay the block's spatial attention (CBAM, scSE, Triplet, SimAM, CoT, coordinate...) on each image.

    With --model, the spatial attention of a torchvision or timm model, or of your own model file, instead.
    """
    from attnviz import api
    from attnviz.io.photos import load_image
    from attnviz.io.raw import save_recording

    block, images = opt.split_positionals(block, images or [], model, "show")
    if not images:
        raise UsageError("missing argument IMAGES", "give one or more image files or folders")
    opt.check_common(size=size, preprocess=preprocess, fmt=fmt, alpha=alpha, device=device, cmap=cmap)
    check_colour_scale(scale, vmin, vmax)
    opt.check_out_dir(out_dir)
    if model is None:
        opt.check_block_kinds(block, KINDS["show"], "show")
    from attnviz.analysis import image_paths  # these import torch: after the checks that need none
    from attnviz.cam import check_cam

    cam = check_cam(cam) if cam else None
    paths = image_paths(images)
    first = load_image(paths[0])  # a bad first image fails before the model is built
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
    style = {
        "every_block": every_block,
        "contour": contour,
        "colorbar": colorbar,
        "cam": cam,
        "cmap": cmap,
        "scale": scale,
        "vmin": vmin,
        "vmax": vmax,
        "each": each,
        "heat_only": heat_only,
    }
    results, skipped = [], []
    # PNG encoding releases the GIL, so pictures are written on a second thread while the next photo runs.
    with (
        progress("show", len(paths), enabled=len(paths) > 1 and not as_json) as meter,
        ThreadPoolExecutor(max_workers=1) as writer,
    ):
        pending: list[tuple[Future[list[Path]], dict[str, object]]] = []
        for index, path in enumerate(paths):
            try:
                photo = first if index == 0 else load_image(path)
            except ImageError as exc:
                if len(paths) == 1:
                    raise
                skipped.append({"image": str(path), "error": str(exc)})
                err.print(f"[yellow]skipped {escape(str(path))}: {escape(exc.message)}[/]")
                meter.advance()
                continue
            view = api.show(loaded, path, photo=photo, size=size, preprocess=preprocess, alpha=alpha, **style)
            result: dict[str, object] = dict(view.summary)
            result["raw"] = (
                [str(p) for p in save_recording(view.analysis, out_dir / f"{view.stem}_{view.name}_raw")]
                if save_raw
                else []
            )
            pending.append((writer.submit(view.save, out_dir, fmt), result))
            _collect(pending, results, quiet=as_json, keep=2)
            meter.advance()
        _collect(pending, results, quiet=as_json, keep=0)
    if as_json:
        out.print_json(
            json.dumps(
                {"model": loaded.config.to_dict(), "weights": loaded.source, "results": results, "skipped": skipped}
            )
        )
    if skipped:
        raise ImageError(f"{len(skipped)} of {len(paths)} images could not be read (see the lines above)")


def _collect(
    pending: list[tuple[Future[list[Path]], dict[str, object]]],
    results: list[dict[str, object]],
    *,
    quiet: bool,
    keep: int,
) -> None:
    """Report finished writes oldest first, waiting until at most `keep` are still running."""
    while pending and (len(pending) > keep or pending[0][0].done()):
        future, result = pending.pop(0)
        written = future.result()
        result["files"] = [*map(str, written), *result.pop("raw")]  # type: ignore[misc]
        results.append(result)
        if not quiet:
            for path in written:
                err.print(f"wrote {path}", markup=False)
