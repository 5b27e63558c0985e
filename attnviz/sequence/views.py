"""The sequence pictures: the alignment heatmap of additive attention, and the temporal gates under their series.

Like `attnviz.render`, every function returns a new Agg figure and never touches pyplot's global state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from attnviz.render.charts import new_figure
from attnviz.render.overlay import colormap_lut
from attnviz.sequence.analysis import SequenceAnalysis
from attnviz.views.base import View

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

RIGHT_COLOR = "#e4572e"
"""Outline of the cells a reversal should attend to."""
SERIES_COLORS = ("#3d5a80", "#ee6c4d", "#6a994e", "#b56576", "#e0a458", "#293241", "#98c1d9", "#8d6a9f")


def _cmap(name: str = "viridis") -> object:
    from matplotlib.colors import ListedColormap

    return ListedColormap(colormap_lut(name) / 255.0)


def alignment_figure(analysis: SequenceAnalysis) -> Figure:
    """Decoder steps (rows, labelled with the token written) x encoder steps (columns, the digit read), on the
    fixed 0-1 scale of softmax weights; the cells a reversal should attend to are outlined."""
    from matplotlib.patches import Rectangle

    weights = analysis.arrays["attention"]
    source, wrote = analysis.tokens["source"], analysis.tokens["written"]
    facts = analysis.facts["alignment"]
    steps, size = weights.shape
    fig = new_figure(max(5.2, 2.4 + 0.48 * size), max(4.4, 2.3 + 0.42 * steps))
    ax = fig.add_subplot()
    image = ax.imshow(weights, cmap=_cmap(), vmin=0.0, vmax=1.0, aspect="equal", interpolation="nearest")
    for row in range(steps):
        for col in range(size):
            value = weights[row, col]
            if value >= 0.05:
                ax.text(col, row, f"{value:.2f}"[1:] if value < 1 else "1", ha="center", va="center", fontsize=6.5,
                        color="black" if value > 0.6 else "white")  # fmt: skip
    for row, col in enumerate(facts["right"][:steps]):
        ax.add_patch(Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor=RIGHT_COLOR, linewidth=1.6))
    ax.set_xticks(range(size), source, fontsize=10)
    ax.set_yticks(range(steps), [f"{i + 1}: {t}" for i, t in enumerate(wrote)], fontsize=9)
    ax.set_xlabel("encoder step: the digit read")
    ax.set_ylabel("decoder step: the token written")
    top = ax.secondary_xaxis("top")
    top.set_xticks(range(size), [str(i + 1) for i in range(size)], fontsize=7)
    top.set_xlabel("source position", fontsize=8)
    fig.colorbar(image, ax=ax, shrink=0.8, label="attention weight (sums to 1 per row)")
    verdict = "right" if analysis.facts["correct"] else "wrong"
    fig.suptitle(
        f"additive (Bahdanau) attention of a digit reverser\n"
        f"reads {analysis.facts['input']}, writes {analysis.facts['written']} ({verdict})\n"
        f"{_peaks_line(facts)}",
        fontsize=9,
    )
    return fig


def _peaks_line(facts: dict[str, Any]) -> str:
    rows = len(facts["right"])
    hits = round(facts["accuracy"] * rows)
    return (
        f"{hits}/{rows} rows peak on the digit they copy (outlined)\n"
        f"mean weight there {facts['mass']:.2f}, uniform {facts['uniform']:.2f}"
    )


def gate_figure(analysis: SequenceAnalysis) -> Figure:
    """The input series stacked one per node (standardised), and under them one nodes x time heatmap per temporal
    gate (the mean over its channels), all on one time axis."""
    series = analysis.series
    if series is None:
        raise ValueError(f"gate_figure draws an analysis of series, got one of {analysis.block}")
    layers = analysis.facts["gates"]
    nodes, steps = series.values.shape
    row_height = 0.28 * nodes + 0.7
    fig = new_figure(10.5, 1.0 + (0.42 * nodes + 0.8) + row_height * len(layers))
    grid = fig.add_gridspec(1 + len(layers), 2, width_ratios=(1, 0.018),
                            height_ratios=(0.42 * nodes + 0.8, *[row_height] * len(layers)))  # fmt: skip
    read_from = steps - analysis.facts["periods_read_over_last_steps"] - 0.5
    top = fig.add_subplot(grid[0, 0])
    _draw_series(top, series.values, series.names)
    top.axvline(read_from, color="#555555", linestyle="--", linewidth=1)
    periods = ", ".join(f"{p:g}" for p in analysis.facts["input_strongest_period"])
    top.set_title(f"input series, each standardised (mean 0, std 1) as the model reads them; strongest period per "
                  f"node: {periods}", fontsize=8, loc="left")  # fmt: skip
    fig.add_subplot(grid[0, 1]).set_visible(False)
    for index, layer in enumerate(layers):
        ax = fig.add_subplot(grid[1 + index, 0], sharex=top)
        gate = analysis.arrays[f"gate:{layer['layer']}"]
        image = ax.imshow(gate, cmap=_cmap(), aspect="auto", interpolation="nearest",
                          extent=(-0.5, steps - 0.5, nodes - 0.5, -0.5))  # fmt: skip
        ax.set_yticks(range(nodes), _short_names(series.names), fontsize=7)
        ax.axvline(read_from, color="white", linestyle="--", linewidth=1)
        low, high = layer["range"]
        periods = ", ".join(f"{p:g}" for p in layer["strongest_period"])
        ax.set_title(f"{layer['layer']} (dilation {layer['dilation']}): sigmoid gate, mean over {layer['channels']} "
                     f"channels, {low:.2f} to {high:.2f}; strongest period per node: {periods}", fontsize=8,
                     loc="left")  # fmt: skip
        fig.colorbar(image, cax=fig.add_subplot(grid[1 + index, 1])).ax.tick_params(labelsize=7)
        if index < len(layers) - 1:
            ax.tick_params(labelbottom=False)
    ax.set_xlabel("time step")
    known = f"; known main periods {', '.join(map(str, series.periods))}" if series.periods else ""
    fig.suptitle(
        f"temporal gate (MTGNN dilated inception, sigmoid) of a forecaster over {nodes} series x {steps} steps\n"
        f"input: {series.source}{known}; periods (in steps) read right of the dashed line, the last "
        f"{analysis.facts['periods_read_over_last_steps']} steps",
        fontsize=9,
    )
    return fig


def _draw_series(ax: Axes, values: np.ndarray, names: tuple[str, ...]) -> None:
    """Each node's series, standardised and stacked top to bottom in the heatmaps' row order."""
    from attnviz.sequence.tasks import standardise

    offsets = -3.0 * np.arange(values.shape[0])
    for node, (row, offset) in enumerate(zip(standardise(values), offsets, strict=True)):
        ax.plot(row + offset, color=SERIES_COLORS[node % len(SERIES_COLORS)], linewidth=0.9)
    ax.set_yticks(offsets, _short_names(names), fontsize=7)
    ax.set_xlim(-0.5, values.shape[1] - 0.5)
    ax.tick_params(labelbottom=False)
    ax.grid(axis="x", alpha=0.3)


def _short_names(names: tuple[str, ...]) -> list[str]:
    return [name if len(name) <= 22 else name[:21] + "…" for name in names]


def draw(analysis: SequenceAnalysis, source: str) -> View:
    """The View of `attnviz sequence`: one picture ("alignment" or "gate") and the facts as its summary."""
    if analysis.block == "additive":
        pictures = {"alignment": alignment_figure(analysis)}
    else:
        pictures = {"gate": gate_figure(analysis)}
    summary = {**analysis.facts, "weights": source, "maps": [m.summary() for m in analysis.recording]}
    return View(pictures, summary, analysis.block, analysis.stem, analysis)
