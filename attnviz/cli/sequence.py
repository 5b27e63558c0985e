"""`attnviz sequence BLOCK [INPUT]`: additive attention's alignment over a digit line, or the temporal gates over
series; and `attnviz eval additive|temporal_gate`, which scores them against the answers their tasks know."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from attnviz.cli import options as opt
from attnviz.cli.common import err, guarded, out, report
from attnviz.errors import UsageError
from attnviz.render.save import FORMATS
from attnviz.sequence import SEQUENCE_BLOCKS


@guarded
def sequence(
    block: Annotated[str, typer.Argument(help=f"Sequence block: {', '.join(SEQUENCE_BLOCKS)}.", show_default=False)],
    input_: Annotated[
        str | None,
        typer.Argument(
            metavar="[INPUT]",
            help="additive: a line of 3-12 digits to reverse (default 4096153827). temporal_gate: a CSV file, one row "
            "per time step and one column per node, an optional header of names (default: a multi-sine example "
            "with known periods).",
            show_default=False,
        ),
    ] = None,
    weights: opt.WeightsOpt = None,
    trust: opt.TrustOpt = False,
    out_dir: opt.OutOpt = Path("attnviz-out"),
    fmt: Annotated[str, typer.Option("--format", "-f", help=f"Picture format: {', '.join(FORMATS)}.")] = "png",
    as_json: opt.JsonOpt = False,
    save_raw: opt.SaveRawOpt = False,
) -> None:
    """Draw the sequence blocks in their shipped models: additive attention as a decoder x encoder alignment
    heatmap, the temporal gate as a nodes x time heatmap under its input series."""
    from attnviz.sequence.api import check_block
    from attnviz.sequence.api import sequence as draw

    check_block(block)
    if fmt not in FORMATS:
        raise UsageError(f"unknown --format {fmt!r}", f"choose one of: {', '.join(FORMATS)}")
    opt.check_out_dir(out_dir)
    view = draw(block, input_, weights=weights, trust=trust)
    if not as_json:
        err.print(f"[dim]model: {escape(view.summary['weights'])}[/]")
    written = view.save(out_dir, fmt)
    if save_raw:
        from attnviz.io.raw import save_raw as write_raw

        summary = {k: v for k, v in view.summary.items() if k != "forecast"}
        written += write_raw(view.analysis.arrays, summary, out_dir / f"{view.stem}_{view.name}_raw")
    report(written, view.summary, as_json=as_json)


def evaluate(block: str, *, weights: Path | None, n: int, trust: bool, as_json: bool) -> None:
    """`attnviz eval additive|temporal_gate`: the scores as tables, or the JSON of `attnviz.sequence.evaluate`."""
    from attnviz.sequence.evaluate import evaluate as score

    if not as_json:
        err.print(f"[dim]scoring {block} on {n} fresh {'strings' if block == 'additive' else 'windows'}...[/]")
    result = score(block, weights=weights, n=n, trust=trust)
    if as_json:
        out.print_json(json.dumps(result))
    elif block == "additive":
        _print_alignment(result)
    else:
        _print_gates(result)


def _print_alignment(result: dict[str, Any]) -> None:
    low, high = result["lengths"]
    out.print(
        f"[bold]additive[/]: the digit reverser ({escape(result['source'])}) on {result['strings']} fresh strings of "
        f"{low}-{high} digits: {result['sequence_accuracy']:.3f} reversed exactly, {result['token_accuracy']:.3f} of "
        "tokens right"
    )
    table = Table(title="Does each output step attend to the digit it copies?")
    for column in ("attention", "alignment accuracy", "mean weight on the right digit"):
        table.add_column(column, justify="left" if column == "attention" else "right")
    for name, key in (("additive (this model)", "alignment"), ("uniform (1/S)", "uniform")):
        table.add_row(name, f"{result[key]['accuracy']:.3f}", f"{result[key]['mass']:.3f}")
    out.print(table)
    err.print(
        f"[dim]alignment accuracy: share of the {result['alignment']['rows']} output steps whose attention row peaks "
        "on the source position it copies (S - 1 - i); a uniform row picks it with chance 1/S[/]"
    )


def _print_gates(result: dict[str, Any]) -> None:
    forecast = result["forecast"]
    out.print(
        f"[bold]temporal_gate[/]: the forecaster ({escape(result['source'])}) on {result['windows']} fresh windows of "
        f"{result['nodes']} series: forecast MSE {forecast['mse']:.3f} (predicting the mean: "
        f"{forecast['mse_of_predicting_the_mean']:.3f})"
    )
    table = Table(title=f"Does the gate repeat with each series' known period? (last {result['analysed_steps']} steps)")
    for column in ("signal", "period match", "power at the period"):
        table.add_column(column, justify="left" if column == "signal" else "right")
    for layer, scores in result["gates"].items():
        untrained = result["untrained"][layer]
        table.add_row(f"{layer} gate (dilation {scores['dilation']})", _pair(scores, untrained, "period_match"),
                      _pair(scores, untrained, "power_share"))  # fmt: skip
    for name, key in (("input series", "input"), ("flat spectrum", "uniform")):
        table.add_row(name, f"{result[key]['period_match']:.3f}", f"{result[key]['power_share']:.3f}")
    out.print(table)
    err.print(
        "[dim]period match: share of series whose gate (mean over channels) has its strongest period at the series' "
        "known main period; power at the period: share of the gate's spectral power there; in brackets the same "
        "layer of an untrained forecaster[/]"
    )


def _pair(scores: dict[str, float], untrained: dict[str, float], key: str) -> str:
    return f"{scores[key]:.3f} ({untrained[key]:.3f})"
