"""`attnviz inspect BLOCK`: where the blocks sit in the backbone, what they emit, and the map shapes at --size."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from attnviz.cli import options as opt
from attnviz.cli.common import guarded, out


@guarded
def inspect(
    block: opt.BlockArg,
    backbone: opt.BackboneOpt = "resnet18",
    stages: opt.StagesOpt = "1,2,3,4",
    size: opt.SizeOpt = 224,
    height: Annotated[
        int | None, typer.Option("--height", help="Input height, for non-square inputs (default: --size).")
    ] = None,
    weights: opt.WeightsOpt = None,
    trust: opt.TrustOpt = False,
    device: opt.DeviceOpt = "auto",
    as_json: opt.JsonOpt = False,
) -> None:
    """List every inserted block: layer path, stage, kinds, map shapes at the input size, parameters."""
    import torch

    from attnviz.capture import capture

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
    )
    model = loaded.model
    dummy = torch.zeros(1, 3, height or size, size, device=loaded.device)
    with torch.inference_mode(), capture(model) as rec:
        model(dummy)
    rows = []
    by_layer = rec.by_layer()
    for path, stage in model.attnviz_blocks.items():
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
