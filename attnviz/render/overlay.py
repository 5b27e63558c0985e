"""Heat-map overlays, captions, grids and point markers drawn with Pillow and numpy only.

The batch path draws hundreds of overlays, so nothing here builds a matplotlib figure: a colormap becomes a
256-entry lookup table once (cached), and everything else is array arithmetic plus `ImageDraw`.

Maps arrive at the original image's resolution. NaN marks pixels the model never saw (cut off by a crop); they
are drawn as the photo washed out to grey, with no heat, so "not seen" never reads as "low attention".
"""

from __future__ import annotations

import difflib
import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from attnviz.errors import UsageError
from attnviz.render.text import load_font, text_size

# Suggested when a colormap name is unknown; any matplotlib colormap works.
COMMON_CMAPS = ("jet", "turbo", "viridis", "inferno", "magma", "plasma", "gray", "coolwarm")
CONTOUR_LEVELS = (0.5, 0.75)  # fractions of the value range; the first is drawn thicker
FLAT_RANGE = 1e-3
"""A map whose values span less than this fraction of their magnitude is drawn flat, in one colour, and captioned
so: a sigmoid gate at 0.5 +- 1e-5 is float noise that a per-map colour scale would stretch into vivid structure,
while a softmax over 3000 positions (values near 3e-4) still varies by far more than 0.1% of itself."""
MAX_CONTOUR_COVER = 0.2  # fraction of the picture above which a contour level would hide the map
_LUT_SIZE = 256
MIN_BAR_HEIGHT = 48
"""Images less tall than this (and wider than it) get their colour bar under them: beside them its labels overlap."""
_UNSEEN_FADE = 0.45  # how far "not seen" pixels are pulled towards light grey after desaturation
_UNSEEN_GREY = 225.0

RGB = tuple[int, int, int]


@lru_cache(maxsize=32)
def colormap_lut(cmap: str) -> np.ndarray:
    """The colormap `cmap` as a read-only (256, 3) uint8 lookup table.

    Args:
        cmap: A matplotlib colormap name ("jet", "viridis", ...).

    Returns:
        Row i is the colour of the normalised value i / 255.

    Raises:
        UsageError: `cmap` is not a matplotlib colormap; the hint lists common ones and close matches.
    """
    import matplotlib  # lazy: keeps `import attnviz.render` cheap

    try:
        colormap = matplotlib.colormaps[cmap]
    except KeyError:
        close = difflib.get_close_matches(cmap, list(matplotlib.colormaps), n=3)
        names = list(dict.fromkeys([*close, *COMMON_CMAPS]))
        raise UsageError(
            f"unknown colormap {cmap!r}", f"try one of: {', '.join(names)} (any matplotlib colormap name works)"
        ) from None
    lut = np.round(colormap(np.linspace(0.0, 1.0, _LUT_SIZE))[:, :3] * 255).astype(np.uint8)
    lut.flags.writeable = False
    return lut


def value_range(values: np.ndarray, vmin: float | None = None, vmax: float | None = None) -> tuple[float, float]:
    """The (vmin, vmax) a map is drawn with: the given limits, else the finite minimum and maximum.

    A map with no finite value gives (nan, nan). `vmin == vmax` means the map is drawn flat: it is constant, or
    (when neither limit is given) its values span less than FLAT_RANGE of their magnitude: float noise.
    """
    finite = values[np.isfinite(values)]
    lo = float(finite.min()) if vmin is None and finite.size else vmin
    hi = float(finite.max()) if vmax is None and finite.size else vmax
    if vmin is None and vmax is None and lo is not None and hi is not None and is_flat(lo, hi):
        hi = lo
    return (math.nan if lo is None else float(lo), math.nan if hi is None else float(hi))


def is_flat(low: float, high: float) -> bool:
    """Whether values from `low` to `high` are too close to draw as a map (apart by under FLAT_RANGE of their size)."""
    return high - low <= FLAT_RANGE * max(abs(low), abs(high))


def _normalise(values: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """Values scaled to [0, 1] (clipped); a constant map (vmax <= vmin) becomes 0.5, never a division by zero."""
    if not vmax > vmin:  # also catches NaN limits
        return np.full(values.shape, 0.5, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        scaled = (values.astype(np.float32) - np.float32(vmin)) / np.float32(vmax - vmin)
    return np.clip(np.nan_to_num(scaled, nan=0.5), 0.0, 1.0)


def colorize(values: np.ndarray, cmap: str = "jet", vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """Map a 2-D array through a colormap.

    Args:
        values: (H, W) floats. NaN means "not seen" and becomes fully transparent.
        cmap: Matplotlib colormap name.
        vmin: Value drawn with the colormap's first colour (default: the finite minimum).
        vmax: Value drawn with the colormap's last colour (default: the finite maximum).

    Returns:
        (H, W, 4) uint8 RGBA. A constant map is drawn in the colormap's middle colour.

    Raises:
        ValueError: `values` is not 2-D.
        UsageError: unknown colormap.
    """
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"colorize expects an (H, W) array, got shape {values.shape}")
    lut = colormap_lut(cmap)
    lo, hi = value_range(values, vmin, vmax)
    rgba = np.empty((*values.shape, 4), dtype=np.uint8)
    rgba[..., :3] = lut[_lut_index(_normalise(values, lo, hi))]
    rgba[..., 3] = np.where(np.isnan(values), 0, 255)
    return rgba


def _lut_index(scaled: np.ndarray) -> np.ndarray:
    """Lookup-table rows of values already scaled to [0, 1] (rounded to the nearest row)."""
    return (scaled * np.float32(_LUT_SIZE - 1) + np.float32(0.5)).astype(np.intp)


def desaturate(image: Image.Image) -> Image.Image:
    """How "not seen" pixels look: the photo in grey, faded towards light grey. RGB, same size."""
    grey = np.asarray(image.convert("L"), dtype=np.float32)
    faded = grey * (1.0 - _UNSEEN_FADE) + _UNSEEN_GREY * _UNSEEN_FADE
    return Image.fromarray(np.round(faded).astype(np.uint8), "L").convert("RGB")


def _distinct_values(high: float, low: float) -> list[str]:
    """The two ends of a colour bar with as many significant digits (3 to 6) as tell them apart."""
    for digits in range(3, 7):
        labels = [f"{high:.{digits}g}", f"{low:.{digits}g}"]
        if labels[0] != labels[1]:
            break
    return labels


def _format_value(value: float) -> str:
    return f"{value:.3g}"


def _level_edges(scaled: np.ndarray, seen: np.ndarray, level: float, thickness: int) -> np.ndarray:
    """Pixels on the iso-line at `level`: at or above it with a seen neighbour below it, thickened."""
    inside = seen & (scaled >= level)
    below = np.pad(seen & (scaled < level), 1, constant_values=False)
    h, w = scaled.shape
    touches_below = below[:-2, 1:-1] | below[2:, 1:-1] | below[1:-1, :-2] | below[1:-1, 2:]
    return _dilate(inside & touches_below[:h, :w], thickness - 1)


def _dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    """Grow a boolean mask by `steps` pixels (a square structuring element, by repeated shifts)."""
    for _ in range(max(0, steps)):
        padded = np.pad(mask, 1, constant_values=False)
        grown = padded[1:-1, 1:-1].copy()
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                grown |= padded[dy : dy + mask.shape[0], dx : dx + mask.shape[1]]
        mask = grown
    return mask


def _dashes(shape: tuple[int, int], period: int) -> np.ndarray:
    """A checkerboard of `period`-px squares: any line crossing it alternates between on and off."""
    rows = (np.arange(shape[0]) // period)[:, None]
    cols = (np.arange(shape[1]) // period)[None, :]
    return (rows + cols) % 2 == 0


def _draw_contours(pixels: np.ndarray, scaled: np.ndarray, seen: np.ndarray) -> None:
    """Draw the CONTOUR_LEVELS iso-lines in place on (H, W, 3) uint8 `pixels`: white with a black rim.

    The first level (50%) is a solid line, the others (75%) are thinner and dashed, so the two read apart. A
    level whose line (with its rim) would cover more than MAX_CONTOUR_COVER of the map is left out: on a noisy
    map it would paint over the very picture it is meant to outline.
    """
    base = max(1, round(min(scaled.shape) / 160))
    lines = []
    for i, level in enumerate(CONTOUR_LEVELS):
        line = _level_edges(scaled, seen, level, base + 1 if i == 0 else base)
        if i > 0:
            line &= _dashes(line.shape, 4 * base + 2)
        if _dilate(line, 1).mean() <= MAX_CONTOUR_COVER:
            lines.append(line)
    for line in lines:  # every rim first, so no rim covers another level's white line
        pixels[_dilate(line, 1) & ~line] = 0
    for line in lines:
        pixels[line] = 255


def _bar_labels(lo: float, hi: float) -> list[str]:
    """The colour bar's labels: its top and bottom values, or one line for a flat or empty map."""
    if not math.isfinite(lo):
        return ["nothing seen"]
    if not hi > lo:
        return [f"flat {_format_value(lo)}"]
    return _distinct_values(hi, lo)


def _horizontal_colorbar(width: int, cmap: str, lo: float, hi: float) -> Image.Image:
    """A white strip `width` px wide with a horizontal colour bar (max at the right) between its min and max labels,
    for images too flat for a vertical bar beside them."""
    font = load_font(14)
    labels = _bar_labels(lo, hi)
    margin, bar_h = 4, 14
    height = bar_h + 2 * margin
    strip = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(strip)
    if len(labels) == 1:
        draw.text((margin, height // 2), labels[0], fill="black", font=font, anchor="lm")
        return strip
    high, low = labels
    left = margin + text_size(font, low)[0] + margin
    right = width - margin - text_size(font, high)[0] - margin
    if right - left < 8:
        return strip
    lut = colormap_lut(cmap)
    columns = lut[np.round(np.linspace(0.0, 1.0, right - left) * (_LUT_SIZE - 1)).astype(np.intp)]
    strip.paste(Image.fromarray(np.repeat(columns[None, :, :], bar_h, axis=0), "RGB"), (left, margin))
    draw.rectangle([left - 1, margin - 1, right, margin + bar_h], outline="black")
    draw.text((margin, height // 2), low, fill="black", font=font, anchor="lm")
    draw.text((width - margin, height // 2), high, fill="black", font=font, anchor="rm")
    return strip


def _colorbar(height: int, cmap: str, lo: float, hi: float) -> Image.Image:
    """A white strip with a vertical colour bar (max at the top) and its min/max labels, `height` px tall."""
    font = load_font(max(14, min(28, height // 16)))
    constant = not hi > lo
    if not math.isfinite(lo):
        labels = ["nothing\nseen"]
    elif constant:
        labels = [f"flat\n{_format_value(lo)}"]
    else:
        labels = _distinct_values(hi, lo)
    text_w = max(text_size(font, line)[0] for label in labels for line in label.splitlines())
    margin = max(4, height // 40)
    bar_w = max(10, height // 18)
    strip = Image.new("RGB", (margin + bar_w + margin + text_w + margin, height), "white")
    bar_top, bar_bottom = margin, height - margin
    lut = colormap_lut(cmap)
    rows = np.linspace(1.0, 0.0, max(1, bar_bottom - bar_top))
    if constant:
        rows = np.full_like(rows, 0.5)
    colours = lut[np.round(rows * (_LUT_SIZE - 1)).astype(np.intp)]
    strip.paste(Image.fromarray(np.repeat(colours[:, None, :], bar_w, axis=1), "RGB"), (margin, bar_top))
    draw = ImageDraw.Draw(strip)
    draw.rectangle([margin - 1, bar_top - 1, margin + bar_w, bar_bottom], outline="black")
    x = margin + bar_w + margin
    if constant:
        draw.multiline_text((x, height // 2), labels[0], fill="black", font=font, anchor="lm")
    else:
        draw.text((x, bar_top), labels[0], fill="black", font=font, anchor="lt")
        draw.text((x, bar_bottom), labels[1], fill="black", font=font, anchor="lb")
    return strip


def overlay(
    image: Image.Image,
    heat: np.ndarray,
    *,
    cmap: str = "jet",
    alpha: float = 0.5,
    vmin: float | None = None,
    vmax: float | None = None,
    contour: bool = False,
    colorbar: bool = False,
) -> Image.Image:
    """Blend a heat map over a photo of the same size (the photo in grey under the colours, so hues read true).

    Args:
        image: The original photo (any mode; drawn as RGB).
        heat: (H, W) floats at the photo's resolution; NaN marks pixels the model never saw, drawn as the
            desaturated photo with no heat.
        cmap: Matplotlib colormap name.
        alpha: Weight of the heat colour, 0 (photo only) to 1 (colour only).
        vmin: Value drawn with the colormap's first colour (default: the finite minimum).
        vmax: Value drawn with the colormap's last colour (default: the finite maximum).
        contour: Outline where the map reaches 50% (solid line) and 75% (dashed) of its range, white with a
            black rim (a level that would cover over a fifth of a noisy map is left out).
        colorbar: Append a vertical colour bar with the min/max values on the right (the result gets wider); under
            a flat strip (less than MIN_BAR_HEIGHT tall, and wider) a horizontal one below (the result gets taller).

    Returns:
        An RGB image, the photo's size (wider or taller with `colorbar`).

    Raises:
        ValueError: sizes differ, `heat` is not 2-D, or `alpha` is outside [0, 1].
        UsageError: unknown colormap.
    """
    heat = np.asarray(heat)
    if heat.ndim != 2:
        raise ValueError(f"heat must be an (H, W) array, got shape {heat.shape}")
    if heat.shape != (image.height, image.width):
        raise ValueError(
            f"heat is {heat.shape[1]}x{heat.shape[0]} (WxH) but the image is {image.width}x{image.height}; "
            "resample the map to the image first"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    lut = colormap_lut(cmap)
    lo, hi = value_range(heat, vmin, vmax)
    scaled = _normalise(heat, lo, hi)
    seen = ~np.isnan(heat)
    photo = np.asarray(image.convert("RGB"))
    if alpha == 0.0:
        pixels = photo.copy()
    else:
        # over the photo in grey: the photo's own colours would shift the heat's hues (green on red reads as brown)
        grey = np.asarray(image.convert("L"), dtype=np.float32)[..., None]
        colours = lut[_lut_index(scaled)].astype(np.float32)
        blended = grey * np.float32(1.0 - alpha) + colours * np.float32(alpha)
        pixels = (blended + np.float32(0.5)).astype(np.uint8)
    if not seen.all():
        pixels[~seen] = np.asarray(desaturate(image))[~seen]
    if contour and hi > lo:
        _draw_contours(pixels, scaled, seen)
    result = Image.fromarray(pixels, "RGB")
    if colorbar and result.height < MIN_BAR_HEIGHT <= result.width:  # a flat strip: the bar goes under it
        bar = _horizontal_colorbar(result.width, cmap, lo, hi)
        extended = Image.new("RGB", (result.width, result.height + bar.height), "white")
        extended.paste(result, (0, 0))
        extended.paste(bar, (0, result.height))
        result = extended
    elif colorbar:
        bar = _colorbar(result.height, cmap, lo, hi)
        widened = Image.new("RGB", (result.width + bar.width, result.height), "white")
        widened.paste(result, (0, 0))
        widened.paste(bar, (result.width, 0))
        result = widened
    return result


def mark_point(
    image: Image.Image,
    xy: tuple[float, float],
    *,
    radius: float | None = None,
    color: str | RGB = "white",
) -> Image.Image:
    """Draw a ring with a crosshair at a query point, in `color` with a black rim so it shows on any map.

    Args:
        image: The picture to mark (not modified).
        xy: (x, y) in continuous pixel coordinates of `image` (pixel (col, row) has its centre at +0.5).
        radius: Ring radius in pixels (default: 1/30 of the shorter side, at least 6).
        color: Marker colour.

    Returns:
        An RGB copy with the marker.
    """
    out = image.convert("RGB")
    x, y = float(xy[0]), float(xy[1])
    r = radius if radius is not None else max(6.0, min(out.size) / 30)
    width = max(2, round(r / 4))
    draw = ImageDraw.Draw(out)
    for fill, w in (("black", width + 2), (color, width)):
        draw.ellipse([x - r, y - r, x + r, y + r], outline=fill, width=w)
        for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):  # ticks from the ring outwards, centre left clear
            draw.line([(x + dx * r * 0.5, y + dy * r * 0.5), (x + dx * r * 1.6, y + dy * r * 1.6)], fill=fill, width=w)
    return out
