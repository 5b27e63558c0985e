"""What every command shares: consoles, turning AttnvizError into one stderr line and an exit code."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeRemainingColumn

from attnviz.errors import AttnvizError, cli_spelling

if TYPE_CHECKING:
    from attnviz.loading import LoadedModel
    from attnviz.views.base import View

F = TypeVar("F", bound=Callable[..., Any])

INTERRUPTED = 130
"""Exit code after Ctrl-C: 128 + SIGINT, what shells report for a process ended by it."""

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(error: AttnvizError) -> typer.Exit:
    """Print `error` as one line on stderr and return the typer.Exit carrying its exit code."""
    hint = f" [dim]({escape(error.hint)})[/]" if error.hint else ""
    err.print(f"[bold red]error:[/] {escape(error.message)}{hint}")
    return typer.Exit(error.exit_code)


def guarded(command: F) -> F:
    """Wrap a command so AttnvizError becomes a one-line message and its exit code, never a traceback.

    Unexpected exceptions also end in one line (exit 1) unless ATTNVIZ_DEBUG is set, which re-raises them.
    Ctrl-C ends in one "interrupted" line and exit code 130, the shell's convention for SIGINT.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with cli_spelling():
                return command(*args, **kwargs)
        except AttnvizError as exc:
            raise fail(exc) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/]")
            raise typer.Exit(INTERRUPTED) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:
            if os.environ.get("ATTNVIZ_DEBUG"):
                raise
            raise fail(
                AttnvizError(
                    f"internal error: {type(exc).__name__}: {exc}".splitlines()[0],
                    "this is a bug in attnviz; rerun with ATTNVIZ_DEBUG=1 for the traceback and report it",
                )
            ) from None

    return wrapper  # type: ignore[return-value]


def progress(enabled: bool) -> Progress:
    """A Rich progress bar on stderr; when not enabled it draws nothing but keeps the same interface."""
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=not enabled,
    )


def progress_columns(enabled: bool, *, accuracy: bool = True) -> Progress:
    """A training progress bar: images done, loss, accuracy (unless `accuracy` is False) and images/s."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"),
        *([TextColumn("acc {task.fields[accuracy]:.3f}")] if accuracy else []),
        TextColumn("{task.fields[rate]:.0f} img/s"),
        TimeRemainingColumn(),
        console=err,
        disable=not enabled,
    )


def report(written: list[Path], result: dict[str, Any], *, as_json: bool) -> None:
    """Say what a drawing command wrote: `result` plus the files as JSON on stdout, or one "wrote" line per file."""
    if as_json:
        out.print_json(json.dumps({**result, "files": [str(p) for p in written]}))
        return
    for path in written:
        err.print(f"wrote {path}", markup=False)


def training_interrupted(out_file: Path) -> typer.Exit:
    """After Ctrl-C in fit or fit-det: say where the last finished epoch is and return the exit (code 130)."""
    checkpoint = escape(str(Path(out_file).with_suffix(".ckpt")))
    err.print(f"[yellow]interrupted; the last finished epoch is saved in {checkpoint} (continue with --resume)[/]")
    return typer.Exit(INTERRUPTED)


def write_view(view: View, loaded: LoadedModel, out_dir: Path, fmt: str, *, save_raw: bool, as_json: bool) -> None:
    """Write a view's pictures (and with `save_raw` its captured tensors) to `out_dir` and report them."""
    from attnviz.io.raw import save_recording

    written = view.save(out_dir, fmt)
    if save_raw:
        written += save_recording(view.analysis, out_dir / f"{view.stem}_{view.name}_raw")
    report(written, {"model": loaded.config.to_dict(), "weights": loaded.source, **view.summary}, as_json=as_json)
