"""One self-contained HTML file per image: the header in HTML, the maps as JSON, the page's script and style
inline, the photo as a data: URL. A Content-Security-Policy forbids the page any request, so it works offline and
from file:// exactly as it does anywhere else.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from PIL import Image

from attnviz.errors import UsageError, option
from attnviz.io.atomic import atomic_write
from attnviz.render.overlay import FLAT_RANGE

DISPLAY_SIDE = 480
"""The photo's longer side on the page, in canvas pixels (its own aspect is kept)."""
DEFAULT_BUDGET_MB = 10.0
"""The largest report written unless told otherwise (--max-mb)."""
QUERY_STRIDES = (1, 2, 3, 4, 6, 8)
"""Coarsening steps tried, in order, when the rows of every cell do not fit the budget."""
COLORMAPS = ("viridis", "magma", "inferno", "plasma", "cividis", "turbo", "jet", "gray")
"""Colormaps the page offers (plus the one asked for)."""
SCRIPTS = ("core.js", "views.js", "ui.js")
POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


def display_size(original: tuple[int, int]) -> tuple[int, int]:
    """(width, height) of the photo on the page: its longer side DISPLAY_SIDE, the height as
    `Analysis.thumbnail(width)` rounds it."""
    width, height = original
    shown_w = max(1, round(width * DISPLAY_SIDE / max(width, height)))
    return shown_w, max(1, round(height * shown_w / width))


def photo_url(image: Image.Image, size: tuple[int, int]) -> str:
    """The photo at `size` as a JPEG data: URL."""
    buffer = io.BytesIO()
    image.convert("RGB").resize(size, Image.Resampling.LANCZOS).save(buffer, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def colormaps(chosen: str) -> dict[str, str]:
    """name -> base64 of its 256 x 3 uint8 lookup table, the chosen one first."""
    from attnviz.render.overlay import colormap_lut

    return {
        name: base64.b64encode(colormap_lut(name).tobytes()).decode("ascii")
        for name in dict.fromkeys((chosen, *COLORMAPS))
    }


def _static(name: str) -> str:
    return (resources.files("attnviz.report") / "static" / name).read_text(encoding="utf-8")


def _header(meta: dict[str, Any]) -> str:
    rows = "".join(
        f"<dt>{html.escape(key)}</dt><dd>{html.escape(str(value))}</dd>" for key, value in meta["facts"].items()
    )
    return f"<h1>{html.escape(meta['title'])}</h1><dl>{rows}</dl>"


def render(payload: dict[str, Any]) -> str:
    """The HTML page of a payload (see `payload`)."""
    meta = payload["meta"]
    data = json.dumps(payload, separators=(",", ":")).replace("</", "<\\/")
    notes = "".join(f"<li>{html.escape(note)}</li>" for note in meta["notes"])
    script = "\n".join(_static(name) for name in SCRIPTS).replace("</script", "<\\/script")
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{POLICY}\">"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(meta['title'])}</title><style>{_static('report.css')}</style></head>\n<body>"
        f"<header>{_header(meta)}</header><nav id='stages' role='tablist'></nav><section id='controls'></section>"
        "<p id='readout'>Move over a map to read its values; click a photo of attention rows to pick the query "
        "pixel.</p><main id='panels'></main>"
        f"<footer><ul>{notes}</ul><p>Written by attnviz {html.escape(meta['version'])}; everything is in this file, "
        "nothing is fetched.</p></footer>\n"
        f"<script type='application/json' id='attnviz-data'>{data}</script>\n<script>{script}</script>\n"
        "</body></html>\n"
    )


def payload(
    analysis: Any,
    stages: list[dict[str, Any]],
    facts: dict[str, str],
    notes: Sequence[str],
    *,
    title: str,
    cmap: str = "viridis",
    alpha: float = 0.5,
    detections: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Everything the page shows of one image."""
    from attnviz import __version__
    from attnviz.report.data import geometry_of

    shown = display_size(analysis.image.size)
    return {
        "meta": {"title": title, "facts": facts, "notes": list(notes), "version": __version__},
        "geometry": geometry_of(analysis),
        "display": list(shown),
        "photo": photo_url(analysis.image, shown),
        "colormaps": colormaps(cmap),
        "cmap": cmap,
        "alpha": alpha,
        "stages": stages,
        "detections": detections,
        "flatRange": FLAT_RANGE,
    }


def within_budget(make: Callable[[int], str], budget_mb: float, what: str) -> tuple[str, int]:
    """(page, query stride): the page `make(stride)` at the finest stride in QUERY_STRIDES under `budget_mb`.

    Raises:
        UsageError: even the coarsest page is over the budget.
    """
    size, previous = 0, None
    for stride in QUERY_STRIDES:
        page = make(stride)
        size = len(page.encode("utf-8"))
        if size <= budget_mb * 2**20:
            return page, stride
        if size == previous:
            break  # the grids are too small to coarsen further
        previous = size
    raise UsageError(
        f"the report of {what} would take {size / 2**20:.2f} MB, over the {budget_mb:g} MB budget",
        f"draw fewer stages ({option('stages')}) or heads ({option('heads')}), a smaller {option('size')}, "
        f"or raise {option('max_mb')}",
    )


def write(page: str, path: Path) -> Path:
    """Write the page atomically."""
    return atomic_write(Path(path), lambda handle: handle.write(page.encode("utf-8")))
