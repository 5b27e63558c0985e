"""Options shared by the commands, declared once as Annotated types, and the helpers that interpret them."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from attnviz.blocks.catalog import block_names
from attnviz.errors import UsageError
from attnviz.models import BACKBONES
from attnviz.options import (
    HTML_FORMAT,
    check_alpha,
    check_block_kinds,
    check_cmap,
    check_device,
    check_preprocess,
    check_size,
    parse_point,
    parse_stages,
)
from attnviz.render.save import FORMATS

if TYPE_CHECKING:
    from attnviz.loading import LoadedModel

__all__ = ["check_block_kinds", "parse_point", "parse_stages"]  # the library's checks, re-exported for the commands

BlockArg = Annotated[
    str, typer.Argument(help=f"Attention block: {', '.join(block_names(backbone_only=True))}.", show_default=False)
]
OptionalBlockArg = Annotated[
    str | None,
    typer.Argument(
        help=f"Attention block: {', '.join(block_names(backbone_only=True))}. Left out with --model.",
        show_default=False,
    ),
]
"""BLOCK of the commands that also take --model (which brings its own attention)."""
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="A model attnviz did not build, whose own attention modules are found and drawn: torchvision:NAME, "
        "timm:NAME, your own code as path/to/file.py:factory or package.module:factory (keyword arguments after "
        "commas: mynet.py:build,num_classes=10; your checkpoint with --weights), or a model file (a pickled model "
        "needs --trust; a state dict fits --backbone and BLOCK).",
        show_default=False,
    ),
]
TimmAttnOpt = Annotated[
    str | None,
    typer.Option(
        "--timm-attn",
        help="With --model timm:NAME: timm's attention layer for every block (se, eca, cbam, lcbam, coord, gc, sk...), "
        "for models that take one such as resnet18.",
        show_default=False,
    ),
]
BackboneOpt = Annotated[str, typer.Option("--backbone", "-b", help=f"Backbone: {', '.join(BACKBONES)}.")]
StagesOpt = Annotated[str, typer.Option("--stages", help="Stages that get the block, comma-separated (1-4).")]
DrawStagesOpt = Annotated[
    str | None,
    typer.Option(
        "--stages",
        help="Stages that get the block, comma-separated (1-4; default all four, matrix 3,4). Weights from attnviz "
        "fit (and the demo weights) put the block where it was trained; --stages then picks which of those to draw.",
        show_default=False,
    ),
]
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


def _size_syntax(text: str) -> str:
    """Refuse what is not N or WIDTHxHEIGHT at parse time (click's one line); the library checks the range."""
    if not re.fullmatch(r"-?\d+(?:[xX]-?\d+)?", text.strip()):
        raise typer.BadParameter(f"{text!r} is not N or WIDTHxHEIGHT, e.g. 224 or 640x384")
    return text.strip()


SizeOpt = Annotated[
    Any,
    typer.Option(
        "--size",
        parser=_size_syntax,
        metavar="N|WxH",
        help="Model input: N for N x N, or WIDTHxHEIGHT such as 640x384 (default: what the weights were trained at, "
        "or 224).",
        show_default=False,
    ),
]
PreprocessOpt = Annotated[
    str, typer.Option("--preprocess", help="Fit the image to the input by: resize, crop or letterbox.")
]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Folder the pictures are written to.")]
FormatOpt = Annotated[
    str,
    typer.Option(
        "--format",
        "-f",
        help=f"Picture format: {', '.join(FORMATS)}; or {HTML_FORMAT}, one interactive report per image (offline).",
    ),
]
CmapOpt = Annotated[
    str, typer.Option("--cmap", help="Matplotlib colormap of the overlays (viridis is perceptually uniform; jet, ...).")
]
ColorbarOpt = Annotated[
    bool, typer.Option("--colorbar/--no-colorbar", help="Put a colour bar with its values beside each map.")
]
ScaleOpt = Annotated[
    str,
    typer.Option(
        "--scale",
        help="How maps share colours: per-map (each its own min-max), per-stage (one range per stage) or shared "
        "(one range for the whole picture).",
    ),
]
VminOpt = Annotated[
    float | None,
    typer.Option("--vmin", help="Value of the first colour, for every map.", show_default=False),
]
VmaxOpt = Annotated[
    float | None, typer.Option("--vmax", help="Value of the last colour, for every map.", show_default=False)
]
AlphaOpt = Annotated[float, typer.Option("--alpha", help="Opacity of the overlay, 0-1.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (a GPU when there is one), cpu or cuda.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a machine-readable result on stdout.")]
SaveRawOpt = Annotated[
    bool, typer.Option("--save-raw", help="Also write every captured tensor to .npz with a JSON summary.")
]
BatchSizeOpt = Annotated[
    int | None,
    typer.Option(
        "--batch-size",
        help="Photos per forward pass over a folder (default: 1 on a CPU, where batches are no faster, 16 on a GPU).",
        show_default=False,
    ),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        help="Processes that draw and write the pictures of a folder (default: one per CPU core; 0: none).",
        show_default=False,
    ),
]


def check_common(
    *, size: str | int | None, preprocess: str, fmt: str, alpha: float, device: str, cmap: str | None = None
) -> None:
    """Validate the options every drawing command shares, before any heavy work starts."""
    check_size(size)
    check_preprocess(preprocess)
    if fmt not in (*FORMATS, HTML_FORMAT):
        raise UsageError(f"unknown --format {fmt!r}", f"choose one of: {', '.join((*FORMATS, HTML_FORMAT))}")
    check_alpha(alpha)
    check_device(device)
    if cmap is not None:
        check_cmap(cmap)


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


def split_positionals(
    block: str | None, rest: list[Path], model: str | None, command: str
) -> tuple[str | None, list[Path]]:
    """(BLOCK, the other positional arguments). With --model, BLOCK is left out, so a first argument that is not a
    block name (or is an existing file) is the first image.

    Raises:
        UsageError: no --model and no BLOCK.
    """
    if model is None:
        if block is None:
            raise UsageError("missing argument BLOCK", f"e.g. attnviz {command} cbam ..., or pass --model")
        return block, rest
    if block is None or (block in block_names() and not Path(block).exists()):
        return block, rest
    return None, [Path(block), *rest]


def load_model(
    command: str,
    block: str | None,
    *,
    model: str | None,
    backbone: str,
    stages: str | None,
    pretrained: bool,
    weights: Path | None,
    trust: bool,
    timm_attn: str | None,
    size: int | None,
    device: str,
    quiet: bool,
    layer: int | None = None,
) -> LoadedModel:
    """The model a drawing command draws (`attnviz.api.load_for`), announced on stderr unless `quiet`."""
    from attnviz.api import load_for
    from attnviz.options import KINDS, MATRIX_STAGES

    loaded = load_for(
        command,
        block,
        kinds=KINDS[command],
        default_stages=MATRIX_STAGES if command == "matrix" else None,
        layer=layer,
        model=model,
        backbone=backbone,
        stages=stages,
        pretrained=pretrained,
        weights=weights,
        trust=trust,
        timm_attn=timm_attn,
        size=size,
        device=device,
    )
    announce(loaded, quiet=quiet)
    if size is None and not quiet and loaded.weights_info is not None:
        from attnviz.cli.common import err

        side = loaded.input_size
        err.print(f"[dim]input: {side}x{side} px, the size the weights were trained at (--size 224 for finer maps)[/]")
    return loaded


def announce(loaded: LoadedModel, *, quiet: bool) -> None:
    """Say, in one line on stderr, where the model's weights came from (yellow when they are untrained)."""
    from attnviz.cli.common import err

    if not quiet:
        style = "dim" if loaded.trained else "yellow"
        err.print(f"[{style}]model: {escape(loaded.source)}[/]")
