"""Options shared by the commands, declared once as Annotated types, and the helpers that interpret them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from attnviz.blocks.catalog import block_info, block_names
from attnviz.errors import UsageError
from attnviz.models import BACKBONES, STAGES

if TYPE_CHECKING:
    from attnviz.pipeline import LoadedModel

PREPROCESS_MODES = ("resize", "crop", "letterbox")
FORMATS = ("png", "svg", "pdf")
DEVICES = ("auto", "cpu", "cuda")

BlockArg = Annotated[
    str, typer.Argument(help=f"Attention block: {', '.join(block_names(backbone_only=True))}.", show_default=False)
]
BackboneOpt = Annotated[str, typer.Option("--backbone", "-b", help=f"Backbone: {', '.join(BACKBONES)}.")]
StagesOpt = Annotated[str, typer.Option("--stages", help="Stages that get the block, comma-separated (1-4).")]
PretrainedOpt = Annotated[
    bool, typer.Option("--pretrained", help="Load torchvision's ImageNet weights into the backbone.")
]
WeightsOpt = Annotated[
    Path | None,
    typer.Option("--weights", help="Weights of the whole model (.safetensors or a weights-only torch file)."),
]
TrustOpt = Annotated[
    bool, typer.Option("--trust", help="Allow loading a pickled model file; this runs code from the file.")
]
SizeOpt = Annotated[
    int | None,
    typer.Option("--size", help="Side of the square model input (default: what the weights were trained at, or 224)."),
]
PreprocessOpt = Annotated[
    str, typer.Option("--preprocess", help="Fit the image to the input by: resize, crop or letterbox.")
]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Folder the pictures are written to.")]
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="Picture format: png, svg or pdf.")]
CmapOpt = Annotated[str, typer.Option("--cmap", help="Matplotlib colormap of the overlays.")]
AlphaOpt = Annotated[float, typer.Option("--alpha", help="Opacity of the overlay, 0-1.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (a GPU when there is one), cpu or cuda.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a machine-readable result on stdout.")]
SaveRawOpt = Annotated[
    bool, typer.Option("--save-raw", help="Also write every captured tensor to .npz with a JSON summary.")
]


def parse_stages(text: str) -> tuple[int, ...]:
    """ "1,2,3" -> (1, 2, 3), with one-line errors for anything else."""
    try:
        stages = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UsageError(f"--stages must be comma-separated numbers, got {text!r}", "e.g. --stages 2,3,4") from None
    bad = [s for s in stages if s not in STAGES]
    if bad or not stages:
        raise UsageError(f"stage {bad[0] if bad else text!r} does not exist", "stages are 1, 2, 3 and 4")
    return stages


def parse_point(text: str) -> tuple[float, float]:
    """ "120,80" -> (120.0, 80.0)."""
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"--query must be X,Y in pixels of the image, got {text!r}", "e.g. --query 120,80") from None
    return x, y


def check_common(
    *, size: int | None, preprocess: str, fmt: str, alpha: float, device: str, cmap: str | None = None
) -> None:
    """Validate the options every drawing command shares, before any heavy work starts."""
    if size is not None and not 16 <= size <= 4096:
        raise UsageError(f"--size must be between 16 and 4096 pixels, got {size}")
    if preprocess not in PREPROCESS_MODES:
        raise UsageError(f"unknown --preprocess {preprocess!r}", f"choose one of: {', '.join(PREPROCESS_MODES)}")
    if fmt not in FORMATS:
        raise UsageError(f"unknown --format {fmt!r}", f"choose one of: {', '.join(FORMATS)}")
    if not 0.0 <= alpha <= 1.0:
        raise UsageError(f"--alpha must be between 0 and 1, got {alpha}")
    if device not in DEVICES:
        raise UsageError(f"unknown --device {device!r}", f"choose one of: {', '.join(DEVICES)}")
    if cmap is not None:
        from attnviz.render.overlay import colormap_lut

        colormap_lut(cmap)


def check_out_dir(out: Path) -> None:
    """Refuse an --out folder that cannot be created or written to, before any heavy work starts.

    Nothing is created here; the folder is made when the first picture is written.
    """
    existing = out
    try:
        while not existing.exists() and existing != existing.parent:  # the nearest part of the path that exists
            existing = existing.parent
    except OSError as error:
        raise UsageError(f"cannot use output directory {out}", error.strerror or type(error).__name__) from None
    if not existing.is_dir():
        raise UsageError(f"cannot create output directory {out}", f"{existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write to output directory {out}", f"{existing} is not writable")


def check_block_kinds(block: str, wanted: tuple[str, ...], command: str) -> None:
    """Refuse early when `block` emits none of the kinds a command draws, naming the command that fits."""
    info = block_info(block)
    if not info.fits_backbone:
        raise UsageError(
            f"block {block!r} does not fit inside a backbone",
            f"blocks that fit: {', '.join(block_names(backbone_only=True))}",
        )
    if set(info.kinds) & set(wanted):
        return
    suggestion = {
        "channel": "channels",
        "selection": "channels",
        "spatial": "show",
        "coordinate": "coords",
        "matrix": "matrix",
    }
    better = sorted({suggestion[k] for k in info.kinds if k in suggestion})
    kinds = ", ".join(dict.fromkeys(info.kinds))
    raise UsageError(
        f"block {block!r} emits {kinds} attention, which `attnviz {command}` does not draw",
        f"try: {' or '.join(f'attnviz {b} {block}' for b in better)}" if better else None,
    )


def load(
    block: str,
    *,
    backbone: str,
    stages: str,
    pretrained: bool,
    weights: Path | None,
    trust: bool,
    device: str,
    quiet: bool,
) -> LoadedModel:
    """Build the model the options describe and say, in one line on stderr, where its weights came from."""
    from attnviz.cli.common import err
    from attnviz.pipeline import load_model

    loaded = load_model(
        block,
        backbone=backbone,
        stages=parse_stages(stages),
        pretrained=pretrained,
        weights=weights,
        trust=trust,
        device=device,
    )
    if not quiet:
        style = "dim" if loaded.trained else "yellow"
        err.print(f"[{style}]model: {escape(loaded.source)}[/]")
    return loaded


def input_size(size: int | None, loaded: LoadedModel) -> int:
    """--size if given, else the size the weights were trained at, else 224."""
    return size or loaded.input_size or 224


def output_path(out: Path, stem: str, block: str, what: str, fmt: str) -> Path:
    return out / f"{stem}_{block}_{what}.{fmt}"


def jsonable(value: Any) -> Any:
    """Paths and numpy scalars made JSON-friendly."""
    import numpy as np

    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
