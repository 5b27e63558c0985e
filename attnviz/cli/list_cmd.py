"""`attnviz list`: every registered block with its family, the kinds it emits, and its paper."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from attnviz.blocks.catalog import CATALOG
from attnviz.cli.common import guarded, out

NO_ATTENTION = "none (see below)"
NOTES = (
    "fpn carries no attention of its own: it is the feature pyramid the detector's ASFF modules fuse, drawn as part "
    "of the detector's levels by attnviz asff-weights. additive and temporal_gate are drawn by attnviz sequence."
)
"""Said under the table: where the blocks that no backbone command draws are drawn."""


@guarded
def list_blocks(
    as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON on stdout.")] = False,
) -> None:
    """List every attention block attnviz knows."""
    if as_json:
        rows = [
            {
                "name": i.name,
                "family": i.family,
                "kinds": list(i.kinds),
                "paper": i.paper,
                "fits_backbone": i.fits_backbone,
                "inputs": i.inputs,
            }
            for i in CATALOG.values()
        ]
        out.print_json(json.dumps(rows))
        return
    table = Table(title=f"attnviz blocks ({len(CATALOG)})", show_lines=False)
    table.add_column("name", style="bold cyan", no_wrap=True)
    table.add_column("family")
    table.add_column("kinds", no_wrap=True)
    table.add_column("backbone", justify="center")
    table.add_column("paper", overflow="fold")
    for info in CATALOG.values():
        kinds = ", ".join(dict.fromkeys(info.kinds)) if info.kinds else NO_ATTENTION
        table.add_row(info.name, info.family, kinds, "yes" if info.fits_backbone else "no", info.short_cite)
    out.print(table)
    out.print(f"[dim]{NOTES}[/]")
    out.print("[dim]Full citations: attnviz list --json[/]")
