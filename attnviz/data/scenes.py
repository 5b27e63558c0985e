"""Procedural scenes with known ground truth: shapes on cluttered backgrounds, with their masks and boxes.

A scene is generated from an integer seed alone (`numpy.random.default_rng(seed)`, no global state), so the same
seed always gives the same pixels, masks and labels, and a dataset needs no files: index -> `seed_for` -> scene.

Drawing order: background layers, distractor strokes under the objects, per-pixel noise, the objects (each in a
colour chosen to stand out from the pixels under and around it, with a little shading and pixel noise), then more
strokes over the objects (each allowed only while strokes hide at most `MAX_STROKE_COVER` of any object).
Each object keeps both masks: `full_mask` (the whole shape) and `mask` (the pixels still visible at the end).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from attnviz.data.backgrounds import PIXEL_NOISE, Stroke, background, random_stroke, stroke_mask
from attnviz.data.shapes import SHAPES, Outline, check_classes, outline
from attnviz.errors import UnknownNameError, UsageError

Box = tuple[int, int, int, int]

SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLIT_STRIDE = 1 << 40  # seeds of split k are (k + 1) * SPLIT_STRIDE + index; small ad-hoc seeds belong to none

MAX_STROKE_COVER = 0.15  # strokes drawn over an object hide at most this fraction of its shape
MAX_BOX_IOU = 0.3  # detection: no two objects' visible boxes overlap more than this
MAX_OBJECT_COVER = 0.3  # detection: later objects hide at most this fraction of an earlier one
CLASSIFICATION_SIDES = (0.18, 0.45)  # an object's longer box side, as a fraction of the image side
MIN_SIZE = 32

_COLOUR_TRIES = 8
_MIN_MEAN_DISTANCE = 110.0  # RGB 0..255 Euclidean: object colour vs pixels under and around it, on average
_CLOSE_DISTANCE = 60.0  # a pixel this close to the object colour camouflages its edge...
_MAX_CLOSE_FRACTION = 0.1  # ...and at most this fraction of them may be that close
_MIN_STROKE_CONTRAST = 100.0  # strokes over an object differ this much from its colour
_OBJECT_NOISE = 2 * 128 * PIXEL_NOISE  # objects get pixel noise as strong as the background's, at most


@dataclass(eq=False)
class ObjectInfo:
    """One object in a scene.

    Attributes:
        label: Index of the shape in the classes the scene was drawn from (SHAPES unless chosen otherwise).
        shape: The shape's name.
        box: (x0, y0, x1, y1), tight around `mask`, inclusive-exclusive.
        mask: (H, W) bool, the object's pixels still visible in the image.
        full_mask: (H, W) bool, the whole shape before anything was drawn over it.
        colour: The object's base RGB colour (its pixels are this, shaded and with noise).
        centre: (x, y) of the shape's centre in Pillow pixel coordinates.
        radius: Distance from the centre to the shape's farthest point, in pixels.
        angle: Rotation in radians.
    """

    label: int
    shape: str
    box: Box
    mask: np.ndarray
    full_mask: np.ndarray
    colour: tuple[int, int, int]
    centre: tuple[float, float]
    radius: float
    angle: float

    @property
    def hidden_fraction(self) -> float:
        """Fraction of the shape hidden by whatever was drawn over it."""
        return 1.0 - float(self.mask.sum()) / max(1, int(self.full_mask.sum()))


@dataclass(eq=False)
class Scene:
    """A generated image with its ground truth.

    For a classification scene `objects` holds exactly one object and label, mask, box and shape are its. For a
    detection scene they describe the largest visible object, and `objects` lists every object in drawing order
    (later ones on top).

    Attributes:
        image: The RGB image.
        label: Class index of the (main) object.
        mask: (H, W) bool, the (main) object's visible pixels.
        box: (x0, y0, x1, y1) tight around `mask`, inclusive-exclusive.
        shape: Name of the (main) object's class.
        objects: Every object in the scene.
        seed: The seed the scene was generated from.
        classes: The class names that labels index into.
    """

    image: Image.Image
    label: int
    mask: np.ndarray
    box: Box
    shape: str
    objects: list[ObjectInfo]
    seed: int
    classes: tuple[str, ...] = SHAPES

    def objects_mask(self) -> np.ndarray:
        """(H, W) bool, the visible pixels of every object."""
        return np.logical_or.reduce([obj.mask for obj in self.objects])


def seed_for(split: str, index: int) -> int:
    """The seed of scene `index` of a split; the splits' seed ranges never overlap.

    Raises:
        UnknownNameError: `split` is not "train", "val" or "test".
        UsageError: `index` is not an integer in [0, 2**40).
    """
    if split not in SPLITS:
        raise UnknownNameError("split", split, SPLITS)
    if isinstance(index, bool) or not isinstance(index, int | np.integer) or not 0 <= index < SPLIT_STRIDE:
        raise UsageError(f"scene index must be an integer in [0, 2**40), got {index!r}")
    return (SPLITS.index(split) + 1) * SPLIT_STRIDE + int(index)


def make_scene(seed: int, size: int = 128, *, classes: Sequence[str] = SHAPES) -> Scene:
    """One object of a random class on a cluttered background: the classification scene.

    The class is uniform over `classes`; the object's longer box side is 18% to 45% of the image side, its
    rotation uniform, its position uniform over the places where it fits inside the image with a 1-pixel margin.

    Args:
        seed: Everything about the scene follows from it.
        size: Side of the square image in pixels, at least 32.
        classes: The shape classes to draw from; the label is the index into this sequence.

    Raises:
        UsageError: A size below 32 or a bad choice of classes.
    """
    size = check_size(size)
    names = check_classes(classes)
    rng = _generator(seed)
    pixels = _background_with_strokes(rng, size)

    label = int(rng.integers(len(names)))
    low, high = CLASSIFICATION_SIDES
    placed = _place(rng, names[label], size, rng.uniform(low, high) * size)
    full = placed.outline.rasterise(size, size)
    colour = _paint_object(rng, pixels, full, placed)
    obj = _object(label, names[label], full, colour, placed)
    _strokes_over(rng, pixels, [obj], count=int(rng.integers(0, 4)))
    obj.box = tight_box(obj.mask)
    return Scene(Image.fromarray(pixels, "RGB"), obj.label, obj.mask, obj.box, obj.shape, [obj], int(seed), names)


def make_detection_scene(
    seed: int,
    size: int = 256,
    *,
    max_objects: int = 6,
    min_side: int = 8,
    max_fraction: float = 0.5,
    classes: Sequence[str] = SHAPES,
) -> Scene:
    """Several objects of random classes on a cluttered background: the detection scene.

    The scene aims for a uniform 1..max_objects objects; a placement is redrawn when its box would overlap
    another object's by IoU > 0.3 or when it would hide more than 30% of an earlier object, and after a bounded
    number of tries the scene keeps what it has (always at least one object).

    Args:
        seed: Everything about the scene follows from it.
        size: Side of the square image in pixels, at least 32.
        max_objects: Most objects in one scene.
        min_side: Smallest longer box side of an object, in pixels (sides are log-uniform).
        max_fraction: Largest longer box side, as a fraction of the image side.
        classes: The shape classes to draw from; labels index into this sequence.

    Raises:
        UsageError: Bad size, counts, sides or classes.
    """
    size = check_size(size)
    names = check_classes(classes)
    if not 1 <= max_objects <= 255:
        raise UsageError(f"max_objects must be 1..255, got {max_objects!r}")
    if not 0 < max_fraction <= 1:
        raise UsageError(f"max_fraction must be in (0, 1], got {max_fraction!r}")
    if not 4 <= min_side <= max_fraction * size:
        raise UsageError(f"min_side must be 4..{max_fraction * size:g} (max_fraction * size), got {min_side!r}")
    rng = _generator(seed)
    pixels = _background_with_strokes(rng, size)

    wanted = int(rng.integers(1, max_objects + 1))
    log_low, log_high = np.log(min_side), np.log(max_fraction * size)
    objects: list[ObjectInfo] = []
    for _ in range(12 * wanted):
        if len(objects) == wanted:
            break
        label = int(rng.integers(len(names)))
        placed = _place(rng, names[label], size, float(np.exp(rng.uniform(log_low, log_high))))
        full = placed.outline.rasterise(size, size)
        if not full.any() or not _fits_among(full, objects):
            continue
        for obj in objects:
            obj.mask = obj.mask & ~full
            obj.box = tight_box(obj.mask)
        colour = _paint_object(rng, pixels, full, placed)
        objects.append(_object(label, names[label], full, colour, placed))
    scale = size / 128
    _strokes_over(rng, pixels, objects, count=int(rng.integers(0, 4) * scale))
    for obj in objects:
        obj.box = tight_box(obj.mask)
    main = max(objects, key=lambda obj: int(obj.mask.sum()))
    return Scene(Image.fromarray(pixels, "RGB"), main.label, main.mask, main.box, main.shape, objects, int(seed), names)


def tight_box(mask: np.ndarray) -> Box:
    """(x0, y0, x1, y1) of the smallest box holding every True pixel, inclusive-exclusive; (0, 0, 0, 0) if none."""
    cols = np.flatnonzero(mask.any(axis=0))
    if cols.size == 0:
        return (0, 0, 0, 0)
    rows = np.flatnonzero(mask.any(axis=1))
    return (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _generator(seed: int) -> np.random.Generator:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise UsageError(f"scene seed must be a non-negative integer, got {seed!r}")
    return np.random.default_rng(int(seed))


def check_size(size: int) -> int:
    """`size` as an int, or a UsageError when it is not an integer >= MIN_SIZE."""
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < MIN_SIZE:
        raise UsageError(f"scene size must be an integer >= {MIN_SIZE}, got {size!r}")
    return int(size)


@dataclass(frozen=True)
class _Placed:
    outline: Outline
    centre: tuple[float, float]
    radius: float
    angle: float


def _place(rng: np.random.Generator, name: str, size: int, side: float) -> _Placed:
    """A random rotation and position for shape `name` with longer box side `side`, fully inside the image."""
    shape = outline(name, rng)
    angle = float(rng.uniform(0, 2 * np.pi))
    x_min, y_min, x_max, y_max = shape.transformed((0.0, 0.0), 1.0, angle).bounds()
    # Pillow fills the pixels under both end vertices, so a span of side - 1 between them covers `side` pixels.
    radius = (min(side, size - 2) - 1) / max(x_max - x_min, y_max - y_min)
    # Every vertex inside [1, size - 2]: the outermost rows and columns stay background.
    cx = rng.uniform(1 - radius * x_min, size - 2 - radius * x_max)
    cy = rng.uniform(1 - radius * y_min, size - 2 - radius * y_max)
    centre = (float(cx), float(cy))
    return _Placed(shape.transformed(centre, radius, angle), centre, float(radius), angle)


def _fits_among(full: np.ndarray, objects: list[ObjectInfo]) -> bool:
    """Whether a new object `full` keeps every earlier object >= 70% visible and every pair of boxes IoU <= 0.3."""
    boxes = [tight_box(full)]
    for obj in objects:
        visible = obj.mask & ~full
        if visible.sum() < (1 - MAX_OBJECT_COVER) * obj.full_mask.sum():
            return False
        boxes.append(tight_box(visible))
    return _boxes_apart(boxes)


def _boxes_apart(boxes: list[Box]) -> bool:
    return all(box_iou(a, b) <= MAX_BOX_IOU for i, a in enumerate(boxes) for b in boxes[i + 1 :])


def _background_with_strokes(rng: np.random.Generator, size: int) -> np.ndarray:
    """The background with distractor strokes under the objects, as a writable (size, size, 3) uint8 array."""
    strokes = int(rng.integers(3, 9) * size / 128)
    return np.array(background(rng, size, strokes=strokes))


def _dilated(mask: np.ndarray, reach: int) -> np.ndarray:
    """`mask` grown by `reach` pixels in every direction (a square structuring element)."""
    out = mask.copy()
    for step in range(1, reach + 1):
        out[:, step:] |= mask[:, :-step]
        out[:, :-step] |= mask[:, step:]
    across = out.copy()
    for step in range(1, reach + 1):
        out[step:, :] |= across[:-step, :]
        out[:-step, :] |= across[step:, :]
    return out


def _surroundings(pixels: np.ndarray, full: np.ndarray, reach: int) -> np.ndarray:
    """(N, 3) float32: the pixels under the shape and within `reach` pixels around it."""
    x0, y0, x1, y1 = tight_box(full)
    size = full.shape[0]
    rows = slice(max(0, y0 - reach), min(size, y1 + reach))
    cols = slice(max(0, x0 - reach), min(size, x1 + reach))
    region = _dilated(full[rows, cols], reach)
    return pixels[rows, cols][region].astype(np.float32)


def _object_colour(rng: np.random.Generator, around: np.ndarray) -> np.ndarray:
    """A random colour that stands out from `around`: far from it on average, and close to few of its pixels."""
    if len(around) > 256:
        around = around[:: len(around) // 256 + 1]
    candidates = rng.integers(0, 256, (_COLOUR_TRIES, 3)).astype(np.float32)
    distances = np.sqrt(((around[:, None, :] - candidates[None, :, :]) ** 2).sum(axis=2))
    mean = distances.mean(axis=0)
    close = (distances < _CLOSE_DISTANCE).mean(axis=0)
    good = np.flatnonzero((mean >= _MIN_MEAN_DISTANCE) & (close <= _MAX_CLOSE_FRACTION))
    pick = good[0] if good.size else int(np.argmax(mean - 255 * close))
    return candidates[pick]


def _paint_object(rng: np.random.Generator, pixels: np.ndarray, full: np.ndarray, placed: _Placed) -> np.ndarray:
    """Fill the shape with a contrasting colour, shaded along a random direction by up to +-20%, with pixel noise."""
    reach = max(2, round(full.shape[0] / 40))
    colour = _object_colour(rng, _surroundings(pixels, full, reach))
    rows, cols = np.nonzero(full)
    direction = rng.uniform(0, 2 * np.pi)
    along = ((cols - placed.centre[0]) * np.cos(direction) + (rows - placed.centre[1]) * np.sin(direction)) / max(
        placed.radius, 1.0
    )
    shade = 1.0 + rng.uniform(0, 0.2) * along.astype(np.float32)
    noise = rng.uniform(-_OBJECT_NOISE, _OBJECT_NOISE) * (rng.random((len(rows), 3), dtype=np.float32) - 0.5)
    pixels[rows, cols] = np.clip(colour[None, :] * shade[:, None] + noise + 0.5, 0, 255).astype(np.uint8)
    return colour


def _object(label: int, name: str, full: np.ndarray, colour: np.ndarray, placed: _Placed) -> ObjectInfo:
    red, green, blue = (int(c) for c in colour)
    return ObjectInfo(
        label, name, tight_box(full), full.copy(), full, (red, green, blue), placed.centre, placed.radius, placed.angle
    )


def _strokes_over(rng: np.random.Generator, pixels: np.ndarray, objects: list[ObjectInfo], count: int) -> None:
    """Draw up to `count` strokes over the objects, skipping any that would hide too much of one."""
    size = pixels.shape[0]
    hidden_by_strokes = [0] * len(objects)
    for _ in range(count):
        stroke = random_stroke(rng, size)
        painted = stroke_mask(stroke, size)
        update: list[tuple[int, np.ndarray]] = []
        for i, obj in enumerate(objects):
            hit = painted & obj.mask
            if hit.any():
                update.append((i, hit))
        if not all(_may_cover(objects[i], hidden_by_strokes[i] + int(hit.sum()), stroke) for i, hit in update):
            continue
        if update and not _boxes_apart([tight_box(obj.mask & ~painted) for obj in objects]):
            continue
        for i, hit in update:
            hidden_by_strokes[i] += int(hit.sum())
            objects[i].mask = objects[i].mask & ~painted
        pixels[painted] = stroke.colour


def _may_cover(obj: ObjectInfo, hidden: int, stroke: Stroke) -> bool:
    contrast = np.linalg.norm(np.subtract(obj.colour, stroke.colour, dtype=np.float32))
    return hidden <= MAX_STROKE_COVER * obj.full_mask.sum() and contrast >= _MIN_STROKE_CONTRAST
