"""One image through a loaded model under capture: the photo, how it was fed in, and what the blocks computed.

`analyse(loaded, image)` feeds the image at the model's own input size unless told otherwise, so Python and the CLI
see the same maps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from attnviz.capture import QueryPoints, Recording, capture
from attnviz.errors import UsageError, option
from attnviz.finite import check_finite
from attnviz.images import Geometry, map_to_original, preprocess
from attnviz.io.photos import ImageInput, read_image
from attnviz.loading import LoadedModel
from attnviz.maps import AttentionMap, coordinate_outer, plane
from attnviz.options import check_points, parse_size, pixel_centre


@dataclass
class Analysis:
    """One image through the model: the photo, how it was fed in, and what the attention blocks computed.

    `placement` says where the model's cells sit on its input (attnviz.images.PLACEMENTS); maps are drawn there.
    """

    path: Path
    image: Image.Image
    geometry: Geometry
    recording: Recording
    output: Any
    tensor: torch.Tensor | None = None
    placement: str = "tiled"
    _thumbnails: dict[int, Image.Image] = field(default_factory=dict, repr=False)

    def thumbnail(self, width: int | None) -> Image.Image:
        """The photo scaled to `width` pixels wide, keeping its aspect (the photo itself for None)."""
        if width is None or width == self.image.width:
            return self.image
        if width not in self._thumbnails:
            height = max(1, round(self.image.height * width / self.image.width))
            self._thumbnails[width] = self.image.resize((width, height), Image.Resampling.BILINEAR)
        return self._thumbnails[width]

    def on_photo(self, cells: np.ndarray, width: int | None = None) -> np.ndarray:
        """A map covering the model input, drawn back on the photo (at `thumbnail(width)`'s size); NaN where the
        model saw nothing of the photo."""
        size = self.thumbnail(width).size if width is not None else None
        return map_to_original(np.asarray(cells, dtype=np.float32), self.geometry, size=size, placement=self.placement)

    def spatial(self, m: AttentionMap, width: int | None = None, index: int = 0) -> np.ndarray:
        """A spatial-type map drawn back on the photo's pixels (see `on_photo`)."""
        return self.on_photo(plane(m)[index], width)

    def coordinate(
        self, h_map: AttentionMap, w_map: AttentionMap, width: int | None = None, index: int = 0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Coordinate Attention on the photo's pixels: (H profile, W profile, outer-product map)."""
        outer = self.on_photo(coordinate_outer(h_map, w_map)[index], width)
        with np.errstate(all="ignore"):
            a_h = np.nanmean(self.on_photo(plane(h_map)[index], width), axis=1)
            a_w = np.nanmean(self.on_photo(plane(w_map)[index], width), axis=0)
        return a_h, a_w, outer


def query_fractions(points: Sequence[tuple[float, float]], geometry: Geometry) -> list[tuple[float, float]]:
    """Original-image pixels -> (x, y) fractions of the model input, as `capture(queries=...)` wants.

    Raises:
        UsageError: a point lies outside the image, or outside the part of it the model sees (--preprocess crop).
    """
    check_points(points, geometry.original_size)
    fractions = []
    in_w, in_h = geometry.input_size
    for x, y in points:
        ix, iy = geometry.to_input(*pixel_centre(x, y))
        if not (0 <= ix < in_w and 0 <= iy < in_h):  # cropped away: there would be nothing to draw
            raise UsageError(
                f"{option('query')} {x:g},{y:g} lies in the part of the photo that {option('preprocess')} crop cuts "
                "away, so the model never sees it",
                f"pick a point nearer the centre, or pass {option('preprocess')} resize",
            )
        fractions.append((ix / in_w, iy / in_h))
    return fractions


def analyse(
    loaded: LoadedModel,
    image: ImageInput,
    *,
    size: int | str | tuple[int, int] | None = None,
    mode: str = "resize",
    kinds: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
    query_points: Sequence[tuple[float, float]] | None = None,
    heads: Sequence[int] | None = None,
    photo: Image.Image | None = None,
) -> Analysis:
    """Run one image through the model under capture.

    Args:
        loaded: The model (see `attnviz.load`).
        image: The image file, or a PIL image.
        size: The model input: a side, or (width, height) (default: the model's own, `loaded.input_size`).
        mode: How the image is fitted to the input: "resize", "crop" or "letterbox".
        kinds: Record only these kinds of attention.
        layers: Record only blocks at or under these module paths (default: those of the drawn stages).
        query_points: For attention matrices, keep only the rows of these original-image pixels (x, y).
        heads: For attention matrices, keep only these heads.
        photo: The image file already read, to skip reading it again.
    """
    path, read = (Path(image), photo) if photo is not None else read_image(image)
    tensor, geometry = preprocess(
        read, size=parse_size(size) or loaded.input_size, mode=mode, mean=loaded.mean, std=loaded.std
    )
    if layers is None:
        layers = loaded.drawn_layers()
    queries = (
        QueryPoints(tuple(query_fractions(query_points, geometry)), loaded.placement, geometry.input_size)
        if query_points
        else None
    )
    tensor = tensor.to(loaded.device)
    with (
        torch.inference_mode(),
        capture(loaded.model, kinds=kinds, layers=layers, queries=queries, heads=heads) as rec,
    ):
        output = loaded.model(tensor)
    check_finite(loaded.model, tensor, output, (m.tensor for m in rec))
    return Analysis(path, read, geometry, rec, output, tensor, loaded.placement)
