"""What every drawing command returns: a View, the pictures it draws for one image and a JSON-ready summary.

The CLI saves a View's pictures and prints its summary; a notebook shows it inline (`_repr_png_`) and `view.save()`
writes the very files the CLI writes. Figures are rasterised for PNG by the same function either way, so
`view.images[what]` equals, pixel for pixel, the PNG the CLI writes for that picture.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from PIL import Image

Picture = Union["Image.Image", "Figure"]
"""A picture as drawn: a PIL image, or a matplotlib figure (kept as vectors for SVG and PDF)."""


@dataclass(frozen=True)
class Style:
    """How maps are drawn over a photo.

    Attributes:
        cmap: Matplotlib colormap of the heat (viridis: perceptually uniform; jet, as CAM tools use, is available).
        alpha: Opacity of the heat over the photo, 0-1.
        contour: Outline the peak of each map.
        colorbar: Put a colour bar with its values beside each map.
        scale: How maps share colours: "per-map" (each from its own minimum to maximum), "per-stage" (the maps of
            one stage share a range) or "shared" (every map of the picture shares one range). Maps whose range is
            fixed (ASFF level weights, CAMs: 0-1) keep it.
        vmin: The value drawn in the colormap's first colour, for every map (default: from `scale`).
        vmax: The value drawn in the colormap's last colour, for every map (default: from `scale`).
    """

    cmap: str = "viridis"
    alpha: float = 0.5
    contour: bool = False
    colorbar: bool = True
    scale: str = "per-map"
    vmin: float | None = None
    vmax: float | None = None


DEFAULT_STYLE = Style()


@dataclass
class View:
    """The pictures a drawing command makes of one image, and what it found.

    Attributes:
        pictures: What each picture shows ("show", "channels_stage3", "asff_levels"...) -> the picture. The CLI
            writes each to `<image stem>_<name>_<what>.<format>`.
        summary: JSON-ready facts about the maps (the CLI's `--json` result for this image).
        name: The model's piece of the file names (the block, or a slug of the model spec).
        stem: The image's piece of the file names (its file name without suffix).
        analysis: The analysed image the pictures were drawn from (its maps: `view.analysis.recording`).
        loaded: The model they were drawn with, when the caller sets it (the HTML report's header then names its
            weights and stages).
    """

    pictures: dict[str, Picture]
    summary: dict[str, Any]
    name: str
    stem: str
    analysis: Any = field(default=None, repr=False)
    loaded: Any = field(default=None, repr=False)
    _images: dict[str, Image.Image] = field(default_factory=dict, repr=False)

    def file_name(self, what: str, fmt: str = "png") -> str:
        return f"{self.stem}_{self.name}_{what}.{fmt}"

    @property
    def images(self) -> dict[str, Image.Image]:
        """Every picture as a PIL image (figures rasterised exactly as the PNG files are)."""
        from attnviz.render.save import rasterise

        for what, picture in self.pictures.items():
            if what not in self._images:
                self._images[what] = rasterise(picture)
        return dict(self._images)

    @property
    def image(self) -> Image.Image:
        """The first (main) picture as a PIL image."""
        return self.images[next(iter(self.pictures))]

    def save(self, out: str | Path = "attnviz-out", fmt: str = "png") -> list[Path]:
        """Write every picture to the folder `out` (atomically) as the CLI does; returns the paths written.

        `fmt` "html" writes instead one interactive report of what the analysis captured
        (`<image stem>_<name>_report.html`, see attnviz.report).
        """
        from attnviz.options import HTML_FORMAT

        if fmt.lower().lstrip(".") == HTML_FORMAT:
            from attnviz.report.build import view_page
            from attnviz.report.page import write

            return [write(view_page(self), Path(out) / self.file_name("report", HTML_FORMAT))]
        from attnviz.render.save import save

        folder = Path(out)
        return [save(picture, folder / self.file_name(what, fmt), fmt) for what, picture in self.pictures.items()]

    def _repr_png_(self) -> bytes:
        """What a notebook shows: the main picture."""
        buffer = io.BytesIO()
        self.image.save(buffer, format="PNG")
        return buffer.getvalue()
