"""Checking and parsing the options every entry point shares, before anything heavy is imported.

The Python front door (`attnviz.show(...)`) and the CLI call the same checks, so a bad value is refused the same
way from both, naming the option as the caller spells it (`attnviz.errors.option`). Nothing here imports torch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from attnviz.blocks.catalog import block_info, block_names
from attnviz.errors import UsageError, invocation, option
from attnviz.images import MAX_SIZE, MIN_SIZE, MODES, Size
from attnviz.models import STAGES
from attnviz.render.charts import ORDERS as CHANNEL_ORDERS

DEVICES = ("auto", "cpu", "cuda")

KINDS = {
    "show": ("spatial", "coordinate", "level"),
    "channels": ("channel", "selection"),
    "coords": ("coordinate",),
    "matrix": ("matrix",),
}
"""The kinds of attention each drawing command draws."""
MATRIX_STAGES = (3, 4)
"""Where `matrix` puts self-attention blocks unless told: over every pixel of an early stage it is large."""
TRAINABLE_KINDS = ("channel", "spatial", "coordinate", "matrix", "selection")
"""Blocks that emit any of these can be fitted and evaluated."""

COMMAND_FOR_KIND = {
    "channel": "channels",
    "selection": "channels",
    "spatial": "show",
    "coordinate": "coords",
    "matrix": "matrix",
}
"""The command that draws each kind of attention."""


def parse_size(size: int | str | Sequence[int] | None) -> Size | None:
    """A model input size as given (224, "224", "640x384", (640, 384)) -> a side, or (width, height) when the
    sides differ; None stays None. Each side must be MIN_SIZE..MAX_SIZE pixels."""
    if size is None:
        return None
    flag = option("size")
    try:
        if isinstance(size, str):
            values = [int(part) for part in size.lower().split("x")]
        elif isinstance(size, int) and not isinstance(size, bool):
            values = [size]
        else:
            values = [int(side) for side in size]  # type: ignore[union-attr]
            values = values if len(values) == 2 else []  # a sequence is (width, height)
    except (TypeError, ValueError):
        values = []
    if len(values) not in (1, 2):
        raise UsageError(f"{flag} must be N or WIDTHxHEIGHT in pixels, got {size!r}", f"e.g. {flag} 224 or 640x384")
    for side in values:
        if not MIN_SIZE <= side <= MAX_SIZE:
            raise UsageError(f"{flag} must be between {MIN_SIZE} and {MAX_SIZE} pixels, got {side}")
    return values[0] if len(values) == 1 or values[0] == values[1] else (values[0], values[1])


def check_size(size: int | str | Sequence[int] | None) -> None:
    parse_size(size)


def check_preprocess(mode: str) -> None:
    if mode not in MODES:
        raise UsageError(f"unknown {option('preprocess')} {mode!r}", f"choose one of: {', '.join(MODES)}")


def check_alpha(alpha: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise UsageError(f"{option('alpha')} must be between 0 and 1, got {alpha}")


def check_device(device: str) -> None:
    if device not in DEVICES:
        raise UsageError(f"unknown {option('device')} {device!r}", f"choose one of: {', '.join(DEVICES)}")


def check_cmap(cmap: str) -> None:
    from attnviz.render.overlay import colormap_lut

    colormap_lut(cmap)


def check_drawing(
    *, size: int | str | Sequence[int] | None, preprocess: str, device: str, alpha: float = 0.5, cmap: str | None = None
) -> None:
    """The checks of the options every drawing command shares."""
    check_size(size)
    check_preprocess(preprocess)
    check_alpha(alpha)
    check_device(device)
    if cmap is not None:
        check_cmap(cmap)


def parse_stages(stages: str | Sequence[int], name: str = "stages") -> tuple[int, ...]:
    """ "1,2,3" or (1, 2, 3) -> (1, 2, 3), with one-line errors naming the option `name` for anything else."""
    flag = option(name)
    if isinstance(stages, str):
        try:
            parsed = tuple(int(part) for part in stages.split(",") if part.strip())
        except ValueError:
            raise UsageError(f"{flag} must be comma-separated numbers, got {stages!r}", f"e.g. {flag} 2,3,4") from None
    else:
        parsed = tuple(int(s) for s in stages)
    bad = [s for s in parsed if s not in STAGES]
    if bad or not parsed:
        raise UsageError(f"{flag}: stage {bad[0] if bad else stages!r} does not exist", "stages are 1, 2, 3 and 4")
    return parsed


def parse_point(text: str | Sequence[float]) -> tuple[float, float]:
    """ "120,80" or (120, 80) -> (120.0, 80.0)."""
    try:
        x, y = (float(v) for v in (text.split(",") if isinstance(text, str) else text))
    except (ValueError, TypeError):
        flag = option("query")
        raise UsageError(f"{flag} must be X,Y in pixels of the image, got {text!r}", f"e.g. {flag} 120,80") from None
    return x, y


def parse_heads(heads: str | Sequence[int] | None) -> list[int] | None:
    """ "0,2" or [0, 2] -> [0, 2]; None means every head."""
    if heads is None:
        return None
    flag = option("heads")
    try:
        parsed = [int(v) for v in heads.split(",") if v.strip()] if isinstance(heads, str) else [int(h) for h in heads]
    except (ValueError, TypeError):
        raise UsageError(f"{flag} must be comma-separated head numbers, got {heads!r}", f"e.g. {flag} 0,2") from None
    if not parsed or min(parsed) < 0:
        raise UsageError(f"{flag} must list head numbers from 0 up, got {heads!r}")
    return parsed


def check_points(points: Sequence[tuple[float, float]], image_size: tuple[int, int]) -> None:
    """Raise UsageError for the first query point outside an image of `image_size` (width, height) pixels.

    A query point is a pixel: X from 0 to width - 1, Y from 0 to height - 1, counted from the top-left corner; a
    fraction names the pixel it falls in (79.5 is pixel 79), see `pixel_centre`.
    """
    width, height = image_size
    for x, y in points:
        if not (0 <= x < width and 0 <= y < height):
            raise UsageError(
                f"query point {x:g},{y:g} lies outside the image ({width}x{height} pixels)",
                f"give X from 0 to {width - 1} and Y from 0 to {height - 1}",
            )


def pixel_centre(x: float, y: float) -> tuple[float, float]:
    """The centre of the pixel a query point names, in the continuous coordinates of `attnviz.images` (pixel
    (col, row) covers [col, col + 1) x [row, row + 1)): 79 and 79.5 both give 79.5."""
    return math.floor(x) + 0.5, math.floor(y) + 0.5


def check_block_kinds(block: str, wanted: Sequence[str], command: str) -> None:
    """Refuse early when `block` emits none of the kinds `command` draws, naming the command that fits."""
    info = block_info(block)
    if not info.fits_backbone:
        raise UsageError(
            f"block {block!r} does not fit inside a backbone",
            f"blocks that fit: {', '.join(block_names(backbone_only=True))}",
        )
    if set(info.kinds) & set(wanted):
        return
    better = sorted({COMMAND_FOR_KIND[k] for k in info.kinds if k in COMMAND_FOR_KIND})
    kinds = ", ".join(dict.fromkeys(info.kinds))
    raise UsageError(
        f"block {block!r} emits {kinds} attention, which `attnviz {command}` does not draw",
        f"try: {' or '.join(invocation(b, block) for b in better)}" if better else None,
    )


def check_channel_options(order: str, top_k: int) -> None:
    """The options of the channel-weight charts: bar order and how many strongest channels are marked."""
    if order not in CHANNEL_ORDERS:
        raise UsageError(f"unknown {option('order')} {order!r}", f"choose {' or '.join(CHANNEL_ORDERS)}")
    if top_k < 0:
        raise UsageError(f"{option('top_k')} must be 0 or more, got {top_k}")


def names_a_model(what: str | os.PathLike[str]) -> bool:
    """Whether a name given where a block may go names a model instead: "torchvision:NAME", "timm:NAME",
    "file.py:factory" or "package.module:factory" (existing or not: block names hold no colon), or an existing file
    that is not also a block name."""
    from attnviz.models.usercode import LIBRARIES, is_code_spec

    text = str(what)
    if text.partition(":")[0] in LIBRARIES or is_code_spec(text):
        return True
    return text not in block_names() and Path(text).exists()


SCALES = ("per-map", "per-stage", "shared")
"""How the maps of one picture share their colours (see attnviz.views.base.Style)."""


def check_colour_scale(scale: str, vmin: float | None, vmax: float | None) -> None:
    """The colour options of the overlays: a known scale, and vmin below vmax when both are given."""
    if scale not in SCALES:
        raise UsageError(f"unknown {option('scale')} {scale!r}", f"choose one of: {', '.join(SCALES)}")
    if vmin is not None and vmax is not None and not vmin < vmax:
        raise UsageError(f"{option('vmin')} must be below {option('vmax')}, got {vmin} and {vmax}")


HTML_FORMAT = "html"
"""`--format html`: instead of pictures, one interactive report per image of what the command captured
(attnviz.report); handled by `View.save` before any picture is saved."""
