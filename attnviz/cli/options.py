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
        "timm:NAME, or a model file (a pickled model needs --trust; a state dict fits --backbone and BLOCK).",
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


def parse_stages(text: str, flag: str = "--stages") -> tuple[int, ...]:
    """ "1,2,3" -> (1, 2, 3), with one-line errors (naming `flag`) for anything else."""
    try:
        stages = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UsageError(f"{flag} must be comma-separated numbers, got {text!r}", f"e.g. {flag} 2,3,4") from None
    bad = [s for s in stages if s not in STAGES]
    if bad or not stages:
        raise UsageError(f"{flag}: stage {bad[0] if bad else text!r} does not exist", "stages are 1, 2, 3 and 4")
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


COMMAND_FOR_KIND = {
    "channel": "channels",
    "selection": "channels",
    "spatial": "show",
    "coordinate": "coords",
    "matrix": "matrix",
}
"""The command that draws each kind of attention."""


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
    better = sorted({COMMAND_FOR_KIND[k] for k in info.kinds if k in COMMAND_FOR_KIND})
    kinds = ", ".join(dict.fromkeys(info.kinds))
    raise UsageError(
        f"block {block!r} emits {kinds} attention, which `attnviz {command}` does not draw",
        f"try: {' or '.join(f'attnviz {b} {block}' for b in better)}" if better else None,
    )


def check_model_kinds(loaded: LoadedModel, model: str, wanted: tuple[str, ...], command: str) -> None:
    """Refuse a --model whose recognised attention (in the chosen stages) has none of the kinds `command` draws."""
    report = loaded.foreign
    if report is None:
        return
    layers = set(loaded.model.attnviz_blocks)
    kinds = list(dict.fromkeys(k for m in report.recognised if m.path in layers for k in m.kinds))
    if set(kinds) & set(wanted):
        return
    if not kinds:
        raise UsageError(
            f"no attention module of {model} was recognised in the chosen stages",
            f"attnviz inspect --model {model} lists what it holds",
        )
    better = sorted({COMMAND_FOR_KIND[k] for k in kinds if k in COMMAND_FOR_KIND})
    raise UsageError(
        f"{model} holds {', '.join(kinds)} attention, which `attnviz {command}` does not draw",
        f"try: {' or '.join(f'attnviz {b} --model {model}' for b in better)}" if better else None,
    )


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


def load(
    block: str | None,
    *,
    backbone: str,
    stages: str | None,
    pretrained: bool,
    weights: Path | None,
    trust: bool,
    device: str,
    quiet: bool,
    model: str | None = None,
    timm_attn: str | None = None,
    size: int | None = None,
    kinds: tuple[str, ...] = (),
    command: str = "",
    layer: int | None = None,
    default_stages: str = "1,2,3,4",
) -> LoadedModel:
    """Build the model the options describe and say, in one line on stderr, where its weights came from.

    With `model` (--model) the model is torchvision's, timm's or a file's, with taps on its own attention modules;
    `size` is then the input side of the dummy forward that finds their stages, and the model is refused (before
    anything is printed) when its recognised attention has none of `kinds`, or no module in stage `layer`.

    `stages` None means `default_stages`; when weights place the block themselves (an attnviz weights file or the
    demo weights), stages the user names must be among theirs and only those are drawn.
    """
    from attnviz.cli.common import err
    from attnviz.pipeline import load_foreign, load_model

    explicit = stages is not None
    stages = stages if stages is not None else default_stages

    if model is not None:
        loaded = load_foreign(
            model,
            block=block,
            backbone=backbone,
            stages=parse_stages(stages),
            pretrained=pretrained,
            weights=weights,
            trust=trust,
            timm_attn=timm_attn,
            device=device,
            size=size or 224,
        )
        if kinds:
            check_model_kinds(loaded, f"{model} --timm-attn {timm_attn}" if timm_attn else model, kinds, command)
        if layer is not None and layer not in loaded.stages():
            raise UsageError(
                f"--layer {layer} is not a stage with recognised attention in {model}",
                f"stages with attention: {', '.join(map(str, loaded.stages())) or 'none'}",
            )
    elif timm_attn is not None:
        raise UsageError("--timm-attn goes with --model timm:NAME", "e.g. --model timm:resnet18 --timm-attn cbam")
    else:
        assert block is not None
        loaded = load_model(
            block,
            backbone=backbone,
            stages=parse_stages(stages),
            pretrained=pretrained,
            weights=weights,
            trust=trust,
            device=device,
        )
        _pick_stages(loaded, block, parse_stages(stages) if explicit else None, layer)
    if not quiet:
        style = "dim" if loaded.trained else "yellow"
        err.print(f"[{style}]model: {escape(loaded.source)}[/]")
    return loaded


def _pick_stages(loaded: LoadedModel, block: str, asked: tuple[int, ...] | None, layer: int | None) -> None:
    """Narrow what is drawn to the stages asked for, which must hold blocks; check `layer` (--layer) the same way."""
    have = loaded.stages()
    listed = ", ".join(map(str, have))
    if asked is not None and loaded.weights_info is not None:
        missing = [s for s in asked if s not in have]
        if missing:
            raise UsageError(
                f"--stages {missing[0]}: the weights {loaded.weights_info.path.name} put {block} in stages {listed}"
                " only",
                f"pick from {listed}, or leave --stages out to draw them all",
            )
        loaded.shown = tuple(asked)
    if layer is not None and layer not in loaded.stages():
        raise UsageError(
            f"--layer {layer} is not a stage with {block} blocks",
            f"stages with blocks{' picked by --stages' if loaded.shown else ''}: {', '.join(map(str, loaded.stages()))}"
            + ("" if loaded.weights_info else " (set them with --stages)"),
        )


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
