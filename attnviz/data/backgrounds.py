"""Cluttered backgrounds for the procedural scenes: noise, stripes, checkerboards, gradients and stray strokes.

A background is a few layers mixed with random weights, or pasted through soft-edged noise patches. Each layer is
a scalar field in [0, 1] coloured with two random colours: fractal value noise (smooth noise summed over
octaves), stripes and checkerboards at random angles and frequencies, linear and radial gradients, or noise with
its own colour per channel. Fields are vectorised numpy: value noise is a few small products of cached
interpolation matrices with lattices of random values, sampled on a coarse grid and enlarged by Pillow. Colouring
(a 256-entry palette), enlarging and mixing (blend, composite) run in Pillow on 8-bit images, several times faster
than on float arrays.

Distractor strokes (lines, arcs, scribbles) are drawn with Pillow, and per-pixel noise comes last. Strokes are
open curves, never a closed shape of any class; arcs stay thin and span at most 220 degrees, so none of them looks
like a ring or a crescent.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

Field = Callable[[np.random.Generator, int], Image.Image]  # (rng, size) -> size x size "L" image


@lru_cache(maxsize=32)
def _coordinates(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates as fractions of the side: x varies along columns, y along rows, both (1, N)/(N, 1)."""
    line = (np.arange(size, dtype=np.float32) + 0.5) / size
    return line[None, :], line[:, None]


@lru_cache(maxsize=128)
def _interpolation(resolution: int, cells: int) -> np.ndarray:
    """(resolution, cells) matrix: row i holds the smoothstep weights of sample i on a lattice of `cells` points."""
    position = (np.arange(resolution) + 0.5) / resolution * (cells - 1)
    left = np.minimum(np.floor(position).astype(np.int64), cells - 2)
    frac = position - left
    frac = frac * frac * (3 - 2 * frac)
    weights = np.zeros((resolution, cells), dtype=np.float32)
    weights[np.arange(resolution), left] = 1 - frac
    weights[np.arange(resolution), left + 1] = frac
    return weights


def _stretch(values: np.ndarray) -> np.ndarray:
    """Rescale to span [0, 1] exactly (a constant array becomes zeros)."""
    low, high = values.min(), values.max()
    return (values - low) * (1.0 / max(float(high - low), 1e-6))


def fractal_noise(
    rng: np.random.Generator,
    resolution: int,
    *,
    octaves: int = 4,
    base_cells: int = 3,
    persistence: float = 0.5,
    channels: int = 1,
) -> np.ndarray:
    """Multi-octave value noise sampled on a resolution x resolution grid, stretched to [0, 1].

    Each octave is a lattice of random values interpolated with smoothstep weights, i.e. two small matrix
    products. Keep `resolution` small (<= 64) and enlarge the result with `noise_image`: the products then stay
    below the size where BLAS starts threads, which would cost far more than they save here.

    Args:
        rng: Source of the lattice values.
        resolution: Side of the sampled grid.
        octaves: Number of octaves; 1 is plain smooth value noise.
        base_cells: Lattice points per side of the coarsest octave; each octave doubles it (capped at
            resolution / 2, two samples per lattice cell).
        persistence: Amplitude ratio between successive octaves.
        channels: 1 gives a (resolution, resolution) field, more give (resolution, resolution, channels).
    """
    field = np.zeros((resolution * channels, resolution), dtype=np.float32)
    for k in range(octaves):
        cells = min(max(2, base_cells) << k, max(2, resolution // 2))
        weights = _interpolation(resolution, cells)
        lattice = rng.random((cells, cells * channels), dtype=np.float32) * np.float32(persistence**k)
        rows = (weights @ lattice).reshape(resolution, cells, channels).transpose(0, 2, 1)
        field += rows.reshape(resolution * channels, cells) @ weights.T
    field = field.reshape(resolution, channels, resolution).transpose(0, 2, 1)
    return _stretch(field[..., 0] if channels == 1 else field)


def _grey(field: np.ndarray) -> Image.Image:
    """A [0, 1] field as an 8-bit image ("L" for 2-D fields, "RGB" for 3 channels)."""
    return Image.fromarray((field * np.float32(255) + np.float32(0.5)).astype(np.uint8))


def noise_image(
    rng: np.random.Generator,
    size: int,
    *,
    detail: int = 4,
    octaves: int = 4,
    base_cells: int = 3,
    persistence: float = 0.5,
) -> Image.Image:
    """`fractal_noise` on a grid `detail` times coarser than the image, enlarged to a size x size "L" image.

    The finest octave has at most size / (2 * detail) lattice cells, so Pillow's bilinear enlargement loses
    nothing visible and costs a fraction of sampling every pixel.
    """
    field = fractal_noise(rng, max(8, size // detail), octaves=octaves, base_cells=base_cells, persistence=persistence)
    return _grey(field).resize((size, size), Image.Resampling.BILINEAR)


def _random_noise(rng: np.random.Generator, size: int) -> Image.Image:
    octaves, base_cells = rng.integers(1, 5), rng.integers(2, 6)
    return noise_image(
        rng, size, octaves=int(octaves), base_cells=int(base_cells), persistence=float(rng.uniform(0.4, 0.7))
    )


def _rotated(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates (u, v) in side fractions along a random direction and across it."""
    x, y = _coordinates(size)
    angle = rng.uniform(0, np.pi)
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    return x * cos + y * sin, y * cos - x * sin


def _sharpen(wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A [-1, 1] wave mapped to [0, 1], from a smooth sine to an almost square wave."""
    gain = np.float32(rng.uniform(1.0, 6.0))
    return np.clip(wave * gain * np.float32(0.5) + np.float32(0.5), 0.0, 1.0)


def stripes(rng: np.random.Generator, size: int) -> Image.Image:
    """Parallel stripes at a random angle, 4 to 18 periods per side, soft or hard edged."""
    u, _ = _rotated(rng, size)
    frequency = np.float32(2 * np.pi * rng.uniform(4, 18))
    return _grey(_sharpen(np.sin(u * frequency + np.float32(rng.uniform(0, 2 * np.pi))), rng))


def checkerboard(rng: np.random.Generator, size: int) -> Image.Image:
    """A rotated checkerboard, 8 to 24 cells per side (so its cells are smaller than a scene's object)."""
    u, v = _rotated(rng, size)
    frequency = np.float32(np.pi * rng.uniform(8, 24))
    return _grey(_sharpen(np.sin(u * frequency) * np.sin(v * frequency), rng))


def linear_gradient(rng: np.random.Generator, size: int) -> Image.Image:
    """A ramp along a random direction."""
    u, _ = _rotated(rng, size)
    return _grey(_stretch(u))


def radial_gradient(rng: np.random.Generator, size: int) -> Image.Image:
    """Distance from a random point (possibly off the image), stretched to [0, 1]."""
    x, y = _coordinates(size)
    cx, cy = (np.float32(c) for c in rng.uniform(-0.3, 1.3, 2))
    return _grey(_stretch(np.sqrt((x - cx) ** 2 + (y - cy) ** 2)))


FIELDS: dict[str, Field] = {
    "noise": _random_noise,
    "stripes": stripes,
    "checkerboard": checkerboard,
    "linear_gradient": linear_gradient,
    "radial_gradient": radial_gradient,
}
# Noise and gradients make good bases; patterns are mixed in on top.
_BASE_KINDS = ("noise", "noise", "linear_gradient", "radial_gradient", "colour_noise")
_LAYER_KINDS = ("noise", "stripes", "checkerboard", "stripes", "checkerboard", "radial_gradient", "colour_noise")


def _colour_pair(rng: np.random.Generator, min_distance: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Two random RGB colours in [0, 1] at least `min_distance` apart (or the farthest of a few tries)."""
    candidates = rng.random((6, 2, 3), dtype=np.float32)
    distances = np.linalg.norm(candidates[:, 0] - candidates[:, 1], axis=1)
    good = np.flatnonzero(distances >= min_distance)
    pick = good[0] if good.size else int(distances.argmax())
    return candidates[pick, 0], candidates[pick, 1]


_RAMP = np.linspace(0.0, 1.0, 256, dtype=np.float32)[:, None]


def _colourised(field: Image.Image, first: np.ndarray, second: np.ndarray) -> Image.Image:
    """Map an "L" field onto the line from colour `first` (at 0) to `second` (at 255) through a palette."""
    field.putpalette(((first + _RAMP * (second - first)) * 255 + 0.5).astype(np.uint8).tobytes())
    return field.convert("RGB")


def _layer(kind: str, rng: np.random.Generator, size: int) -> Image.Image:
    """One RGB layer of kind "colour_noise" or any key of FIELDS."""
    if kind == "colour_noise":
        return _colour_noise(rng, size)
    first, second = _colour_pair(rng)
    return _colourised(FIELDS[kind](rng, size), first, second)


def _colour_noise(rng: np.random.Generator, size: int) -> Image.Image:
    """Value noise with an independent field per channel, each spanning a random part of its channel's range."""
    low, high = _colour_pair(rng)
    spread = np.abs(high - low) + np.float32(0.25)
    base = np.minimum(low, high)
    octaves, base_cells = rng.integers(1, 4), rng.integers(2, 5)
    noise = fractal_noise(rng, max(8, size // 8), octaves=int(octaves), base_cells=int(base_cells), channels=3)
    return _grey(np.clip(noise * spread + base, 0, 1)).resize((size, size), Image.Resampling.BILINEAR)


def _patches(rng: np.random.Generator, size: int) -> Image.Image:
    """An "L" blend mask of blobs with soft or sharp edges covering roughly a third to two thirds of the image."""
    noise = noise_image(rng, size, octaves=2, base_cells=int(rng.integers(2, 5)))
    threshold, gain = rng.uniform(0.35, 0.65) * 255, rng.uniform(4, 20)
    levels = np.clip((np.arange(256) - threshold) * gain + 127.5, 0, 255).astype(np.uint8)
    return noise.point(levels.tolist())


PIXEL_NOISE = 0.1  # strongest per-pixel noise: the weight of a uniform random image blended in


def background(rng: np.random.Generator, size: int, *, strokes: int = 0) -> Image.Image:
    """A cluttered size x size RGB background.

    A base layer, 1 to 3 layers mixed in with a random weight or pasted through soft-edged patches, `strokes`
    distractor strokes, then per-pixel noise of a random strength (up to about +-12 grey levels).
    """
    out = _layer(_BASE_KINDS[int(rng.integers(len(_BASE_KINDS)))], rng, size)
    for _ in range(int(rng.integers(1, 4))):
        layer = _layer(_LAYER_KINDS[int(rng.integers(len(_LAYER_KINDS)))], rng, size)
        if rng.random() < 0.5:
            out = Image.composite(layer, out, _patches(rng, size))
        else:
            out = Image.blend(out, layer, float(rng.uniform(0.25, 0.6)))
    draw = ImageDraw.Draw(out)
    for _ in range(strokes):
        random_stroke(rng, size).draw(draw)
    return add_pixel_noise(rng, out, float(rng.uniform(0, PIXEL_NOISE)))


def add_pixel_noise(rng: np.random.Generator, image: Image.Image, weight: float) -> Image.Image:
    """Blend uniform random noise into an RGB image: each pixel moves by up to +-128 * weight levels.

    This is Pillow's 8-bit blend with a random image, several times faster than adding noise to a numpy array;
    the image loses a little contrast (by `weight`) in exchange.
    """
    if weight <= 0:
        return image
    noise = Image.frombytes("RGB", image.size, rng.bytes(image.size[0] * image.size[1] * 3))
    return Image.blend(image, noise, weight)


@dataclass(frozen=True)
class Stroke:
    """One distractor: an open line, arc or scribble in pixel coordinates.

    Attributes:
        kind: "line", "arc" or "scribble".
        points: Flat x, y list: the polyline for lines and scribbles, the bounding box for arcs.
        width: Line width in pixels.
        colour: RGB 0..255.
        start: Arc start angle in degrees (arcs only).
        end: Arc end angle in degrees (arcs only).
    """

    kind: str
    points: tuple[float, ...]
    width: int
    colour: tuple[int, int, int]
    start: float = 0.0
    end: float = 0.0

    def draw(self, draw: ImageDraw.ImageDraw, fill: int | tuple[int, int, int] | None = None) -> None:
        """Draw onto `draw`'s image in the stroke's colour, or in `fill` (e.g. 1 on a mask)."""
        ink = self.colour if fill is None else fill
        if self.kind == "arc":
            draw.arc(list(self.points), self.start, self.end, fill=ink, width=self.width)
        else:
            draw.line(list(self.points), fill=ink, width=self.width, joint="curve")


def random_stroke(
    rng: np.random.Generator, size: int, colour: tuple[int, int, int] | None = None, *, max_width: int | None = None
) -> Stroke:
    """A random distractor stroke somewhere on (or crossing into) a size x size image.

    Args:
        rng: Source of randomness.
        size: Side of the image in pixels; lengths and widths scale with it.
        colour: RGB 0..255; random when None.
        max_width: Widest line in pixels; about 3% of the side when None.
    """
    # One draw for every scalar (a generator call costs more than the numbers): kind, width, colour, geometry.
    u = rng.random(10).tolist()
    kind = ("line", "arc", "scribble")[int(u[0] * 3)]
    widest = max_width if max_width is not None else max(2, round(size * 0.03))
    width = 1 + int(u[1] * widest)
    if colour is None:
        colour = (int(u[2] * 256), int(u[3] * 256), int(u[4] * 256))
    if kind == "line":
        x0, y0 = (-0.1 + 1.2 * u[5]) * size, (-0.1 + 1.2 * u[6]) * size
        angle, length = 2 * math.pi * u[7], (0.15 + 0.55 * u[8]) * size
        return Stroke(kind, (x0, y0, x0 + length * math.cos(angle), y0 + length * math.sin(angle)), width, colour)
    if kind == "arc":
        cx, cy, radius = u[5] * size, u[6] * size, (0.06 + 0.24 * u[7]) * size
        start = 360 * u[8]
        thin = max(1, min(width, round(radius * 0.12)))  # a thick short arc would look like a crescent
        box = (cx - radius, cy - radius, cx + radius, cy + radius)
        return Stroke(kind, box, thin, colour, start, start + 30 + 190 * u[9])
    steps = 3 + int(u[7] * 6)
    turns = rng.normal(0, 0.9, steps)
    headings = 2 * math.pi * u[8] + np.cumsum(turns)
    lengths = (0.04 + 0.08 * rng.random(steps)) * size
    points = np.empty((steps + 1, 2))
    points[0] = u[5] * size, u[6] * size
    points[1:, 0] = points[0, 0] + np.cumsum(lengths * np.cos(headings))
    points[1:, 1] = points[0, 1] + np.cumsum(lengths * np.sin(headings))
    return Stroke(kind, tuple(points.ravel().tolist()), width, colour)


def stroke_mask(stroke: Stroke, size: int) -> np.ndarray:
    """The (size, size) bool mask of the pixels `stroke` paints."""
    canvas = Image.new("1", (size, size))
    stroke.draw(ImageDraw.Draw(canvas), fill=1)
    return np.asarray(canvas)
