"""`coords`: Coordinate Attention's a_h and a_w strips as profiles along the photo, and a_h x a_w as an overlay."""

from __future__ import annotations

from typing import Any

from attnviz.analysis import Analysis
from attnviz.loading import LoadedModel
from attnviz.options import KINDS as COMMAND_KINDS
from attnviz.views.base import DEFAULT_STYLE, Style, View
from attnviz.views.common import describe, full_width, prediction, stage_representatives

KINDS = COMMAND_KINDS["coords"]
PANEL_DPI = 130
"""Pixels per inch of each panel: its 9-13 pt labels come out 16-24 px tall, readable in the saved picture."""
"""The kinds of attention `coords` draws."""


def draw(analysis: Analysis, loaded: LoadedModel, style: Style = DEFAULT_STYLE, *, every_block: bool = False) -> View:
    """One panel per drawn block (profiles beside the photo, the product over it), stacked in one picture.

    Args:
        analysis: The image through the model, captured for `KINDS`.
        loaded: The model.
        style: Colormap and opacity of the overlay.
        every_block: Draw every block, not only the last block of each stage.
    """
    from attnviz.render.charts import figure_to_image
    from attnviz.render.layout import grid
    from attnviz.render.panels import coordinate_panel

    by_layer = analysis.recording.by_layer()
    width = full_width(analysis.image.size)  # a photo over MAX_FULL_PIXELS is drawn scaled down
    photo = analysis.thumbnail(width)
    panels, summary = [], []
    for layer in stage_representatives(loaded, list(by_layer), every_block=every_block):
        h_map, w_map = by_layer[layer][:2]
        a_h, a_w, outer = analysis.coordinate(h_map, w_map, width)
        title = describe(h_map, loaded).rsplit(" · ", 1)[0]
        figure = coordinate_panel(photo, a_h, a_w, outer, cmap=style.cmap, alpha=style.alpha, title=title)
        panels.append(figure_to_image(figure, dpi=PANEL_DPI))
        row = _layer_summary(layer, h_map.shape, w_map.shape, a_h, a_w)
        scales = {"peak_row": analysis.image.height / photo.height, "peak_col": analysis.image.width / photo.width}
        summary.append({**row, **{k: int(row[k] * f) for k, f in scales.items() if row[k] is not None}})
    picture = grid(panels, columns=1 if len(panels) < 3 else 2)
    return View(
        {"coords": picture},
        {
            "image": str(analysis.path),
            "prediction": prediction(analysis, loaded),
            "layers": summary,
            "captured": [m.summary() for m in analysis.recording],
        },
        loaded.name,
        analysis.path.stem,
        analysis,
        loaded,
    )


def _layer_summary(layer: str, h_shape: Any, w_shape: Any, a_h: Any, a_w: Any) -> dict[str, Any]:
    return {
        "layer": layer,
        "h_shape": list(h_shape),
        "w_shape": list(w_shape),
        "peak_row": int(a_h.argmax()) if a_h.size else None,
        "peak_col": int(a_w.argmax()) if a_w.size else None,
    }
