"""Charts of attention that is not a picture: channel weights and branch selection (see `panels` for the rest).

Every function returns a new `matplotlib.figure.Figure` with an Agg canvas and never touches pyplot's global
state, so figures neither leak nor interfere between calls. matplotlib is imported inside the functions.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from attnviz.errors import UsageError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

ORDERS = ("sorted", "channel")
BAR_COLOR = "#9db4cc"
TOP_COLOR = "#d1495b"
EDGE_COLOR = "#3d5a80"
MAX_LABELLED_BARS = 48  # above this many channels, bars become a filled area and top-k are listed in a box
BRANCH_COLORS = ("#3d5a80", "#ee6c4d", "#98c1d9", "#6a994e", "#b56576", "#e0a458")


def new_figure(width: float, height: float, *, constrained: bool = True) -> Figure:
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
        fig = new_figure(7.5, 3.2)
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
    fig = new_figure(4.6 * columns, 2.9 * rows)
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax, (title, weights) in zip(axes.flat, items, strict=False):
        channel_bars(weights, order=order, top_k=top_k, title=title, ax=ax)
    for ax in axes.flat[len(items) :]:
        ax.set_visible(False)
    return fig


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

    fig = new_figure(8.5, 3.4)
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
