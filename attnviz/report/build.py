"""Reports end to end: an image through a loaded model (every map, every attention row that fits), or what a View
already holds, to one HTML file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attnviz.errors import UsageError, option
from attnviz.report import page
from attnviz.report.data import collect, ordinal

if TYPE_CHECKING:
    from PIL import Image

    from attnviz.analysis import Analysis
    from attnviz.cam import CamRunner
    from attnviz.loading import LoadedModel
    from attnviz.views.base import View

FALLBACK_QUERIES = 24
"""When a full attention matrix is over capture's memory limit, rows are captured for this many queries a side."""


def prediction_text(analysis: Any, loaded: LoadedModel | None) -> str | None:
    """ "circle (class 3), p = 0.97" for a classifier's output; None for anything else."""
    import torch

    output = getattr(analysis, "output", None)
    if not isinstance(output, torch.Tensor) or output.dim() != 2 or output.shape[1] < 2:
        return None
    probabilities = output.detach().float().softmax(1)[0]
    best = int(probabilities.argmax())
    classes = loaded.weights_info.classes if loaded is not None and loaded.weights_info else None
    name = f"{classes[best]} (class {best})" if classes and best < len(classes) else f"class {best}"
    return f"{name}, p = {float(probabilities[best]):.3f}"


def facts(analysis: Any, loaded: LoadedModel | None, *, model: str, weights: str | None) -> dict[str, str]:
    """The header's lines: image, model, weights, preprocessing, where cells sit, prediction."""
    g = analysis.geometry
    (width, height), (in_w, in_h) = g.original_size, g.input_size
    result = {
        "image": f"{Path(analysis.path).name} ({width}x{height} px)",
        "model": model,
        "weights": weights or "not recorded by this view (attnviz report names them)",
        "preprocessing": f"{g.mode} to {in_w}x{in_h} px (the maps are drawn back on the photo at its own aspect)",
        "cell placement": {
            "aligned": "cell j centred on input pixel s·j (convolutions with same padding)",
            "tiled": "cell j centred in the s x s tile it covers",
        }.get(getattr(analysis, "placement", "tiled"), "tiled"),
    }
    predicted = prediction_text(analysis, loaded)
    if predicted:
        result["prediction"] = predicted
    return result


def model_line(loaded: LoadedModel) -> str:
    config = loaded.config
    if loaded.foreign is None and config.block:
        stages = ",".join(map(str, loaded.stages()))
        return f"{config.backbone} + {config.block} (stages {stages})"
    return loaded.spec or loaded.name


def analysis_page(
    analysis: Analysis,
    loaded: LoadedModel | None = None,
    *,
    model: str | None = None,
    weights: str | None = None,
    cams: dict[int, CamRunner] | None = None,
    cam_name: str = "Grad-CAM",
    cmap: str = "viridis",
    alpha: float = 0.5,
    budget_mb: float = page.DEFAULT_BUDGET_MB,
    notes: Sequence[str] = (),
) -> str:
    """The HTML report of an analysed image (coarsening the attention rows to fit `budget_mb`).

    Raises:
        UsageError: the report does not fit the budget even with the rows of a coarse grid of queries.
    """
    model = model or (model_line(loaded) if loaded is not None else "unknown")
    weights = weights or (loaded.source if loaded is not None else None)
    header = facts(analysis, loaded, model=model, weights=weights)
    title = f"{Path(analysis.path).name} · {loaded.name if loaded is not None else model}"
    cam_entries: dict[int, Any] = {}

    def make(stride: int) -> str:
        runners = None if cam_entries else cams  # the CAMs are computed once, whatever the stride
        stages, found = collect(analysis, loaded, cams=runners, cam_name=cam_name, query_stride=stride)
        for stage in stages:
            if "cam" in stage:
                cam_entries[stage["stage"]] = stage["cam"]
            elif stage["stage"] in cam_entries:
                stage["cam"] = cam_entries[stage["stage"]]
        if stride > 1:
            found.append(
                f"to stay under {budget_mb:g} MB, self-attention rows are kept for every {ordinal(stride)} cell of "
                f"the larger grids (each map says which); {option('max_mb')} raises the budget"
            )
        return page.render(
            page.payload(analysis, stages, header, [*notes, *found], title=title, cmap=cmap, alpha=alpha)
        )

    html, _ = page.within_budget(make, budget_mb, Path(analysis.path).name)
    return html


def analyse_for_report(
    loaded: LoadedModel,
    image: str | Path,
    *,
    photo: Image.Image | None = None,
    size: Any = None,
    preprocess: str = "resize",
    heads: Sequence[int] | None = None,
) -> tuple[Analysis, list[str]]:
    """Every map of the image, with every attention row when the matrices fit capture's memory limit, else the rows
    of a FALLBACK_QUERIES x FALLBACK_QUERIES grid of query pixels (said in the notes): what `attnviz report`'s
    ReportTask captures of one photo."""
    from attnviz.pipeline import Photo
    from attnviz.report.task import ReportTask

    task = ReportTask(loaded, size=size, preprocess=preprocess, heads=heads)
    one = Photo(0, Path(image), Path(image).stem, image=photo)
    task.prepare(one)
    ((analysis, notes),) = task.forward([one])
    return analysis, notes


FALLBACK_NOTE = (
    "full attention matrices were over capture's memory limit: "
    f"rows captured for a {FALLBACK_QUERIES}x{FALLBACK_QUERIES} grid of queries"
)


def fallback_points(size: tuple[int, int]) -> list[tuple[float, float]]:
    """The query pixels (x, y) of a photo of `size` whose full attention matrices are over capture's limit: the
    centres of a FALLBACK_QUERIES x FALLBACK_QUERIES grid over it."""
    width, height = size
    n = FALLBACK_QUERIES
    return [((i + 0.5) * width / n, (j + 0.5) * height / n) for j in range(n) for i in range(n)]


def view_page(view: View) -> str:
    """The report of what a View's analysis captured (`View.save(out, "html")`)."""
    from attnviz.detection.analysis import DetectorAnalysis

    analysis = view.analysis
    loaded = getattr(view, "loaded", None)
    if isinstance(analysis, DetectorAnalysis):
        return detector_page(analysis, view.summary, name=view.name)
    if not all(hasattr(analysis, a) for a in ("recording", "geometry", "image")):
        raise UsageError(
            f"{view.name} pictures have no photo analysis to write an HTML report of",
            "html reports come from show, channels, coords, matrix, asff-weights and report",
        )
    return analysis_page(analysis, loaded, model=None if loaded is not None else view.name)


def detector_page(
    analysis: Any, summary: dict[str, Any], *, name: str, cmap: str = "viridis", alpha: float = 0.55
) -> str:
    """The report of a photo through an ASFF detector (`asff_weights(...).save(out, "html")`)."""
    from attnviz.report.detector import collect_detector, detections

    stages, notes = collect_detector(analysis)
    header = facts(analysis, None, model=str(summary.get("detector", name)), weights=summary.get("source"))
    header.pop("cell placement")
    found = detections(analysis)
    header["detections"] = f"{len(found)} boxes" if analysis.detections is not None else "not decoded"
    body = page.payload(
        analysis,
        stages,
        header,
        notes,
        title=f"{Path(analysis.path).name} · {name}",
        cmap=cmap,
        alpha=alpha,
        detections=found,
    )
    html, _ = page.within_budget(lambda _stride: page.render(body), page.DEFAULT_BUDGET_MB, Path(analysis.path).name)
    return html
