"""Turn photos into model input, keeping the geometry to draw results back on the original (reading them:
`attnviz.io.photos`).

Coordinates: every (x, y) here is continuous, x to the right and y down, in pixels of the image it refers to.
Pixel (col, row) is the unit square [col, col + 1) x [row, row + 1), so its centre is (col + 0.5, row + 0.5).
The mapping between original and model input is an affine `input = original * scale + offset` per axis, exact
for Pillow's resize, which puts pixel centres at +0.5 too.

Maps that come back at original resolution use NaN for pixels the model never saw (cut off in crop mode);
renderers draw NaN as "not seen".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from attnviz.errors import ImageError
from attnviz.io.photos import check_big_enough, to_rgb

if TYPE_CHECKING:
    import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MODES = ("resize", "crop", "letterbox")
RESAMPLES = ("bilinear", "nearest")
MIN_SIZE, MAX_SIZE = 16, 4096
Size = int | tuple[int, int]
"""A model input: the side of a square, or (width, height)."""
PLACEMENTS = ("tiled", "aligned")
"""Where the cells of a stride-s feature map sit on the input: "tiled", cell j centred in the tile it covers,
[s*j, s*(j+1)) (patch embeddings); "aligned", cell j centred on input pixel s*j, where a conv net with "same" padding
centres its receptive field (torchvision's ResNets and MobileNets: the tile convention puts their stage-4 cells 15.5
pixels down and right of where they look)."""


def first_centre(extent: int, cells: int, placement: str = "tiled") -> float:
    """Where cell 0's centre lies along an axis of `extent` input pixels split into `cells` (continuous
    coordinates: pixel p spans [p, p + 1)); cell j's centre is `first_centre + j * extent / cells`."""
    if placement not in PLACEMENTS:
        raise ValueError(f"unknown cell placement {placement!r}; expected one of {PLACEMENTS}")
    return 0.5 if placement == "aligned" else extent / cells / 2


@dataclass(frozen=True)
class Geometry:
    """How an original image maps onto the model input: `input = original * scale + offset` per axis.

    The original is resized to `resized_size` (so `scale = resized_size / original_size`), then shifted by
    `offset`: a negative offset is the part cut off by crop, a positive one the letterbox padding.

    Attributes:
        original_size: (width, height) of the original image.
        input_size: (width, height) of the model input.
        mode: How the image was fitted: "resize", "crop" or "letterbox".
        resized_size: (width, height) the whole original is resized to before cropping or padding.
        offset: (ox, oy) in input pixels where the resized image's top-left corner lands.
    """

    original_size: tuple[int, int]
    input_size: tuple[int, int]
    mode: str
    resized_size: tuple[int, int]
    offset: tuple[int, int]

    @classmethod
    def fit(cls, original_size: tuple[int, int], size: Size, mode: str) -> Geometry:
        """The geometry of fitting an image of `original_size` into an input of `size` (a side, or (width,
        height)) with `mode`."""
        in_w, in_h = input_dims(size)
        _check_mode(mode)
        width, height = original_size
        if mode == "resize":
            return cls(original_size, (in_w, in_h), mode, (in_w, in_h), (0, 0))
        ratios = (in_w / width, in_h / height)
        factor = max(ratios) if mode == "crop" else min(ratios)  # crop covers the input, letterbox fits inside it
        new_w, new_h = max(1, round(width * factor)), max(1, round(height * factor))
        if mode == "crop":  # the centre of the resized image; odd excess leaves one more on the right
            offset = (-((new_w - in_w) // 2), -((new_h - in_h) // 2))
        else:  # centred with the padding split the same way
            offset = ((in_w - new_w) // 2, (in_h - new_h) // 2)
        return cls(original_size, (in_w, in_h), mode, (new_w, new_h), offset)

    @property
    def scale(self) -> tuple[float, float]:
        """(sx, sy): input pixels per original pixel."""
        return self.resized_size[0] / self.original_size[0], self.resized_size[1] / self.original_size[1]

    def to_input(self, x: float, y: float) -> tuple[float, float]:
        """Map a point from original-image coordinates to input coordinates."""
        (rw, rh), (ow, oh) = self.resized_size, self.original_size
        return x * rw / ow + self.offset[0], y * rh / oh + self.offset[1]

    def to_original(self, x: float, y: float) -> tuple[float, float]:
        """Map a point from input coordinates to original-image coordinates."""
        (rw, rh), (ow, oh) = self.resized_size, self.original_size
        return (x - self.offset[0]) * ow / rw, (y - self.offset[1]) * oh / rh

    def input_valid_box(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1): the part of the input that holds image content (letterbox padding excluded)."""
        x0, y0 = self.to_input(0, 0)
        x1, y1 = self.to_input(*self.original_size)
        return _clip_box((x0, y0, x1, y1), self.input_size)

    def original_visible_box(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1): the part of the original that the input shows (crop mode cuts the long sides)."""
        x0, y0 = self.to_original(0, 0)
        x1, y1 = self.to_original(*self.input_size)
        return _clip_box((x0, y0, x1, y1), self.original_size)


def _clip_box(box: tuple[float, float, float, float], size: tuple[int, int]) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = box
    return max(x0, 0.0), max(y0, 0.0), min(x1, float(size[0])), min(y1, float(size[1]))


def input_dims(size: object) -> tuple[int, int]:
    """(width, height) of a model input given as a side or as (width, height), each checked to be in range."""
    sides = tuple(size) if isinstance(size, tuple | list) and len(size) == 2 else (size, size)
    return _check_side(sides[0]), _check_side(sides[1])


def _check_side(size: object) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise ImageError(f"image size must be a whole number, got {size!r}", f"use {MIN_SIZE}..{MAX_SIZE}, e.g. 224")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ImageError(f"image size {size} is out of range", f"use {MIN_SIZE}..{MAX_SIZE}, e.g. 224")
    return int(size)


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ImageError(f"unknown resize mode {mode!r}", f"choose one of: {', '.join(MODES)}")


def preprocess(
    image: Image.Image,
    size: Size = 224,
    mode: str = "resize",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> tuple[torch.Tensor, Geometry]:
    """Fit an image into the model input and normalise it.

    Args:
        image: Any PIL image; it is converted to RGB with `to_rgb`.
        size: Side of a square input, or (width, height); each 16..4096.
        mode: "resize" stretches to the input; "crop" scales the image to cover the input and centre-crops;
            "letterbox" scales it to fit inside and pads with the mean colour (0 after normalising).
        mean: Per-channel mean of 0..1 pixel values.
        std: Per-channel standard deviation of 0..1 pixel values.

    Returns:
        A float32 tensor of shape (1, 3, height, width) and the geometry that maps it back to the original.

    Raises:
        ImageError: Bad size or mode, or an image smaller than 2x2.
    """
    import torch

    geometry = Geometry.fit(image.size, size, mode)
    check_big_enough(image.size, "image")
    resized = to_rgb(image).resize(geometry.resized_size, Image.Resampling.BILINEAR)
    pixels = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)
    pixels = (pixels - _channel_stat(mean, "mean")) / _channel_stat(std, "std")
    return _place(pixels, geometry).unsqueeze(0).contiguous(), geometry


def _channel_stat(values: Sequence[float], name: str) -> torch.Tensor:
    import torch

    if len(values) != 3 or (name == "std" and 0 in values):
        raise ImageError(f"{name} must be 3 numbers, one per RGB channel (std non-zero), got {values!r}")
    return torch.tensor(values, dtype=torch.float32).view(3, 1, 1)


def _place(pixels: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """Cut (crop) or pad with zeros, i.e. the mean colour (letterbox), the resized image to the input size."""
    import torch

    width, height = geometry.input_size
    left, top = geometry.offset
    if geometry.mode == "crop":
        return pixels[:, -top : -top + height, -left : -left + width]
    if geometry.mode == "letterbox":
        padded = torch.zeros(3, height, width)
        padded[:, top : top + pixels.shape[1], left : left + pixels.shape[2]] = pixels
        return padded
    return pixels


def preprocess_batch(
    images: Sequence[Image.Image],
    size: Size = 224,
    mode: str = "resize",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> tuple[torch.Tensor, list[Geometry]]:
    """`preprocess` several images into one (N, 3, height, width) tensor and their geometries, in order."""
    import torch

    if not images:
        raise ImageError("no images to preprocess", "pass at least one image")
    pairs = [preprocess(image, size, mode, mean, std) for image in images]
    return torch.cat([tensor for tensor, _ in pairs]), [geometry for _, geometry in pairs]


def map_to_original(
    attention: np.ndarray,
    geometry: Geometry,
    *,
    resample: str = "bilinear",
    size: tuple[int, int] | None = None,
    placement: str = "tiled",
) -> np.ndarray:
    """Draw a feature-map-resolution map at the original image's resolution, undoing resize/crop/letterbox.

    Cell (i, j) of an h x w map is centred where `placement` says (see PLACEMENTS; "tiled": the centre of input
    pixels [j*W/w, (j+1)*W/w) x [i*H/h, (i+1)*H/h)). Each original pixel centre is mapped into the input and the map
    is sampled there: bilinear between cell centres (clamped at the edges), or the nearest cell for "nearest". The
    two steps are composed into one separable interpolation, so there is no double blur and no rounding of the crop
    box.

    Args:
        attention: (h, w) finite float map covering the whole model input.
        geometry: From `preprocess`.
        resample: "bilinear" or "nearest".
        size: (width, height) to draw at instead of the original's own size: the same picture of the original
            image, sampled at the pixel centres of a `size` grid laid over it (for thumbnails and tiles).
        placement: Where the model's cells sit on its input: "tiled" or "aligned" (see PLACEMENTS).

    Returns:
        float32 array (height, width) of the original (or of `size`); NaN where the model never saw the original.
    """
    if resample not in RESAMPLES:
        raise ImageError(f"unknown resample {resample!r}", f"choose one of: {', '.join(RESAMPLES)}")
    values = np.asarray(attention, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"attention must be a 2-D (h, w) map, got shape {values.shape}")
    if not np.isfinite(values).all():  # one NaN would spread along its whole row and column
        raise ValueError("attention contains NaN or infinity")
    out_size = size or geometry.original_size
    rows, seen_rows = _axis_weights(geometry, 1, values.shape[0], resample, out_size[1], placement)
    cols, seen_cols = _axis_weights(geometry, 0, values.shape[1], resample, out_size[0], placement)
    out = rows @ values @ cols.T
    out[~seen_rows, :] = np.nan
    out[:, ~seen_cols] = np.nan
    return out


def _axis_weights(
    geometry: Geometry, axis: int, cells: int, resample: str, count: int, placement: str = "tiled"
) -> tuple[np.ndarray, np.ndarray]:
    """(output pixels x cells) interpolation matrix along one axis, and which output pixels the input shows.

    The `count` output pixels evenly cover the original image's extent along the axis.
    """
    extent = geometry.input_size[axis]
    centres = (np.arange(count) + 0.5) * geometry.resized_size[axis] / count + geometry.offset[axis]
    seen = (centres >= 0) & (centres < extent)
    weights = np.zeros((count, cells), dtype=np.float32)
    pixel = np.arange(count)
    position = (centres - first_centre(extent, cells, placement)) * cells / extent  # in cells from cell 0's centre
    if resample == "nearest":
        weights[pixel, _nearest_cell(position, cells)] = 1.0
        return weights, seen
    position = np.clip(position, 0, cells - 1)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, cells - 1)
    frac = (position - low).astype(np.float32)
    np.add.at(weights, (pixel, low), 1.0 - frac)
    np.add.at(weights, (pixel, high), frac)
    return weights, seen


def _nearest_cell(position: np.ndarray, cells: int) -> np.ndarray:
    """The cell whose centre is nearest, for positions counted in cells from cell 0's centre (ties go right, as a
    pixel on a tile border belongs to the tile it starts)."""
    return np.clip(np.floor(position + 0.5).astype(int), 0, cells - 1)


def original_to_cell(
    x: float, y: float, geometry: Geometry, grid_h: int, grid_w: int, placement: str = "tiled"
) -> tuple[int, int] | None:
    """The (row, col) of the grid_h x grid_w feature-map cell whose centre is nearest original point (x, y).

    Pass (col + 0.5, row + 0.5) for pixel (col, row); that cell is the one `map_to_original(..., "nearest")`
    draws on the pixel. Returns None for points outside the original or outside what the model sees.
    """
    width, height = geometry.original_size
    if not (0 <= x < width and 0 <= y < height):
        return None
    u, v = geometry.to_input(x, y)
    if not (0 <= u < geometry.input_size[0] and 0 <= v < geometry.input_size[1]):
        return None
    (width, height), cells = geometry.input_size, (grid_h, grid_w)
    row, col = (
        int(_nearest_cell(np.array([(pos - first_centre(extent, n, placement)) * n / extent]), n)[0])
        for pos, extent, n in ((v, height, cells[0]), (u, width, cells[1]))
    )
    return row, col


def cell_centre_to_original(
    row: int, col: int, geometry: Geometry, grid_h: int, grid_w: int, placement: str = "tiled"
) -> tuple[float, float]:
    """The original-image point (x, y) at the centre of cell (row, col) of a grid_h x grid_w feature map.

    In letterbox mode a cell in the padding has its centre outside the original (negative or past the edge).
    """
    if not (0 <= row < grid_h and 0 <= col < grid_w):
        raise ValueError(f"cell ({row}, {col}) is outside a {grid_h}x{grid_w} grid")
    width, height = geometry.input_size
    x = first_centre(width, grid_w, placement) + col * width / grid_w
    y = first_centre(height, grid_h, placement) + row * height / grid_h
    return geometry.to_original(x, y)
