"""`channels`: per-channel weights (SE, ECA, CBAM's channel half, scSE, GAM, NAM...) as bar charts, and SK-style
selection between branches, for the last block of each stage or every block of one stage."""

from __future__ import annotations

from typing import Any

import numpy as np

from attnviz.analysis import Analysis
from attnviz.errors import UsageError
from attnviz.loading import LoadedModel
from attnviz.maps import AttentionMap, channel_vector, entropy, selection_weights
from attnviz.options import KINDS as COMMAND_KINDS
from attnviz.views.base import Picture, View
from attnviz.views.common import describe, prediction, stage_representatives

KINDS = COMMAND_KINDS["channels"]
"""The kinds of attention `channels` draws."""


def draw(
    analysis: Analysis, loaded: LoadedModel, *, layer: int | None = None, order: str = "sorted", top_k: int = 10
) -> View:
    """The channel charts of one analysed image.

    Args:
        analysis: The image through the model, captured for `KINDS` (and, with `layer`, that stage's blocks).
        loaded: The model.
        layer: Draw every block of this stage; None draws the last block of every stage.
        order: Bars "sorted" by weight, or in "channel" order.
        top_k: Mark the k strongest channels with their indices.

    Raises:
        UsageError: no channel attention was captured at the chosen layers.
    """
    from attnviz.render.charts import channel_bars, channel_small_multiples, selection_chart

    drawn = stage_representatives(loaded, analysis.recording.layers(), every_block=layer is not None)
    maps = [m for m in analysis.recording if m.layer in drawn]
    channel_maps = [m for m in maps if m.kind == "channel"]
    selection_maps = [m for m in maps if m.kind == "selection"]
    if not channel_maps and not selection_maps:
        raise UsageError(f"no channel attention was captured for {loaded.spec} at the chosen layers")
    pictures: dict[str, Picture] = {}
    summary: list[dict[str, Any]] = []
    if channel_maps:
        vectors = [(describe(m, loaded), channel_vector(m)[0]) for m in channel_maps]
        what = f"channels_stage{layer}" if layer is not None else "channels"
        pictures[what] = (
            channel_bars(vectors[0][1], order=order, top_k=top_k, title=vectors[0][0])
            if len(vectors) == 1
            else channel_small_multiples(vectors, order=order, top_k=min(top_k, 5))
        )
        summary += [
            {"map": m.name, "channels": int(v.size), **channel_stats(v)}
            for (_, v), m in zip(vectors, channel_maps, strict=True)
        ]
    for m in selection_maps:
        weights_kc = selection_weights(m)[0]
        names = branch_names(m, weights_kc.shape[0])
        pictures[f"selection_{m.layer.replace('.', '-')}"] = selection_chart(
            weights_kc, branch_names=names, title=describe(m, loaded)
        )
        summary.append({"map": m.name, "branches": names, "branch_means": [float(v) for v in weights_kc.mean(axis=1)]})
    return View(
        pictures,
        {
            "image": str(analysis.path),
            "prediction": prediction(analysis, loaded),
            "maps": summary,
            "captured": [m.summary() for m in analysis.recording],
        },
        loaded.name,
        analysis.path.stem,
        analysis,
        loaded,
    )


def branch_names(m: AttentionMap, count: int) -> list[str]:
    """The names of a selection map's branches ("3x3", "5x5 (dilated 3x3)"), or "branch k"."""
    return list(m.branches) or [f"branch {k}" for k in range(count)]


def channel_stats(weights: np.ndarray) -> dict[str, Any]:
    """Mean, spread, normalised entropy and the five strongest channels of one weight vector."""
    return {
        "mean": float(weights.mean()),
        "std": float(weights.std()),
        "entropy": float(entropy(weights) / np.log(max(2, weights.size))),
        "top": [int(i) for i in np.argsort(-weights)[:5]],
        "top_weights": [round(float(weights[i]), 4) for i in np.argsort(-weights)[:5]],
    }
