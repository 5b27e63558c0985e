"""The Typer application: global options and one command per module.

Nothing here imports torch; commands import what they need when they run.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.markup import escape
from typer.core import TyperGroup

from attnviz import __version__
from attnviz.cli import (
    asff_weights,
    channels,
    coords,
    eval_cmd,
    eval_det,
    fit,
    fit_det,
    inspect_cmd,
    list_cmd,
    matrix,
    report,
    sequence,
    show,
    signals,
)


class OneLineErrors(TyperGroup):
    """Report click's usage errors (bad option values, missing arguments) as one line, like attnviz's own."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        from attnviz.cli.common import err

        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
        except typer.Abort:
            err.print("aborted")
            if standalone_mode:
                sys.exit(1)
            raise
        except Exception as exc:
            # click's ClickException family (typer may vendor click, so it is matched by shape, not by class)
            if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")) or not standalone_mode:
                raise
            if type(exc).__name__ == "NoArgsIsHelpError":  # bare `attnviz`: the help, as with --help, and exit 0
                _echo_help(exc.format_message())
                sys.exit(0)
            ctx = getattr(exc, "ctx", None)
            command = ctx.command_path if ctx is not None else "attnviz"
            err.print(f"[bold red]error:[/] {escape(exc.format_message())} [dim](see {command} --help)[/]")
            sys.exit(exc.exit_code)
        if standalone_mode:
            sys.exit(result if isinstance(result, int) else 0)
        return result

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        with _interrupts_end_cleanly():  # Ctrl-C while the arguments are read
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: Any) -> Any:
        with _interrupts_end_cleanly():  # outside a command's `guarded`: its options' callbacks, typer's own code
            return super().invoke(ctx)


@contextmanager
def _interrupts_end_cleanly() -> Iterator[None]:
    """Ctrl-C, SIGTERM or SIGHUP in here end in one line and exit code 128 + signal (typer would exit 130 in
    silence, whatever the signal)."""
    try:
        yield
    except KeyboardInterrupt as interrupt:
        raise typer.Exit(signals.clean_exit(interrupt)) from None


def _echo_help(help_text: str) -> None:
    """Print the help of bare `attnviz`: with Rich, click printed it already while building the exception and its
    text is empty; without Rich, the text is the help."""
    if help_text:
        typer.echo(help_text)


app = typer.Typer(
    name="attnviz",
    cls=OneLineErrors,
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
app.command("show")(show.show)
app.command("channels")(channels.channels)
app.command("coords")(coords.coords)
app.command("matrix")(matrix.matrix)
app.command("inspect")(inspect_cmd.inspect)
app.command("fit")(fit.fit)
app.command("eval")(eval_cmd.evaluate)
app.command("fit-det")(fit_det.fit_det)
app.command("eval-det")(eval_det.eval_det)
app.command("asff-weights")(asff_weights.asff_weights)
app.command("sequence")(sequence.sequence)
app.command("report")(report.report)


def main() -> None:
    """Entry point of the `attnviz` command (`attnviz.__main__.main` guards the imports before this)."""
    signals.install()
    try:
        app()
    except KeyboardInterrupt as interrupt:  # between the handlers' installation and the app's own guards
        sys.exit(signals.clean_exit(interrupt))
