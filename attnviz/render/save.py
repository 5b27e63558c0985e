"""Write rendered images, figures and raw arrays to disk atomically.

Every file goes to a temporary file in the target's directory first and is then renamed onto the target
(`os.replace`, atomic on POSIX and Windows), so a crash or an error never leaves a half-written file behind and an
existing file is only ever replaced by a complete one.
"""

from __future__ import annotations

import base64
import io
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from attnviz.errors import AttnvizError, UsageError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FORMATS = ("png", "svg", "pdf")
# Suffixes that name a picture format and are replaced by the chosen format's. Anything else (a dotted layer
# name such as "layer3.1.attn") is part of the file name and is kept: "layer3.1.attn" -> "layer3.1.attn.png".
_REPLACEABLE_SUFFIXES = frozenset(
    {".png", ".svg", ".pdf", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".gif", ".bmp", ".eps", ".ps", ".npz", ".json"}
)


@lru_cache(maxsize=1)
def _file_mode() -> int:
    """Permissions a normally created file gets (0o666 minus the umask); temporary files start at 0o600."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def _ensure_directory(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(
            f"cannot create output directory {directory}", error.strerror or type(error).__name__
        ) from error


def atomic_write(path: Path, write_fn: Callable[[IO[bytes]], None]) -> Path:
    """Write a file atomically: `write_fn` fills a temporary file next to `path`, which is then renamed onto it.

    Args:
        path: The target file. Its directory is created if missing.
        write_fn: Called with the open binary temporary file; it must only write to it.

    Returns:
        `path`.

    Raises:
        UsageError: the directory cannot be created or written to.
        AttnvizError: writing failed with an OSError (disk full, ...); nothing is left behind.
        Exception: whatever else `write_fn` raises; the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    directory = path.parent
    _ensure_directory(directory)
    try:
        handle = tempfile.NamedTemporaryFile(  # closed below: it must outlive this block
            dir=directory, prefix=f".{path.name}.", suffix=".tmp", delete=False
        )
    except OSError as error:
        raise UsageError(
            f"cannot write to output directory {directory}", error.strerror or type(error).__name__
        ) from error
    temp = Path(handle.name)
    try:
        with handle:
            write_fn(handle)
        os.chmod(temp, _file_mode())
        os.replace(temp, path)
    except BaseException as error:  # KeyboardInterrupt too: no half-written file may stay behind
        temp.unlink(missing_ok=True)
        if isinstance(error, OSError):  # disk full, folder removed meanwhile...: not a bug, say what failed
            raise AttnvizError(f"cannot write {path}", error.strerror or str(error)) from error
        raise
    return path


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
        fig.savefig(handle, format=fmt, dpi=dpi, metadata=metadata, facecolor="white")

    return write


def save(obj: Image.Image | Figure, path: Path, fmt: str = "png", *, dpi: float = 150) -> Path:
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


def _json_default(value: Any) -> Any:
    """JSON for the numpy scalars/arrays and paths that summaries tend to contain."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def save_raw(arrays: Mapping[str, np.ndarray], summary: dict[str, Any], path_stem: Path) -> tuple[Path, Path]:
    """Save the numbers behind a picture: `<stem>.npz` (compressed arrays) and `<stem>.json` (the summary).

    Args:
        arrays: Name -> array; names become the npz keys.
        summary: JSON-ready description (numpy scalars/arrays and paths are converted).
        path_stem: Target without suffix; ".npz"/".json" are appended (dots in the stem are kept).

    Returns:
        (npz path, json path), both written atomically.

    Raises:
        UsageError: the directory cannot be created or written to.
        TypeError: `summary` holds something JSON cannot represent (nothing is written then).
    """
    stem = Path(path_stem)
    text = json.dumps(summary, indent=2, default=_json_default) + "\n"  # fails before anything is written
    plain = {name: np.asarray(value) for name, value in arrays.items()}
    npz = atomic_write(stem.with_name(f"{stem.name}.npz"), lambda handle: np.savez_compressed(handle, **plain))
    summary_path = atomic_write(stem.with_name(f"{stem.name}.json"), lambda handle: handle.write(text.encode()))
    return npz, summary_path
