"""`attnviz inspect BLOCK`: where the blocks sit in the backbone, what they emit, and the map shapes at --size."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from attnviz.cli import options as opt
from attnviz.cli.common import guarded, out

if TYPE_CHECKING:
    from attnviz.capture import Recording
    from attnviz.pipeline import LoadedModel


@guarded
def inspect(
    block: opt.OptionalBlockArg = None,
    model_spec: opt.ModelOpt = None,
    timm_attn: opt.TimmAttnOpt = None,
    backbone: opt.BackboneOpt = "resnet18",
    stages: opt.DrawStagesOpt = None,
    size: opt.SizeOpt = 224,
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
    import torch

    from attnviz.capture import capture

    block, _ = opt.split_positionals(block, [], model_spec, "inspect")
    opt.check_common(size=size, preprocess="resize", fmt="png", alpha=0.5, device=device)
    opt.check_common(size=height or size, preprocess="resize", fmt="png", alpha=0.5, device=device)
    loaded = opt.load(
        block,
        backbone=backbone,
        stages=stages,
        pretrained=False,
        weights=weights,
        trust=trust,
        device=device,
        quiet=True,
        model=model_spec,
        timm_attn=timm_attn,
        size=size,
    )
    model = loaded.model
    dummy = torch.zeros(1, 3, height or size, size, device=loaded.device)
    with torch.inference_mode(), capture(model) as rec:
        model(dummy)
    if loaded.foreign is not None and model_spec is not None:
        _inspect_foreign(loaded, model_spec, rec, (height or size, size), as_json=as_json)
        return
    rows = []
    by_layer = rec.by_layer()
    for path, stage in model.attnviz_blocks.items():
        if stage not in loaded.stages():  # --stages narrowed what is listed
            continue
        maps = by_layer.get(path, [])
        rows.append(
            {
                "layer": path,
                "stage": stage,
                "block": block,
                "maps": [
                    {"label": m.label, "kind": m.kind, "shape": list(m.shape[1:]), "axes": list(m.axes[1:])}
                    for m in maps
                ],
                "parameters": sum(p.numel() for p in model.get_submodule(path).parameters()),
            }
        )
    total = sum(p.numel() for p in model.parameters())
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "model": loaded.config.to_dict(),
                    "input": [height or size, size],
                    "blocks": rows,
                    "total_parameters": total,
                }
            )
        )
        return
    table = Table(title=f"{backbone} + {block} at {size}x{height or size} ({len(rows)} blocks)")
    for column in ("layer", "stage", "kinds", "map shapes", "params"):
        table.add_column(column, justify="right" if column in ("stage", "params") else "left")
    for row in rows:
        kinds = ", ".join(f"{m['kind']}:{m['label']}" if m["label"] != m["kind"] else m["kind"] for m in row["maps"])
        shapes = ", ".join("x".join(map(str, m["shape"])) for m in row["maps"])
        table.add_row(row["layer"], str(row["stage"]), kinds, shapes, f"{row['parameters']:,}")
    out.print(table)
    block_params = sum(r["parameters"] for r in rows)
    out.print(f"attention parameters: {block_params:,} of {total:,} ({100 * block_params / total:.1f}%)")


def _inspect_foreign(
    loaded: LoadedModel, spec: str, rec: Recording, input_hw: tuple[int, int], *, as_json: bool
) -> None:
    """The recognised attention modules of a --model (every one, whatever --stages), and those not recognised."""
    report = loaded.foreign
    assert report is not None
    by_layer = rec.by_layer()
    rows = []
    for found in report.recognised:
        maps = by_layer.get(found.path, [])
        first_calls = [m for m in maps if m.call == 0]
        rows.append(
            {
                **found.summary(),
                "calls": max((m.call + 1 for m in maps), default=0),
                "maps": [
                    {"label": m.label, "kind": m.kind, "shape": list(m.shape[1:]), "axes": list(m.axes[1:])}
                    for m in first_calls
                ],
                "parameters": sum(p.numel() for p in loaded.model.get_submodule(found.path).parameters()),
            }
        )
    missing = [{"layer": path, "type": name} for path, name in report.unrecognised]
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "model": spec,
                    "weights": loaded.source,
                    "input": list(input_hw),
                    "recognised": rows,
                    "not_recognised": missing,
                }
            )
        )
        return
    h, w = input_hw
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
        table.add_row(
            row["layer"], row["type"] + how, stage, kinds, shapes, str(row["calls"]), f"{row['parameters']:,}"
        )
    out.print(table)
    for item in missing:
        out.print(f"not recognised: {item['layer']} ({item['type']}): its attention is not captured", markup=False)
    if not rows and not missing:
        out.print("no attention modules found", markup=False)
