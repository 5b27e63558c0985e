"""`report(block, image)`: the interactive HTML report of one or more photos, from Python as from the CLI.

Options are checked before torch is imported.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attnviz.errors import UsageError, option
from attnviz.options import KINDS, MATRIX_STAGES, check_drawing, names_a_model, parse_heads, parse_size
from attnviz.report.page import DEFAULT_BUDGET_MB

if TYPE_CHECKING:
    from PIL import Image
    from torch import nn

    from attnviz.loading import LoadedModel
    from attnviz.report.task import ReportTask

REPORT_KINDS = tuple(dict.fromkeys(k for kinds in KINDS.values() for k in kinds))
"""Every kind some drawing command draws: a model with any of them has a report."""


def check_budget(max_mb: float) -> None:
    if not max_mb > 0:
        raise UsageError(f"{option('max_mb')} must be above 0, got {max_mb:g}", f"e.g. {option('max_mb')} 10")


def load_for_report(block: Any = None, **options: Any) -> LoadedModel:
    """The model to report on; self-attention blocks go into stages 3 and 4 unless `stages` says (as `matrix`)."""
    from attnviz.api import load_for
    from attnviz.blocks.catalog import block_info

    default_stages = None
    if isinstance(block, str) and options.get("model") is None and not names_a_model(block):
        info = block_info(block)
        default_stages = MATRIX_STAGES if "matrix" in info.kinds else None
    return load_for("report", block, kinds=REPORT_KINDS, default_stages=default_stages, **options)


def report_task(
    loaded: LoadedModel,
    out: str | os.PathLike[str] = "attnviz-out",
    *,
    size: Any = None,
    preprocess: str = "resize",
    heads: Sequence[int] | None = None,
    cam: str | None = None,
    cmap: str = "viridis",
    alpha: float = 0.5,
    max_mb: float = DEFAULT_BUDGET_MB,
) -> ReportTask:
    """The folder runner's task that writes each photo's report to `out` (`attnviz.batch.draw_all` runs it)."""
    from attnviz.batch import Writing
    from attnviz.report.task import ReportTask

    options = {"heads": heads, "cam": cam, "cmap": cmap, "alpha": alpha, "max_mb": max_mb}
    return ReportTask(loaded, Writing(Path(out), "html"), size=size, preprocess=preprocess, **options)


def report_image(
    loaded: LoadedModel,
    image: str | os.PathLike[str],
    out: str | os.PathLike[str] = "attnviz-out",
    *,
    photo: Image.Image | None = None,
    **options: Any,
) -> tuple[Path, dict[str, Any]]:
    """Write the report of one image with a loaded model (options as `report_task`); (the file, a summary of what
    it holds)."""
    from attnviz.pipeline import Photo

    task = report_task(loaded, out, **options)
    one = Photo(0, Path(image), Path(image).stem, image=photo)
    task.prepare(one)
    (analysis,) = task.forward([one])
    (written,), _, summary = task.write(task.draw(analysis, one.extra), one.stem)
    return written, summary


def report(
    block: str | nn.Module | LoadedModel | None = None,
    images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    *,
    out: str | os.PathLike[str] = "attnviz-out",
    model: str | os.PathLike[str] | nn.Module | None = None,
    heads: str | Sequence[int] | None = None,
    cam: str | None = None,
    cmap: str = "viridis",
    alpha: float = 0.5,
    max_mb: float = DEFAULT_BUDGET_MB,
    size: int | str | tuple[int, int] | None = None,
    preprocess: str = "resize",
    device: str = "auto",
    **load_options: Any,
) -> list[Path]:
    """Write one self-contained HTML report per image (`attnviz report`): every stage's maps over the photo, the
    attention row of any pixel you click, channel weights you can hover and sort, CAMs when asked.

    Args:
        block: A block name, a model spec, an nn.Module, or a LoadedModel.
        images: An image file or several, or folders of them.
        out: Folder the reports are written to (`<image stem>_<model>_report.html`; photos of one stem in several
            folders get the folders in their names).
        model: A model attnviz did not build (as `attnviz.load`'s `model`).
        heads: Heads of self-attention to keep ("0,2" or [0, 2]; default all).
        cam: Also the model's CAM of each stage (gradcam, gradcamplusplus, ...), beside that stage's maps.
        cmap: The colormap the page opens with (it offers others).
        alpha: The overlays' opacity the page opens with, 0-1.
        max_mb: The largest file written: attention rows are kept for a coarser grid of queries until the report
            fits, and a report that does not fit even so is refused.
        size: The model input: a side, or (width, height) (default: what the weights were trained at, or 224).
        preprocess: Fit the photo to the input by "resize", "crop" or "letterbox".
        device: "auto", "cpu" or "cuda".
        **load_options: backbone, stages, weights, pretrained, trust, timm_attn (see `attnviz.load`).

    Returns:
        The files written, in the order of the photos.

    Raises:
        AttnvizError: the first photo that could not be drawn, once the others are written.
    """
    check_drawing(size=size, preprocess=preprocess, device=device, alpha=alpha, cmap=cmap)
    check_budget(max_mb)
    size = parse_size(size)
    head_list = parse_heads(heads)
    if images is None:
        raise UsageError("missing argument IMAGE", "give one or more image files")
    listed = [images] if isinstance(images, str | os.PathLike) else list(images)

    from attnviz.batch import draw_all
    from attnviz.cam import check_cam
    from attnviz.io.names import run_inputs

    cam = check_cam(cam) if cam else None
    run_inputs([Path(i) for i in listed], Path(out))  # a missing path fails before the model is built
    loaded = load_for_report(block, model=model, size=size, device=device, **load_options)
    options = {"size": size, "preprocess": preprocess, "heads": head_list, "cam": cam, "cmap": cmap, "alpha": alpha}
    task = report_task(loaded, out, max_mb=max_mb, **options)
    outcomes = list(draw_all(task, listed, out=out))
    failed = next((o.error for o in outcomes if o.error is not None), None)
    if failed is not None:
        raise failed
    return [path for o in outcomes for path in o.files]
