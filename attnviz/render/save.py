"""Save a rendered picture (a PIL image or a matplotlib figure) as PNG, SVG, PDF, JPEG or WebP, atomically
(attnviz.io.atomic).

PNG is written for speed: each row is stored as its difference from the row above (PNG's "Up" filter) and deflated at
level 1, half the time of Pillow's adaptive filters at the same size. JPEG and WebP, for large folders, are faster
still and several times smaller, at a slight loss. Every raster picture says in its metadata that attnviz drew it
(`drawn_by_attnviz`), so a folder run can leave attnviz's own outputs out of its inputs.
"""

from __future__ import annotations

import base64
import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np
from PIL import Image

from attnviz.errors import UsageError
from attnviz.io.atomic import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FORMATS = ("png", "svg", "pdf", "jpg", "webp")
DPI = 150
"""Resolution of figures in PNG and of PIL images in PDF."""
SOFTWARE = "attnviz"
"""What the Software field of every raster picture attnviz writes says."""
JPEG_QUALITY = 92
WEBP_QUALITY = 90
WEBP_METHOD = 0
"""WebP's fastest encoder setting: 3x faster than its default, files about 10% larger."""
PNG_LEVEL = 1
"""zlib level of PNG: 1 deflates several times faster than the default 6, for files a few percent larger."""
_EXIF_SOFTWARE = 0x0131
_PNG_MODES = {"L": (0, 1), "RGB": (2, 3), "LA": (4, 2), "RGBA": (6, 4)}
"""Pillow mode -> (PNG colour type, bytes per pixel) of the modes the fast PNG writer takes (8 bits a channel)."""
_ALPHA = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
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


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(image: Image.Image) -> bytes:
    """`image` as a PNG file: rows "Up"-filtered and deflated at PNG_LEVEL, with a Software text chunk.

    Modes other than L, LA, RGB and RGBA (8 bits a channel) go through Pillow at the same level.
    """
    if image.mode not in _PNG_MODES:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=PNG_LEVEL, pnginfo=_png_info())
        return buffer.getvalue()
    colour_type, depth = _PNG_MODES[image.mode]
    width, height = image.size
    pixels = np.asarray(image, dtype=np.uint8).reshape(height, width * depth)
    rows = np.empty((height, width * depth + 1), dtype=np.uint8)
    rows[:, 0] = 2  # the Up filter: each byte minus the byte above it (modulo 256)
    rows[:1, 1:] = pixels[:1]
    np.subtract(pixels[1:], pixels[:-1], out=rows[1:, 1:])
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", header),
            _png_chunk(b"tEXt", b"Software\x00" + SOFTWARE.encode()),
            _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), PNG_LEVEL)),
            _png_chunk(b"IEND", b""),
        ]
    )


def _save_fast_png(image: Image.Image, handle: IO[bytes], _filename: str | bytes) -> None:
    handle.write(png_bytes(image))


FAST_PNG = "ATTNVIZ-PNG"
"""Pillow's name for the fast PNG writer, so that PNGs too are written through `Image.save` like every format."""
Image.register_save(FAST_PNG, _save_fast_png)


def _png_info() -> object:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Software", SOFTWARE)
    return info


def _exif() -> Image.Exif:
    exif = Image.Exif()
    exif[_EXIF_SOFTWARE] = SOFTWARE
    return exif


def _check_opaque(image: Image.Image, fmt: str) -> None:
    if fmt == "jpg" and image.mode in _ALPHA:
        raise UsageError("a JPEG cannot hold a transparent picture (the --heat-only layers)", "write it as png or webp")


def _image_writer(image: Image.Image, fmt: str, dpi: float) -> Callable[[IO[bytes]], None]:
    _check_opaque(image, fmt)

    def write(handle: IO[bytes]) -> None:
        if fmt == "png":
            image.save(handle, format=FAST_PNG)
        elif fmt == "jpg":
            rgb = image.convert("RGB")
            rgb.save(handle, format="JPEG", quality=JPEG_QUALITY, subsampling=0, exif=_exif())  # 4:4:4 keeps text sharp
        elif fmt == "webp":
            image.save(handle, format="WEBP", quality=WEBP_QUALITY, method=WEBP_METHOD, exif=_exif())
        elif fmt == "pdf":
            image.convert("RGB").save(handle, format="PDF", resolution=float(dpi))
        else:
            handle.write(_image_svg(image))

    return write


def _figure_writer(fig: Figure, fmt: str, dpi: float) -> Callable[[IO[bytes]], None]:
    # No dates in the metadata, so the same figure always gives the same bytes (golden files stay stable).
    metadata = {"svg": {"Date": None}, "pdf": {"CreationDate": None}, "png": {"Software": SOFTWARE}}.get(fmt)

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
        fmt: One of FORMATS. A PIL image keeps its pixels in PNG, SVG (embedded at native size) and PDF; JPEG and
            WebP lose a little. A transparent image cannot be a JPEG.
        dpi: Resolution of a figure; for a PIL image in a PDF, its pixels per inch.

    Returns:
        The path written.

    Raises:
        UsageError: unknown format, a transparent image as JPEG, or the directory cannot be created or written to.
        TypeError: `obj` is neither a PIL image nor a figure.
    """
    fmt = _check_format(fmt)
    target = output_path(path, fmt)
    if isinstance(obj, Image.Image):
        writer = _image_writer(obj, fmt, dpi)
    elif hasattr(obj, "savefig") and fmt in ("jpg", "webp"):
        writer = _image_writer(rasterise(obj, dpi=dpi).convert("RGB"), fmt, dpi)  # the pixels of its PNG, opaque
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


def drawn_by_attnviz(path: Path) -> bool:
    """Whether the picture file `path` says attnviz drew it (read from its header; False for any other file)."""
    try:
        with Image.open(path) as image:
            if image.info.get("Software") == SOFTWARE:
                return True
            return image.format in ("JPEG", "WEBP") and image.getexif().get(_EXIF_SOFTWARE) == SOFTWARE
    except (OSError, SyntaxError, ValueError):
        return False
