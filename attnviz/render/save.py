"""Save a rendered picture (a PIL image or a matplotlib figure) as PNG, SVG or PDF, atomically (attnviz.io.atomic)."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

from PIL import Image

from attnviz.errors import UsageError
from attnviz.io.atomic import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FORMATS = ("png", "svg", "pdf")
DPI = 150
"""Resolution of figures in PNG and of PIL images in PDF."""
# Suffixes that name a picture format and are replaced by the chosen format's. Anything else (a dotted layer
# name such as "layer3.1.attn") is part of the file name and is kept: "layer3.1.attn" -> "layer3.1.attn.png".
_REPLACEABLE_SUFFIXES = frozenset(
    {".png", ".svg", ".pdf", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".gif", ".bmp", ".eps", ".ps", ".npz", ".json"}
)


def output_path(path: Path, fmt: str) -> Path:
    """`path` with the suffix of `fmt`: a picture suffix is replaced, any other suffix is kept and extended."""
    path = Path(path)
    if path.suffix.lower() in _REPLACEABLE_SUFFIXES:
        return path.with_suffix(f".{fmt}")
    return path.with_name(f"{path.name}.{fmt}")


def _check_format(fmt: str) -> str:
    normalised = fmt.lower().lstrip(".")
    if normalised not in FORMATS:
        raise UsageError(f"unknown output format {fmt!r}", f"choose one of: {', '.join(FORMATS)}")
    return normalised


def _image_svg(image: Image.Image) -> bytes:
    """An SVG document showing `image` at its native pixel size (embedded as base64 PNG)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    w, h = image.size
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        f'width="{w}" height="{h}" viewBox="0 0 {w} {h}">\n'
        f'  <image width="{w}" height="{h}" xlink:href="data:image/png;base64,{data}"/>\n'
        "</svg>\n"
    ).encode("ascii")


def _image_writer(image: Image.Image, fmt: str, dpi: float) -> Callable[[IO[bytes]], None]:
    def write(handle: IO[bytes]) -> None:
        if fmt == "png":
            image.save(handle, format="PNG", compress_level=1)  # 4x faster than the default, files ~25% larger
        elif fmt == "pdf":
            image.convert("RGB").save(handle, format="PDF", resolution=float(dpi))
        else:
            handle.write(_image_svg(image))

    return write


def _figure_writer(fig: Figure, fmt: str, dpi: float) -> Callable[[IO[bytes]], None]:
    # No dates in the metadata, so the same figure always gives the same bytes (golden files stay stable).
    metadata = {"svg": {"Date": None}, "pdf": {"CreationDate": None}}.get(fmt)

    def write(handle: IO[bytes]) -> None:
        import matplotlib

        # Text stays text (editable, searchable) in SVG and PDF: SVG names the font, PDF embeds it as TrueType.
        with matplotlib.rc_context({"svg.fonttype": "none", "pdf.fonttype": 42}):
            fig.savefig(handle, format=fmt, dpi=dpi, metadata=metadata, facecolor="white")

    return write


def save(obj: Image.Image | Figure, path: Path, fmt: str = "png", *, dpi: float = DPI) -> Path:
    """Save a rendered image or figure atomically.

    Args:
        obj: A PIL image or a matplotlib figure.
        path: Target; a picture suffix (".png", ".jpg", ...) is replaced by `fmt`'s, any other is kept
            ("out/layer3.1.attn" becomes "out/layer3.1.attn.png"). Missing directories are created.
        fmt: "png", "svg" or "pdf". A PIL image keeps its pixels in every format (SVG embeds it at native size).
        dpi: Resolution of a figure; for a PIL image in a PDF, its pixels per inch.

    Returns:
        The path written.

    Raises:
        UsageError: unknown format, or the directory cannot be created or written to.
        TypeError: `obj` is neither a PIL image nor a figure.
    """
    fmt = _check_format(fmt)
    target = output_path(path, fmt)
    if isinstance(obj, Image.Image):
        writer = _image_writer(obj, fmt, dpi)
    elif hasattr(obj, "savefig"):
        writer = _figure_writer(obj, fmt, dpi)
    else:
        raise TypeError(f"save expects a PIL image or a matplotlib Figure, got {type(obj).__name__}")
    return atomic_write(target, writer)


def rasterise(obj: Image.Image | Figure, *, dpi: float = DPI) -> Image.Image:
    """A picture as the PIL image its PNG file holds: an image as it is, a figure drawn exactly as `save` writes it."""
    if isinstance(obj, Image.Image):
        return obj
    if not hasattr(obj, "savefig"):
        raise TypeError(f"rasterise expects a PIL image or a matplotlib Figure, got {type(obj).__name__}")
    buffer = io.BytesIO()
    _figure_writer(obj, "png", dpi)(buffer)
    buffer.seek(0)
    with Image.open(buffer) as image:
        image.load()
        return image.copy()
