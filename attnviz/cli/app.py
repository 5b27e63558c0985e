"""The Typer application: global options and one command per module.

Nothing here imports torch; commands import what they need when they run.
"""

from __future__ import annotations

from typing import Annotated

import typer

from attnviz import __version__
from attnviz.cli import list_cmd

app = typer.Typer(
    name="attnviz",
    help="Find the attention blocks in a CNN, capture what each one computes, and draw it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"attnviz {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", callback=_print_version, is_eager=True),
    ] = False,
) -> None:
    """Find the attention blocks in a CNN, capture what each one computes, and draw it."""


app.command("list")(list_cmd.list_blocks)


def main() -> None:
    """Entry point of the `attnviz` command."""
    app()
