"""`attnviz report` over many photos: the folder runner's Task (attnviz.pipeline) that writes one HTML report per
photo (`attnviz.report.build.analyse_for_report` is its capture of one photo alone)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnviz.analysis import Analysis, query_fractions
from attnviz.batch import ModelTask, forward_batch
from attnviz.capture import QueryPoints
from attnviz.errors import CaptureError
from attnviz.pipeline import Photo
from attnviz.report.page import DEFAULT_BUDGET_MB


@dataclass
class ReportPage:
    """One photo's report, drawn and not yet written: the page, the photo it is of, and the maps it holds."""

    html: str
    image: Path
    maps: list[str] = field(default_factory=list)


@dataclass
class ReportTask(ModelTask):
    """`attnviz report` over many photos (options as `attnviz.report.report`): every map of each photo, with every
    attention row when the matrices fit capture's memory limit, else the rows of a grid of query pixels."""

    heads: Sequence[int] | None = None
    cam: str | None = None
    cmap: str = "viridis"
    alpha: float = 0.5
    max_mb: float = DEFAULT_BUDGET_MB

    def __post_init__(self) -> None:
        self.in_process = self.in_process or self.cam is not None  # a CAM runs the model backwards: here
        self._cams = None
        if self.cam:
            from attnviz.cam import stage_cams

            self._cams = stage_cams(self.loaded, self.cam)

    def forward(self, photos: list[Photo]) -> list[tuple[Analysis, list[str]]]:
        """(analysis, notes for the page) per photo; over the memory limit, each photo alone with query points."""
        try:
            analyses = forward_batch(self.loaded, photos, kinds=self.kinds, layers=self.layers, heads=self.heads)
        except CaptureError:
            return [self._with_query_points(photo) for photo in photos]
        return [(analysis, []) for analysis in analyses]

    def _with_query_points(self, photo: Photo) -> tuple[Analysis, list[str]]:
        from attnviz.report.build import FALLBACK_NOTE, fallback_points

        assert photo.image is not None
        fractions = tuple(query_fractions(fallback_points(photo.image.size), photo.geometry))
        queries = QueryPoints(fractions, self.loaded.placement, photo.geometry.input_size)
        (analysis,) = forward_batch(
            self.loaded, [photo], kinds=self.kinds, layers=self.layers, queries=queries, heads=self.heads
        )
        return analysis, [FALLBACK_NOTE]

    def draw(self, analysis: tuple[Analysis, list[str]], extra: Any) -> ReportPage:
        """The page (coarsening the attention rows to fit `max_mb`; UsageError when even the coarsest does not)."""
        from attnviz.report.build import analysis_page

        photo, notes = analysis
        html = analysis_page(
            photo,
            self.loaded,
            cams=self._cams,
            cam_name=self.cam or "CAM",
            cmap=self.cmap,
            alpha=self.alpha,
            budget_mb=self.max_mb,
            notes=notes,
        )
        return ReportPage(html, Path(photo.path), [m.name for m in photo.recording])

    def write(self, view: ReportPage, stem: str) -> tuple[list[Path], list[Path], dict[str, Any]]:
        """Write the page atomically as `<stem>_<model>_report.html`: ([the file], [it] if it replaced one, summary)."""
        from attnviz.report.page import write

        target = self.writing.out / f"{stem}_{self.loaded.name}_report.html"
        existed = [target] if target.exists() else []
        written = write(view.html, target)
        summary = {"image": str(view.image), "file": str(written), "bytes": len(view.html.encode("utf-8"))}
        return [written], existed, {**summary, "maps": view.maps}
