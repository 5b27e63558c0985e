"""The drawing commands over many photos: one `attnviz.pipeline.Task` per command, and the batched forward that
gives each photo of a batch exactly the maps and output rows that are its own.

    >>> from attnviz import batch, load
    >>> loaded = load("cbam")
    >>> task = batch.ShowTask(loaded, out="attnviz-out")
    >>> for outcome in batch.draw_all(task, ["photos/"], out="attnviz-out"):
    ...     print(outcome.path, outcome.files or outcome.error)

The pictures are those `attnviz.show(...)` (and channels, coords, matrix) draw for each photo alone: the photo is
fitted to the model input by the same function and captured with the same options.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from attnviz.analysis import Analysis, query_fractions
from attnviz.capture import DEFAULT_MAX_BYTES, QueryPoints, Recording, capture
from attnviz.finite import check_finite
from attnviz.images import preprocess
from attnviz.io.names import output_stems, run_inputs
from attnviz.io.photos import load_image
from attnviz.loading import LoadedModel
from attnviz.options import check_points, parse_size
from attnviz.pipeline import NotBatched, Outcome, Photo, Run
from attnviz.views.base import DEFAULT_STYLE, Style, View


def forward_batch(
    loaded: LoadedModel,
    photos: Sequence[Photo],
    *,
    kinds: Sequence[str] | None,
    layers: Sequence[str] | None = None,
    queries: QueryPoints | None = None,
    heads: Sequence[int] | None = None,
) -> list[Analysis]:
    """One Analysis per photo from one forward pass over all of them (prepared by `ModelTask.prepare`).

    The capture's matrix budget is per photo. A single photo is analysed exactly as `attnviz.analyse` does.

    Raises:
        NotBatched: a map has no batch axis of the batch's length (run the photos one at a time).
    """
    count = len(photos)
    tensor = (torch.cat([p.tensor for p in photos]) if count > 1 else photos[0].tensor).to(loaded.device)
    layers = loaded.drawn_layers() if layers is None else layers
    with (
        torch.inference_mode(),
        capture(
            loaded.model, kinds=kinds, layers=layers, queries=queries, heads=heads, max_bytes=DEFAULT_MAX_BYTES * count
        ) as recording,
    ):
        output = loaded.model(tensor)
    check_finite(loaded.model, tensor, output, (m.tensor for m in recording))
    if count == 1:
        return [_analysis(photos[0], recording, output, tensor, loaded)]
    return [
        _analysis(photo, _photo_recording(recording, i, count), _row(output, i, count), tensor[i : i + 1], loaded)
        for i, photo in enumerate(photos)
    ]


def _analysis(photo: Photo, recording: Recording, output: Any, tensor: torch.Tensor, loaded: LoadedModel) -> Analysis:
    assert photo.image is not None
    return Analysis(photo.path, photo.image, photo.geometry, recording, output, tensor, loaded.placement)


def _photo_recording(recording: Recording, index: int, count: int) -> Recording:
    """Photo `index`'s maps (copies: a photo's maps do not keep the batch's alive)."""
    maps = []
    for m in recording:
        if m.tensor.dim() == 0 or m.tensor.shape[0] != count:
            raise NotBatched(m.name)
        maps.append(replace(m, tensor=m.tensor[index : index + 1].clone()))
    return Recording(maps, dict(recording.taps))


def _row(output: Any, index: int, count: int) -> Any:
    """Photo `index`'s part of a model output (tensors with a batch axis, inside tuples, lists and dicts)."""
    if isinstance(output, torch.Tensor):
        return output[index : index + 1] if output.dim() and output.shape[0] == count else output
    if isinstance(output, (tuple, list)):
        return type(output)(_row(item, index, count) for item in output)
    if isinstance(output, dict):
        return {key: _row(item, index, count) for key, item in output.items()}
    return output


@dataclass
class Writing:
    """Where and how a run writes: the folder, the picture format, and whether the raw tensors go with them."""

    out: Path = Path("attnviz-out")
    fmt: str = "png"
    save_raw: bool = False

    def write(self, view: View, stem: str) -> tuple[list[Path], list[Path], dict[str, Any]]:
        """Write `view` under `stem`, all of its files or none: (files, those that replaced a file, summary)."""
        from attnviz.io.raw import save_view
        from attnviz.render.save import output_path

        view.stem = stem
        targets = [output_path(self.out / view.file_name(what, self.fmt), self.fmt) for what in view.pictures]
        if self.save_raw:
            targets += [self.out / f"{stem}_{view.name}_raw.{suffix}" for suffix in ("npz", "json")]
        existed = [t for t in targets if t.exists()]
        return save_view(view, self.out, self.fmt, raw=self.save_raw), existed, view.summary


@dataclass
class ModelTask:
    """What the classifier commands share: photos fitted to the model input, a batched forward under capture."""

    loaded: LoadedModel
    writing: Writing = field(default_factory=Writing)
    size: int | str | tuple[int, int] | None = None
    preprocess: str = "resize"
    in_process: bool = False
    kinds: Sequence[str] | None = None
    layers: Sequence[str] | None = None

    def prepare(self, photo: Photo) -> None:
        """Read the photo (unless read) and fit it to the model input, as `attnviz.analyse` does."""
        if photo.image is None:
            photo.image = load_image(photo.path)
        photo.tensor, photo.geometry = preprocess(
            photo.image,
            size=parse_size(self.size) or self.loaded.input_size,
            mode=self.preprocess,
            mean=self.loaded.mean,
            std=self.loaded.std,
        )

    def forward(self, photos: list[Photo]) -> list[Analysis]:
        return forward_batch(self.loaded, photos, kinds=self.kinds, layers=self.layers)

    def note(self, analysis: Any) -> Any:
        return None

    def draw(self, analysis: Analysis, extra: Any) -> View:
        raise NotImplementedError

    def write(self, view: View, stem: str) -> tuple[list[Path], list[Path], dict[str, Any]]:
        view.loaded = self.loaded  # an HTML report names the model's weights and stages
        return self.writing.write(view, stem)


@dataclass
class ShowTask(ModelTask):
    """`attnviz show` over many photos (options as `attnviz.show`)."""

    style: Style = DEFAULT_STYLE
    every_block: bool = False
    cam: str | None = None
    each: bool = False
    heat_only: bool = False

    def __post_init__(self) -> None:
        from attnviz.views import show

        self.kinds = show.CAPTURED
        self.in_process = self.in_process or self.cam is not None  # a CAM runs the model backwards: here
        self._cams = None
        if self.cam:
            from attnviz.cam import stage_cams

            self._cams = stage_cams(self.loaded, self.cam)

    def draw(self, analysis: Analysis, extra: Any) -> View:
        from attnviz.views import show

        options = {"every_block": self.every_block, "each": self.each, "heat_only": self.heat_only}
        return show.draw(analysis, self.loaded, self.style, cams=self._cams, cam_name=self.cam or "CAM", **options)


@dataclass
class ChannelsTask(ModelTask):
    """`attnviz channels` over many photos (options as `attnviz.channels`)."""

    layer: int | None = None
    order: str = "sorted"
    top_k: int = 10

    def __post_init__(self) -> None:
        from attnviz.views import channels

        self.kinds = channels.KINDS
        self.layers = self.loaded.layers_of_stage(self.layer) if self.layer is not None else None

    def draw(self, analysis: Analysis, extra: Any) -> View:
        from attnviz.views import channels

        return channels.draw(analysis, self.loaded, layer=self.layer, order=self.order, top_k=self.top_k)


@dataclass
class CoordsTask(ModelTask):
    """`attnviz coords` over many photos (options as `attnviz.coords`)."""

    style: Style = DEFAULT_STYLE
    every_block: bool = False

    def __post_init__(self) -> None:
        from attnviz.views import coords

        self.kinds = coords.KINDS

    def draw(self, analysis: Analysis, extra: Any) -> View:
        from attnviz.views import coords

        return coords.draw(analysis, self.loaded, self.style, every_block=self.every_block)


@dataclass
class MatrixTask(ModelTask):
    """`attnviz matrix` over many photos: the same query pixels on each (default: each photo's centre); photos run
    in one batch only when their query points fall on the same spots of the model input."""

    style: Style = DEFAULT_STYLE
    points: Sequence[tuple[float, float]] | None = None
    heads: Sequence[int] | None = None
    heatmaps: bool = False
    every_block: bool = False

    def __post_init__(self) -> None:
        from attnviz.views import matrix

        self.kinds = matrix.KINDS

    def prepare(self, photo: Photo) -> None:
        from attnviz.views import matrix

        super().prepare(photo)
        assert photo.image is not None
        points = list(self.points) if self.points else matrix.centre(photo.image.size)
        check_points(points, photo.image.size)
        photo.extra = points
        photo.key = None if self.heatmaps else tuple(query_fractions(points, photo.geometry))

    def forward(self, photos: list[Photo]) -> list[Analysis]:
        first = photos[0]
        queries = None
        if not self.heatmaps:
            fractions = tuple(query_fractions(first.extra, first.geometry))
            queries = QueryPoints(fractions, self.loaded.placement, first.geometry.input_size)
        return forward_batch(self.loaded, photos, kinds=self.kinds, queries=queries, heads=self.heads)

    def draw(self, analysis: Analysis, extra: Any) -> View:
        from attnviz.views import matrix

        return matrix.draw(
            analysis, self.loaded, self.style, points=extra, heatmaps=self.heatmaps, every_block=self.every_block
        )


@dataclass
class AsffTask:
    """`attnviz asff-weights` over many photos: each photo through the detector alone (its detections are decoded
    per image), drawn in the workers. `note` keeps, per photo, whether detections were decoded and their table."""

    loaded: Any
    writing: Writing = field(default_factory=Writing)
    size: int | None = None
    preprocess: str = "letterbox"
    score: float = 0.3
    iou: float = 0.5
    max_detections: int = 50
    cmap: str = "viridis"
    alpha: float = 0.55
    in_process: bool = False

    def prepare(self, photo: Photo) -> None:
        if photo.image is None:
            photo.image = load_image(photo.path)
        photo.key = photo.index  # never batched

    def forward(self, photos: list[Photo]) -> list[Any]:
        from attnviz.detection.analysis import analyse_detector

        options = {"score": self.score, "iou": self.iou, "max_detections": self.max_detections}
        return [
            analyse_detector(self.loaded, p.path, size=self.size, mode=self.preprocess, image=p.image, **options)
            for p in photos
        ]

    def note(self, analysis: Any) -> Any:
        """(whether the detector's outputs were decoded, the detections table or None when there are none)."""
        from attnviz.detection.views import detections_table

        decoded = analysis.detections is not None
        return decoded, detections_table(analysis, self.score) if analysis.detections else None

    def draw(self, analysis: Any, extra: Any) -> View:
        from attnviz.detection.views import asff_view

        return asff_view(analysis, self.loaded, score=self.score, cmap=self.cmap, alpha=self.alpha)

    def write(self, view: View, stem: str) -> tuple[list[Path], list[Path], dict[str, Any]]:
        return self.writing.write(view, stem)


def photos_of(paths: Sequence[Path], read: dict[Path, Any] | None = None) -> list[Photo]:
    """The Photos of a run: each path with its unique output stem (and the image where already `read`)."""
    read = read or {}
    return [
        Photo(index, path, stem, image=read.get(path))
        for index, (path, stem) in enumerate(zip(paths, output_stems(paths), strict=True))
    ]


def draw_all(
    task: Any,
    inputs: Sequence[str | os.PathLike[str]],
    *,
    out: str | os.PathLike[str] = "attnviz-out",
    batch_size: int | None = None,
    workers: int | None = None,
) -> Iterator[Outcome]:
    """Draw every photo of `inputs` (files and folders) with `task`, yielding an Outcome per photo in input order.

    Args:
        task: A ShowTask, ChannelsTask, CoordsTask, MatrixTask (or any `attnviz.pipeline.Task`).
        inputs: Image files and folders of images.
        out: The output folder (attnviz's own pictures in it are not drawn again when it is also an input).
        batch_size: Photos per forward (default: `attnviz.pipeline.default_batch_size`).
        workers: Drawing processes (default: one per core; 0 draws in this process).
    """
    from attnviz.pipeline import default_batch_size

    paths, _ = run_inputs([Path(i) for i in inputs], Path(out))
    device = getattr(getattr(task, "loaded", None), "device", "cpu")
    size = batch_size or default_batch_size(device)
    with Run(photos_of(paths), task, batch_size=size, workers=workers) as outcomes:
        yield from outcomes
