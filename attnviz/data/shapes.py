"""The object classes of the procedural scenes: parametric outlines, placed and rasterised into masks.

Every class is a polygon (or a polygon with a hole) in unit coordinates: the point farthest from the origin lies
at distance 1, so `radius` is the radius of the circle around the shape. The classes differ in outline and
topology (corners, concavities, holes), never by colour or size, and none of them is another one rotated: a
diamond is a rotated square, so there is no diamond. Proportions (star depth, arm width, ring thickness...)
vary a little per instance when a generator is given, so a model has to learn the shape, not one polygon.

Coordinates are Pillow's: x to the right, y down, integer (x, y) at the centre of pixel (col=x, row=y).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from attnviz.errors import UnknownNameError, UsageError

_ROUND_VERTICES = 48


@dataclass(frozen=True, eq=False)
class Outline:
    """A shape as filled polygons minus holes, each an (N, 2) float array of x, y vertices.

    Attributes:
        fill: Polygons whose inside belongs to the shape.
        holes: Polygons cut out of the filled ones afterwards.
    """

    fill: tuple[np.ndarray, ...]
    holes: tuple[np.ndarray, ...] = ()

    def transformed(self, centre: tuple[float, float], radius: float, angle: float) -> Outline:
        """The outline scaled by `radius`, rotated by `angle` radians (clockwise on screen), moved to `centre`."""
        cos, sin = np.cos(angle), np.sin(angle)
        matrix = radius * np.array([[cos, sin], [-sin, cos]])
        offset = np.asarray(centre, dtype=np.float64)
        return Outline(
            tuple(poly @ matrix + offset for poly in self.fill),
            tuple(poly @ matrix + offset for poly in self.holes),
        )

    def bounds(self) -> tuple[float, float, float, float]:
        """(x_min, y_min, x_max, y_max) over the filled polygons' vertices (holes lie inside them)."""
        points = np.concatenate(self.fill)
        x_min, y_min = points.min(axis=0)
        x_max, y_max = points.max(axis=0)
        return float(x_min), float(y_min), float(x_max), float(y_max)

    def rasterise(self, height: int, width: int) -> np.ndarray:
        """The (height, width) bool mask of the pixels inside the outline (Pillow's polygon fill rule)."""
        canvas = Image.new("1", (width, height))
        draw = ImageDraw.Draw(canvas)
        for poly in self.fill:
            draw.polygon(poly.ravel().tolist(), fill=1)
        for poly in self.holes:
            draw.polygon(poly.ravel().tolist(), fill=0)
        return np.asarray(canvas)


def _uniform(rng: np.random.Generator | None, low: float, high: float) -> float:
    """A random proportion from [low, high], or the middle of the range for the canonical shape."""
    return (low + high) / 2 if rng is None else float(rng.uniform(low, high))


def _regular(vertices: int, radius: float = 1.0, phase: float = -np.pi / 2) -> np.ndarray:
    angles = phase + np.arange(vertices) * (2 * np.pi / vertices)
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _normalised(poly: np.ndarray, *holes: np.ndarray) -> Outline:
    """Centre the outline on its bounding box and scale it so its farthest vertex is at distance 1."""
    centre = (poly.min(axis=0) + poly.max(axis=0)) / 2
    scale = np.linalg.norm(poly - centre, axis=1).max()
    return Outline(((poly - centre) / scale,), tuple((hole - centre) / scale for hole in holes))


def _circle(rng: np.random.Generator | None) -> Outline:
    return Outline((_regular(_ROUND_VERTICES),))


def _square(rng: np.random.Generator | None) -> Outline:
    return Outline((_regular(4, phase=np.pi / 4),))


def _triangle(rng: np.random.Generator | None) -> Outline:
    return _normalised(_regular(3))


def _star(rng: np.random.Generator | None) -> Outline:
    inner = _uniform(rng, 0.38, 0.5)
    points = _regular(10)
    points[1::2] *= inner
    return Outline((points,))


def _hexagon(rng: np.random.Generator | None) -> Outline:
    return Outline((_regular(6),))


def _cross(rng: np.random.Generator | None) -> Outline:
    a = _uniform(rng, 0.25, 0.36)  # half the arm width, arms reach 1 along the axes
    quarter = np.array([[a, -1.0], [a, -a], [1.0, -a]])
    turn = np.array([[0.0, 1.0], [-1.0, 0.0]])  # 90 degrees, x -> y
    parts = [quarter]
    for _ in range(3):
        parts.append(parts[-1] @ turn)
    return _normalised(np.concatenate(parts))


def _heart(rng: np.random.Generator | None) -> Outline:
    t = np.linspace(0, 2 * np.pi, _ROUND_VERTICES, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return _normalised(np.stack([x, y], axis=1))


def _crescent(rng: np.random.Generator | None) -> Outline:
    """The unit disc minus a disc of radius r centred at (d, 0), as one polygon (outer arc, then inner arc)."""
    d = _uniform(rng, 0.38, 0.55)
    r = _uniform(rng, 0.78, 0.9)
    x = (1 - r * r + d * d) / (2 * d)  # where the two circles cross, at (x, +-y)
    y = np.sqrt(1 - x * x)
    outer_from = np.arctan2(y, x)
    inner_from = np.arctan2(y, x - d)
    n = _ROUND_VERTICES
    outer = np.linspace(outer_from, 2 * np.pi - outer_from, n)
    inner = np.linspace(2 * np.pi - inner_from, inner_from, n // 2)
    poly = np.concatenate(
        [
            np.stack([np.cos(outer), np.sin(outer)], axis=1),
            np.stack([d + r * np.cos(inner), r * np.sin(inner)], axis=1),
        ]
    )
    return _normalised(poly)


def _ring(rng: np.random.Generator | None) -> Outline:
    inner = _uniform(rng, 0.5, 0.62)
    return Outline((_regular(_ROUND_VERTICES),), (_regular(_ROUND_VERTICES, inner),))


def _arrow(rng: np.random.Generator | None) -> Outline:
    shaft = _uniform(rng, 0.16, 0.24)  # half the shaft width
    head = _uniform(rng, 0.45, 0.6)  # half the head width
    neck = _uniform(rng, 0.05, 0.3)  # x where the head starts; the tip is at x = 1, the tail at x = -1
    poly = np.array(
        [[-1.0, -shaft], [neck, -shaft], [neck, -head], [1.0, 0.0], [neck, head], [neck, shaft], [-1.0, shaft]]
    )
    return _normalised(poly)


_BUILDERS: dict[str, Callable[[np.random.Generator | None], Outline]] = {
    "circle": _circle,
    "square": _square,
    "triangle": _triangle,
    "star": _star,
    "hexagon": _hexagon,
    "cross": _cross,
    "heart": _heart,
    "crescent": _crescent,
    "ring": _ring,
    "arrow": _arrow,
}
# The class index is the position in SHAPES: append new classes, never reorder (labels and weights depend on it).
SHAPES: tuple[str, ...] = tuple(_BUILDERS)


def class_names() -> list[str]:
    """The shape classes in label order: label i is `class_names()[i]`."""
    return list(SHAPES)


def check_classes(classes: Sequence[str]) -> tuple[str, ...]:
    """Validate a choice of classes: known names, no repeats, at least one.

    Raises:
        UnknownNameError: A name that is not in SHAPES.
        UsageError: An empty choice, a repeated name, or a bare string instead of a sequence of names.
    """
    if isinstance(classes, str):
        raise UsageError(
            f"classes must be a sequence of shape names, got the string {classes!r}", f"try ({classes!r},)"
        )
    chosen = tuple(classes)
    if not chosen:
        raise UsageError("no shape classes given", f"choose from: {', '.join(SHAPES)}")
    for name in chosen:
        if name not in _BUILDERS:
            raise UnknownNameError("shape", name, SHAPES)
    if len(set(chosen)) != len(chosen):
        raise UsageError(f"shape classes repeat: {chosen!r}", "name each class once")
    return chosen


def outline(name: str, rng: np.random.Generator | None = None) -> Outline:
    """The unit outline of shape `name`; with `rng`, its proportions vary a little within the class.

    Raises:
        UnknownNameError: `name` is not one of SHAPES.
    """
    if name not in _BUILDERS:
        raise UnknownNameError("shape", name, SHAPES)
    return _BUILDERS[name](rng)


def shape_mask(
    name: str,
    size: int | tuple[int, int],
    centre: tuple[float, float],
    radius: float,
    angle: float = 0.0,
    *,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Rasterise one shape.

    Args:
        name: One of SHAPES.
        size: Side of a square canvas, or its (height, width).
        centre: (x, y) of the shape's centre in pixels.
        radius: Distance from the centre to the shape's farthest point, in pixels.
        angle: Rotation in radians, clockwise on screen.
        rng: Varies the shape's proportions within its class; None draws the canonical shape.

    Returns:
        A (height, width) bool mask, True inside the shape. Parts outside the canvas are cut off.
    """
    height, width = (size, size) if isinstance(size, int) else size
    return outline(name, rng).transformed(centre, radius, angle).rasterise(height, width)
