"""Figures that put attention over a photo or a grid with axes: Coordinate Attention's profiles beside the photo,
and the query x key matrices of self-attention. Like `charts`, every function returns a new Agg figure and never
touches pyplot's global state."""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from attnviz.render.charts import new_figure
from attnviz.render.overlay import colormap_lut, overlay, value_range

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def coordinate_panel(
    image: Image.Image,
    a_h: np.ndarray,
    a_w: np.ndarray,
    outer: np.ndarray,
    *,
    cmap: str = "jet",
    alpha: float = 0.5,
    title: str = "",
) -> Figure:
    """Coordinate Attention at a glance: the two 1-D profiles aligned with the photo, and their product on it.

    Left: the photo with a_w plotted above it (x = image column) and a_h to its right (y = image row), so a
    peak in a profile sits exactly over the columns/rows it weights. Right: `outer` overlaid on the photo,
    with a colour bar. NaN (parts the model never saw) leaves gaps in the profiles and greys the overlay.

    Args:
        image: The original photo.
        a_h: (H,) height profile at the photo's height.
        a_w: (W,) width profile at the photo's width.
        outer: (H, W) combined gate (e.g. `maps.coordinate_outer`) at the photo's size.
        cmap: Colormap of the overlay.
        alpha: Overlay opacity.
        title: Figure title.

    Returns:
        The figure.

    Raises:
        ValueError: a profile or `outer` does not match the photo's size.
    """
    width, height = image.size
    a_h, a_w, outer = (np.asarray(a, dtype=np.float64) for a in (a_h, a_w, outer))
    if a_h.shape != (height,) or a_w.shape != (width,) or outer.shape != (height, width):
        raise ValueError(
            f"photo is {width}x{height} (WxH) so a_h must be ({height},), a_w ({width},) and outer "
            f"({height}, {width}); got {a_h.shape}, {a_w.shape}, {outer.shape}"
        )
    from matplotlib.colors import ListedColormap, Normalize
    from matplotlib.ticker import MaxNLocator

    # Explicit layout in inches so the image axes have exactly the photo's aspect and the profiles line up.
    scale = 4.2 / max(width, height)
    img_w, img_h = width * scale, height * scale
    strip, gap, left, bottom, top = 0.95, 0.08, 0.7, 0.55, 0.55 if title else 0.25
    mid_gap, bar_w, right = 0.9, 0.15, 0.75
    fig_w = left + img_w + gap + strip + mid_gap + img_w + 0.1 + bar_w + right
    fig_h = bottom + img_h + gap + strip + top
    fig = new_figure(fig_w, fig_h, constrained=False)

    def rect(x: float, y: float, w: float, h: float) -> tuple[float, float, float, float]:
        return (x / fig_w, y / fig_h, w / fig_w, h / fig_h)

    photo = np.asarray(image.convert("RGB"))
    ax_img = fig.add_axes(rect(left, bottom, img_w, img_h))
    ax_img.imshow(photo, extent=(0, width, height, 0), aspect="auto", interpolation="antialiased")
    ax_img.set_xlabel("x (pixel column)")
    ax_img.set_ylabel("y (pixel row)")

    ax_w = fig.add_axes(rect(left, bottom + img_h + gap, img_w, strip), sharex=ax_img)
    cols = np.arange(width) + 0.5
    ax_w.fill_between(cols, a_w, color="#ee6c4d", alpha=0.3, linewidth=0)
    ax_w.plot(cols, a_w, color="#c0392b", linewidth=1.4)
    ax_w.set_ylabel("a_w", fontsize=11)
    ax_w.tick_params(labelbottom=False, labelsize=9)
    ax_w.set_title("width profile a_w (one value per column)", fontsize=10, loc="left")

    ax_h = fig.add_axes(rect(left + img_w + gap, bottom, strip, img_h), sharey=ax_img)
    rows = np.arange(height) + 0.5
    ax_h.fill_betweenx(rows, a_h, color="#3d5a80", alpha=0.3, linewidth=0)
    ax_h.plot(a_h, rows, color="#3d5a80", linewidth=1.4)
    ax_h.set_xlabel("a_h", fontsize=11)
    ax_h.xaxis.set_label_position("top")  # bottom tick labels would collide with the photo's last x label
    ax_h.tick_params(labelleft=False, labelsize=9, labelbottom=False, labeltop=True)
    ax_h.set_ylabel("height profile a_h (one value per row)", fontsize=10)
    ax_h.yaxis.set_label_position("right")
    for ax, values, axis in ((ax_w, a_w, "y"), (ax_h, a_h, "x")):
        lo, hi = value_range(values)
        limits = ax.set_ylim if axis == "y" else ax.set_xlim
        if hi > lo:
            span = hi - lo
            limits(lo - 0.05 * span, hi + 0.08 * span)
        elif math.isfinite(lo):  # flat: a fixed window around the value, no offset ticks stretching float noise
            limits(lo - 0.1 * max(abs(lo), 0.1), lo + 0.1 * max(abs(lo), 0.1))
        ax.ticklabel_format(axis=axis, useOffset=False, style="plain")
        (ax.yaxis if axis == "y" else ax.xaxis).set_major_locator(MaxNLocator(3))  # the strips are narrow
        ax.grid(alpha=0.3, linewidth=0.5)
    ax_img.set_xlim(0, width)
    ax_img.set_ylim(height, 0)

    x_right = left + img_w + gap + strip + mid_gap
    ax_outer = fig.add_axes(rect(x_right, bottom, img_w, img_h))
    ax_outer.imshow(np.asarray(overlay(image, outer, cmap=cmap, alpha=alpha)), extent=(0, width, height, 0))
    ax_outer.set_title("a_h x a_w (outer product) on the photo", fontsize=11)
    ax_outer.set_xlabel("x (pixel column)")
    ax_outer.tick_params(labelleft=False)
    ax_bar = fig.add_axes(rect(x_right + img_w + 0.1, bottom, bar_w, img_h))
    lo, hi = value_range(outer)
    flat = math.isfinite(lo) and not hi > lo
    if not hi > lo:
        lo, hi = (lo - 0.5, hi + 0.5) if math.isfinite(lo) else (0.0, 1.0)
    mappable = _scalar_mappable(ListedColormap(colormap_lut(cmap) / 255.0), Normalize(lo, hi))
    bar = fig.colorbar(mappable, cax=ax_bar)
    if flat:  # one colour, one value: a bar from lo - 0.5 would invent a range the map does not have
        bar.set_ticks([(lo + hi) / 2], labels=[f"flat\n{(lo + hi) / 2:.3g}"])
    ax_bar.tick_params(labelsize=9)
    if title:
        fig.suptitle(title, fontsize=13, y=1 - 0.12 / fig_h, va="top")
    return fig


def _scalar_mappable(cmap: object, norm: object) -> object:
    from matplotlib.cm import ScalarMappable

    return ScalarMappable(norm=norm, cmap=cmap)


def _pool(matrix: np.ndarray, axis: int, max_tokens: int) -> tuple[np.ndarray, int]:
    """Average-pool one axis in blocks so it has at most `max_tokens` entries; returns (pooled, block size)."""
    n = matrix.shape[axis]
    if n <= max_tokens:
        return matrix, 1
    block = math.ceil(n / max_tokens)
    blocks = math.ceil(n / block)
    pad = [(0, 0)] * matrix.ndim
    pad[axis] = (0, blocks * block - n)
    padded = np.pad(matrix, pad, constant_values=np.nan)
    shape = list(padded.shape)
    shape[axis : axis + 1] = [blocks, block]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a block that is all NaN stays NaN
        return np.nanmean(padded.reshape(shape), axis=axis + 1), block


def matrix_heatmaps(
    matrix: np.ndarray,
    *,
    title: str = "",
    max_tokens: int = 1024,
    cmap: str = "viridis",
    unit: str = "token",
) -> Figure:
    """One heat map per attention head: rows are query tokens, columns key tokens, on one shared colour scale.

    Args:
        matrix: (heads, Nq, Nk) attention weights (an (Nq, Nk) matrix is one head).
        title: Figure title.
        max_tokens: Longer query/key axes are average-pooled in blocks down to at most this many tokens (the
            subtitle says so), which keeps the figure small.
        cmap: Colormap name.
        unit: What the rows and columns are, for the axis labels: "token" (positions) or "channel" (DANet's
            channel attention relates channels to channels).

    Returns:
        The figure.

    Raises:
        ValueError: `matrix` is not 2-D or 3-D, or `max_tokens` < 1.
        UsageError: unknown colormap.
    """
    matrix = np.asarray(matrix, dtype=np.float32)
    if matrix.ndim == 2:
        matrix = matrix[None]
    if matrix.ndim != 3 or 0 in matrix.shape:
        raise ValueError(f"matrix_heatmaps expects (heads, Nq, Nk), got shape {matrix.shape}")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    from matplotlib.colors import ListedColormap

    heads, nq, nk = matrix.shape
    pooled, q_block = _pool(matrix, 1, max_tokens)
    pooled, k_block = _pool(pooled, 2, max_tokens)
    columns = min(heads, 4) if heads <= 8 else math.ceil(math.sqrt(heads))
    rows = math.ceil(heads / columns)
    aspect = "equal" if 0.5 <= nq / nk <= 2 else "auto"
    panel_h = 2.4
    panel_w = panel_h * (nk / nq if aspect == "equal" else 1.3)
    fig = new_figure(max(5.5, columns * (panel_w + 0.3) + 1.4), rows * (panel_h + 0.45) + 1.0)
    axes = fig.subplots(rows, columns, squeeze=False, sharex=True, sharey=True)
    lo, hi = value_range(pooled)
    if not hi > lo:
        lo, hi = (lo - 0.5, hi + 0.5) if math.isfinite(lo) else (0.0, 1.0)
    colormap = ListedColormap(colormap_lut(cmap) / 255.0)
    image = None
    for h, ax in enumerate(axes.flat):
        if h >= heads:
            ax.set_visible(False)
            continue
        image = ax.imshow(
            pooled[h], cmap=colormap, vmin=lo, vmax=hi, aspect=aspect, interpolation="antialiased",
            extent=(-0.5, nk - 0.5, nq - 0.5, -0.5),
        )  # fmt: skip
        ax.set_title(f"head {h}", fontsize=9)
        ax.tick_params(labelsize=7)
        if h % columns == 0:
            ax.set_ylabel(f"query {unit}")
        if h + columns >= heads:  # nothing below it in this column
            ax.set_xlabel(f"key {unit}")
            ax.tick_params(labelbottom=True)
    fig.colorbar(image, ax=axes, shrink=0.8, label="attention weight")
    notes = [f"{heads} head{'s' if heads > 1 else ''}, {nq} query x {nk} key {unit}s"]
    if q_block > 1 or k_block > 1:
        notes.append(f"shown averaged over blocks of {q_block} queries x {k_block} keys (at most {max_tokens})")
    fig.suptitle("\n".join([title or "attention matrix", *notes]), fontsize=10)
    return fig
