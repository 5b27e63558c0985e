"""Charts of attention that is not a picture: channel weights, coordinate profiles, branch selection, matrices.

Every function returns a new `matplotlib.figure.Figure` with an Agg canvas and never touches pyplot's global
state, so figures neither leak nor interfere between calls. matplotlib is imported inside the functions.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from attnviz.errors import UsageError
from attnviz.render.overlay import colormap_lut, overlay, value_range

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

ORDERS = ("sorted", "channel")
BAR_COLOR = "#9db4cc"
TOP_COLOR = "#d1495b"
EDGE_COLOR = "#3d5a80"
MAX_LABELLED_BARS = 48  # above this many channels, bars become a filled area and top-k are listed in a box
BRANCH_COLORS = ("#3d5a80", "#ee6c4d", "#98c1d9", "#6a994e", "#b56576", "#e0a458")


def _new_figure(width: float, height: float, *, constrained: bool = True) -> Figure:
    """A figure with its own Agg canvas, outside pyplot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained" if constrained else None)
    FigureCanvasAgg(fig)
    return fig


def figure_to_image(fig: Figure, dpi: float = 100) -> Image.Image:
    """Render a figure to an RGB image through the Agg canvas.

    Args:
        fig: Any matplotlib figure (its dpi is restored afterwards).
        dpi: Pixels per inch of the result.

    Returns:
        An RGB image of the whole figure.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    original = fig.dpi
    fig.set_dpi(dpi)
    try:
        canvas.draw()
        rgba = np.asarray(canvas.buffer_rgba())
        return Image.fromarray(rgba[..., :3].copy(), "RGB")
    finally:
        fig.set_dpi(original)


def normalised_entropy(weights: np.ndarray) -> float:
    """Entropy of weights / sum (clipped at 0) divided by log(C): 1 = all channels equal, 0 = one channel."""
    p = np.clip(np.asarray(weights, dtype=np.float64), 0, None)
    total = p.sum()
    if p.size < 2 or not total > 0:
        return math.nan
    p = p / total
    return float(-(p * np.log(np.clip(p, 1e-300, None))).sum() / math.log(p.size))


def _check_order(order: str) -> None:
    if order not in ORDERS:
        raise UsageError(f"unknown channel order {order!r}", f"choose one of: {', '.join(ORDERS)}")


def _side_text(weights: np.ndarray, top: np.ndarray, list_top: bool) -> str:
    """Summary printed beside a channel chart: mean, std, normalised entropy and (optionally) the top channels."""
    text = (
        f"C        {weights.size}\nmean     {np.nanmean(weights):.3g}\nstd      {np.nanstd(weights):.3g}\n"
        f"entropy  {normalised_entropy(np.nan_to_num(weights)):.3f}\n(H/log C, 1 = uniform)"
    )
    if list_top and top.size:
        text += f"\n\ntop {top.size}\n" + "\n".join(f"#{c:<6} {weights[c]:.3g}" for c in top)
    return text


def channel_bars(
    weights: np.ndarray,
    *,
    order: str = "sorted",
    top_k: int = 10,
    title: str = "",
    ax: Axes | None = None,
) -> Figure:
    """Bar chart of per-channel attention weights.

    With up to MAX_LABELLED_BARS channels every channel is a bar and the top-k bars are red and carry their
    channel index. With more, the bars merge into a filled step area, the top-k are red dots and their indices
    are listed beside the chart. Beside the chart too: mean, std and the normalised entropy of weights / sum
    (entropy / log C: 1 = all channels equal, 0 = all weight on one channel).

    Args:
        weights: (C,) weights (a (1, C) array is accepted).
        order: "sorted" (descending weight) or "channel" (channel index order).
        top_k: How many of the largest weights to highlight and name (0 for none); at most a quarter of the
            channels are highlighted, so highlighted bars stay the exception.
        title: Axes title.
        ax: Draw into this axes instead of a new figure.

    Returns:
        The figure holding the chart (the new one, or `ax`'s).

    Raises:
        ValueError: `weights` is empty or not a vector.
        UsageError: unknown `order`.
    """
    _check_order(order)
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim == 2 and weights.shape[0] == 1:
        weights = weights[0]
    if weights.ndim != 1 or weights.size == 0:
        raise ValueError(f"channel_bars expects a (C,) vector, got shape {weights.shape}")
    if ax is None:
        fig = _new_figure(7.5, 3.2)
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    n = weights.size
    ranked = np.argsort(-np.nan_to_num(weights, nan=-np.inf), kind="stable")
    channels = ranked if order == "sorted" else np.arange(n)
    heights = weights[channels]
    top = ranked[: min(max(0, top_k), max(1, n // 4))]
    top_pos = np.arange(top.size) if order == "sorted" else top
    many = n > MAX_LABELLED_BARS

    if many:
        edges = np.arange(n + 1) - 0.5
        if n <= 512:
            ax.stairs(heights, edges, fill=True, color=BAR_COLOR)
            ax.stairs(heights, edges, color=EDGE_COLOR, linewidth=0.6)
        else:  # bars narrower than a pixel: a light fill would be antialiased away, so fill in the dark colour
            ax.stairs(heights, edges, fill=True, color=EDGE_COLOR, linewidth=0)
        ax.plot(top_pos, weights[top], "o", color=TOP_COLOR, markersize=3.5, zorder=3)
    else:
        colors = np.full(n, BAR_COLOR, dtype=object)
        colors[top_pos] = TOP_COLOR
        ax.bar(np.arange(n), heights, width=0.85, color=list(colors), edgecolor=EDGE_COLOR, linewidth=0.4)
        vertical = n > 24
        for pos, channel in zip(top_pos, top, strict=True):
            ax.annotate(
                str(channel), (pos, weights[channel]), xytext=(0, 2), textcoords="offset points",
                ha="center", va="bottom", fontsize=6 if vertical else 8, rotation=90 if vertical else 0,
            )  # fmt: skip
        if n <= 24:
            ax.set_xticks(np.arange(n), [str(c) for c in channels], fontsize=7)
    ax.set_xlim(-0.5 - n * 0.01, n - 0.5 + n * 0.01)
    finite = heights[np.isfinite(heights)]
    high = float(finite.max()) if finite.size else 1.0
    low = min(0.0, float(finite.min()) if finite.size else 0.0)
    ax.set_ylim(low, high * (1.15 if not many and n > 24 else 1.08) if high > 0 else 1.0)
    ax.text(
        1.02, 1.0, _side_text(weights, top, list_top=many), transform=ax.transAxes, ha="left", va="top",
        fontsize=7, family="monospace", bbox={"boxstyle": "round", "fc": "white", "ec": "0.75"},
    )  # fmt: skip
    ax.set_xlabel("channel (sorted by weight)" if order == "sorted" else "channel")
    ax.set_ylabel("weight")
    ax.set_title(title or f"{n} channels", fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def channel_small_multiples(
    items: list[tuple[str, np.ndarray]],
    *,
    order: str = "sorted",
    top_k: int = 5,
    columns: int | None = None,
) -> Figure:
    """Several layers' channel weights as a grid of small `channel_bars` with the same styling.

    Args:
        items: (title, (C,) weights) per layer; layers may have different C.
        order: "sorted" or "channel", for every panel.
        top_k: Highlighted channels per panel.
        columns: Panels per row (default: up to 3).

    Returns:
        The figure.

    Raises:
        ValueError: `items` is empty.
        UsageError: unknown `order`.
    """
    _check_order(order)
    if not items:
        raise ValueError("channel_small_multiples needs at least one (title, weights) item")
    columns = columns or min(3, len(items))
    rows = math.ceil(len(items) / columns)
    fig = _new_figure(4.6 * columns, 2.9 * rows)
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax, (title, weights) in zip(axes.flat, items, strict=False):
        channel_bars(weights, order=order, top_k=top_k, title=title, ax=ax)
    for ax in axes.flat[len(items) :]:
        ax.set_visible(False)
    return fig


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

    # Explicit layout in inches so the image axes have exactly the photo's aspect and the profiles line up.
    scale = 4.2 / max(width, height)
    img_w, img_h = width * scale, height * scale
    strip, gap, left, bottom, top = 0.95, 0.08, 0.7, 0.55, 0.55 if title else 0.25
    mid_gap, bar_w, right = 0.9, 0.15, 0.75
    fig_w = left + img_w + gap + strip + mid_gap + img_w + 0.1 + bar_w + right
    fig_h = bottom + img_h + gap + strip + top
    fig = _new_figure(fig_w, fig_h, constrained=False)

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
    ax_w.set_ylabel("a_w", fontsize=9)
    ax_w.tick_params(labelbottom=False, labelsize=7)
    ax_w.set_title("width profile a_w (one value per column)", fontsize=8, loc="left")

    ax_h = fig.add_axes(rect(left + img_w + gap, bottom, strip, img_h), sharey=ax_img)
    rows = np.arange(height) + 0.5
    ax_h.fill_betweenx(rows, a_h, color="#3d5a80", alpha=0.3, linewidth=0)
    ax_h.plot(a_h, rows, color="#3d5a80", linewidth=1.4)
    ax_h.set_xlabel("a_h", fontsize=9)
    ax_h.xaxis.set_label_position("top")  # bottom tick labels would collide with the photo's last x label
    ax_h.tick_params(labelleft=False, labelsize=7, labelbottom=False, labeltop=True)
    ax_h.set_ylabel("height profile a_h (one value per row)", fontsize=8)
    ax_h.yaxis.set_label_position("right")
    for ax, values, axis in ((ax_w, a_w, "y"), (ax_h, a_h, "x")):
        lo, hi = value_range(values)
        if hi > lo:
            span = hi - lo
            (ax.set_ylim if axis == "y" else ax.set_xlim)(lo - 0.05 * span, hi + 0.08 * span)
        ax.grid(alpha=0.3, linewidth=0.5)
    ax_img.set_xlim(0, width)
    ax_img.set_ylim(height, 0)

    x_right = left + img_w + gap + strip + mid_gap
    ax_outer = fig.add_axes(rect(x_right, bottom, img_w, img_h))
    ax_outer.imshow(np.asarray(overlay(image, outer, cmap=cmap, alpha=alpha)), extent=(0, width, height, 0))
    ax_outer.set_title("a_h x a_w (outer product) on the photo", fontsize=9)
    ax_outer.set_xlabel("x (pixel column)")
    ax_outer.tick_params(labelleft=False)
    ax_bar = fig.add_axes(rect(x_right + img_w + 0.1, bottom, bar_w, img_h))
    lo, hi = value_range(outer)
    if not hi > lo:
        lo, hi = (lo - 0.5, hi + 0.5) if math.isfinite(lo) else (0.0, 1.0)
    mappable = _scalar_mappable(ListedColormap(colormap_lut(cmap) / 255.0), Normalize(lo, hi))
    fig.colorbar(mappable, cax=ax_bar)
    ax_bar.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=11, y=1 - 0.12 / fig_h, va="top")
    return fig


def _scalar_mappable(cmap: object, norm: object) -> object:
    from matplotlib.cm import ScalarMappable

    return ScalarMappable(norm=norm, cmap=cmap)


def selection_chart(
    weights: np.ndarray,
    *,
    branch_names: list[str] | None = None,
    title: str = "",
) -> Figure:
    """How a selective-kernel block splits each channel between its branches.

    Left: per-channel weights stacked by branch (a stacked step chart), channels sorted by branch 0's
    weight, so the crossover where channels switch branch is visible. Right: each branch's mean weight.

    Args:
        weights: (K, C) per-branch, per-channel weights (softmax over K in SK, so stacks reach 1).
        branch_names: K names (default "branch 0", "branch 1", ...).
        title: Figure title.

    Returns:
        The figure.

    Raises:
        ValueError: `weights` is not (K, C), or `branch_names` has the wrong length.
    """
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 2 or 0 in weights.shape:
        raise ValueError(f"selection_chart expects (K, C) weights, got shape {weights.shape}")
    k, c = weights.shape
    names = branch_names or [f"branch {i}" for i in range(k)]
    if len(names) != k:
        raise ValueError(f"{k} branches but {len(names)} branch names: {names}")
    order = np.argsort(-np.nan_to_num(weights[0], nan=-np.inf), kind="stable")
    sorted_w = np.nan_to_num(weights[:, order])
    colors = [BRANCH_COLORS[i % len(BRANCH_COLORS)] for i in range(k)]

    fig = _new_figure(8.5, 3.4)
    ax, ax_mean = fig.subplots(1, 2, width_ratios=[4, 1])
    edges = np.arange(c + 1) - 0.5
    stack = np.vstack([np.zeros(c), np.cumsum(sorted_w, axis=0)])
    for i in range(k):
        ax.stairs(stack[i + 1], edges, baseline=stack[i], fill=True, color=colors[i], alpha=0.85, label=names[i])
    ax.set_xlim(edges[0], edges[-1])
    ax.set_ylim(0, max(1.0, float(stack[-1].max())) * 1.02)
    ax.set_xlabel(f"channel (sorted by {names[0]} weight)")
    ax.set_ylabel("weight (stacked over branches)")
    ax.legend(loc="upper right", fontsize=8, framealpha=0.9)
    ax.spines[["top", "right"]].set_visible(False)

    means = np.nanmean(weights, axis=1)
    bars = ax_mean.bar(np.arange(k), means, color=colors, edgecolor="0.2", linewidth=0.5)
    ax_mean.bar_label(bars, labels=[f"{m:.2f}" for m in means], fontsize=8, padding=2)
    ax_mean.set_xticks(np.arange(k), names, rotation=30 if k > 2 else 0, fontsize=8)
    ax_mean.set_ylim(0, max(float(np.nanmax(means)), 1e-9) * 1.2)
    ax_mean.set_title("mean per branch", fontsize=9)
    ax_mean.spines[["top", "right"]].set_visible(False)
    fig.suptitle(title or f"branch selection over {c} channels", fontsize=11)
    return fig


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
    fig = _new_figure(max(5.5, columns * (panel_w + 0.3) + 1.4), rows * (panel_h + 0.45) + 1.0)
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
