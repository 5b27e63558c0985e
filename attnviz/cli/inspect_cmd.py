"""`attnviz inspect BLOCK`: where the blocks sit in the backbone, what they emit, and the map shapes at --size."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from attnviz.cli import options as opt
from attnviz.cli.common import LayerPath, guarded, out


@guarded
def inspect(
    block: opt.OptionalBlockArg = None,
    model_spec: opt.ModelOpt = None,
    timm_attn: opt.TimmAttnOpt = None,
    backbone: opt.BackboneOpt = "resnet18",
    stages: opt.DrawStagesOpt = None,
    size: opt.SizeOpt = None,
    height: Annotated[
        int | None, typer.Option("--height", help="Input height, for non-square inputs (default: --size).")
    ] = None,
    weights: opt.WeightsOpt = None,
    trust: opt.TrustOpt = False,
    device: opt.DeviceOpt = "auto",
    as_json: opt.JsonOpt = False,
) -> None:
    """List every inserted block: layer path, stage, kinds, map shapes at the input size, parameters.

    With --model, every attention module recognised in a torchvision or timm model or your own model file, with
    its kinds and call count, and the attention-like modules that were not recognised.
    """
    from attnviz import api

    block, _ = opt.split_positionals(block, [], model_spec, "inspect")
    opt.check_common(size=size, preprocess="resize", fmt="png", alpha=0.5, device=device)
    opt.check_common(size=height, preprocess="resize", fmt="png", alpha=0.5, device=device)
    found = api.inspect(
        block,
        model=model_spec,
        backbone=backbone,
        stages=stages,
        weights=weights,
        trust=trust,
        timm_attn=timm_attn,
        size=size,
        height=height,
        device=device,
    )
    if as_json:
        out.print_json(json.dumps(found))
    elif "recognised" in found:
        _print_foreign(found)
    else:
        _print_blocks(found)


def _print_blocks(found: dict[str, Any]) -> None:
    """The blocks of an attnviz model as a table, and their share of the parameters."""
    config, (h, w), rows = found["model"], found["input"], found["blocks"]
    table = Table(title=f"{config['backbone']} + {config['block']} at {w}x{h} ({len(rows)} blocks)")
    for column in ("layer", "stage", "kinds", "map shapes", "params"):
        table.add_column(column, justify="right" if column in ("stage", "params") else "left")
    for row in rows:
        kinds = ", ".join(f"{m['kind']}:{m['label']}" if m["label"] != m["kind"] else m["kind"] for m in row["maps"])
        shapes = ", ".join("x".join(map(str, m["shape"])) for m in row["maps"])
        table.add_row(LayerPath(row["layer"]), str(row["stage"]), kinds, shapes, f"{row['parameters']:,}")
    out.print(table)
    block_params, total = sum(r["parameters"] for r in rows), found["total_parameters"]
    out.print(f"attention parameters: {block_params:,} of {total:,} ({100 * block_params / total:.1f}%)")


def _print_foreign(found: dict[str, Any]) -> None:
    """The recognised attention modules of a --model (every one, whatever --stages), and those not recognised."""
    spec, rows, missing = found["model"], found["recognised"], found["not_recognised"]
    h, w = found["input"]
    table = Table(title=f"{spec} at {w}x{h}: {len(rows)} attention modules recognised")
    for column in ("layer", "type", "stage", "kinds", "map shapes", "calls", "params"):
        table.add_column(
            column,
            justify="right" if column in ("stage", "calls", "params") else "left",
            overflow="fold",  # a cut layer path is useless: fold it over two lines instead
            no_wrap=column in ("stage", "calls"),
        )
    for row in rows:
        kinds = ", ".join(f"{t['kind']}:{t['label']}" if t["label"] != t["kind"] else t["kind"] for t in row["taps"])
        shapes = ", ".join("x".join(map(str, m["shape"])) for m in row["maps"])
        how = {"structure": " (by structure)", "attnviz": " (attnviz block)"}.get(row["how"], "")
        stage = str(row["stage"]) if row["stage"] is not None else "-"
        layer = LayerPath(row["layer"])
        table.add_row(layer, row["type"] + how, stage, kinds, shapes, str(row["calls"]), f"{row['parameters']:,}")
    out.print(table)
    for item in missing:
        out.print(f"not recognised: {item['layer']} ({item['type']}): its attention is not captured", markup=False)
    if not rows and not missing:
        out.print("no attention modules found", markup=False)
