"""Drawing captured attention: pure functions from arrays and PIL images to PIL images and matplotlib figures.

`overlay` draws heat maps on photos with Pillow only (fast enough for batches), `charts` builds matplotlib
figures for attention that is not a picture, and `save` writes either kind of result atomically. Maps arrive at
the original photo's resolution; NaN marks pixels the model never saw and is drawn as a greyed-out photo.
"""

from __future__ import annotations

from attnviz.render.charts import (
    channel_bars,
    channel_small_multiples,
    figure_to_image,
    normalised_entropy,
    selection_chart,
)
from attnviz.render.layout import caption_tile, grid
from attnviz.render.overlay import colorize, colormap_lut, desaturate, mark_point, overlay
from attnviz.render.panels import coordinate_panel, matrix_heatmaps
from attnviz.render.save import FORMATS, save

__all__ = [
    "FORMATS",
    "caption_tile",
    "channel_bars",
    "channel_small_multiples",
    "colorize",
    "colormap_lut",
    "coordinate_panel",
    "desaturate",
    "figure_to_image",
    "grid",
    "mark_point",
    "matrix_heatmaps",
    "normalised_entropy",
    "overlay",
    "save",
    "selection_chart",
]
