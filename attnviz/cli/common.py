"""What every command shares: consoles, turning AttnvizError into one stderr line and an exit code, progress (a
live bar on a terminal, plain lines in a log), the training loop's reporting, and layer paths in tables."""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

import typer
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.markup import escape
from rich.measure import Measurement
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeRemainingColumn
from rich.text import Text

from attnviz import env
from attnviz.cli import signals
from attnviz.errors import AttnvizError, cli_spelling
from attnviz.io.atomic import remove_temporaries

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

    Unexpected exceptions also end in one line (exit 1) unless the flag ATTNVIZ_DEBUG is on, which re-raises them.
    Ctrl-C ends in one "interrupted" line and exit code 130, the shell's convention for SIGINT; SIGTERM and SIGHUP
    (see `attnviz.cli.signals`) in "terminated by SIGTERM" and 128 + the signal's number.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with cli_spelling():
                return command(*args, **kwargs)
        except AttnvizError as exc:
            raise fail(exc) from None
        except KeyboardInterrupt as interrupt:
            raise typer.Exit(signals.clean_exit(interrupt)) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:
            if env.flag(env.DEBUG):
                raise
            raise fail(
                AttnvizError(
                    f"internal error: {type(exc).__name__}: {exc}".splitlines()[0],
                    "this is a bug in attnviz; rerun with ATTNVIZ_DEBUG=1 for the traceback and report it",
                )
            ) from None

    return wrapper  # type: ignore[return-value]


LINE_STEPS = 10
"""Off a terminal, a progress line each time another 1/LINE_STEPS of the work is done..."""
LINE_SECONDS = 30.0
"""...and at least this often while the work advances."""


class Meter:
    """The progress of one piece of long work (an epoch, the scenes of an eval, the photos of a folder).

    On a terminal it drives a live Rich bar; elsewhere (a log file, a pipe, CI), where a live bar draws nothing, it
    prints plain lines such as "epoch 1/3  2560/8000 images  loss 1.234  acc 0.456  61 img/s  ETA 1:25"; quiet, it
    only counts. Values such as the loss appear once there is one, never as a placeholder NaN.
    """

    def __init__(self, label: str, total: int | None, *, unit: str, bar: Progress | None, lines: bool) -> None:
        self.unit = unit
        self._bar = bar
        self._lines = lines
        self._task: TaskID | None = None
        self.restart(label, total)
        if lines:  # a log shows at once that the work has started
            err.print(self.line(), markup=False)

    def restart(self, label: str, total: int | None) -> None:
        """Start again from 0 (the next epoch) under `label`, with `total` units to do (None: not known)."""
        self.label, self.total, self.done = label, total, 0
        self.stats: dict[str, float] = {}
        self.rate: float | None = None
        self._started = self._last_line = time.monotonic()
        self._steps_shown = 0
        if self._bar is None:
            return
        fields = {"count": self._count(), "stats": ""}
        if self._task is None:
            self._task = self._bar.add_task(label, total=total, **fields)
        else:
            self._bar.reset(self._task, total=total, description=label, **fields)

    def advance(self, count: int = 1, *, rate: float | None = None, **stats: float) -> None:
        """Count `count` more units done.

        Args:
            count: Units (images, scenes) just done.
            rate: Units per second as the caller measures it (default: since the start of this piece of work).
            **stats: Running values to show, by the name shown (loss=0.8, acc=0.6).
        """
        self.done += count
        self.stats.update(stats)
        now = time.monotonic()
        self.rate = rate if rate is not None else self.done / max(now - self._started, 1e-9)
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, advance=count, count=self._count(), stats=self._values())
        elif self._lines and self._line_due(now):
            self._last_line = now
            err.print(self.line(), markup=False)

    def say(self, text: str) -> None:
        """Print `text` as a line of its own (above a live bar), e.g. the summary of a finished epoch."""
        err.print(text, markup=False)

    def phase(self, text: str) -> None:
        """Say that the counted work is done and `text`, work without a count, runs now (a spinner on a terminal)."""
        if self._bar is not None:
            self._bar.add_task(text, total=None, count="", stats="")
        elif self._lines:
            err.print(f"{self.label}  {text}", markup=False)

    def line(self) -> str:
        """The progress as one plain line: label, count, values, rate and (while work is left) the time to go."""
        parts = [self.label, self._count(), self._values()]
        if self.total and self.rate and self.done < self.total:
            parts.append(f"ETA {_clock((self.total - self.done) / self.rate)}")
        return "  ".join(part for part in parts if part)

    def _count(self) -> str:
        return f"{self.done}/{self.total} {self.unit}" if self.total else f"{self.done} {self.unit}"

    def _values(self) -> str:
        values = [f"{name} {value:.3f}" for name, value in self.stats.items()]
        if self.rate is not None:
            values.append(f"{self.rate:.{0 if self.rate >= 10 else 1}f} img/s")
        return "  ".join(values)

    def _line_due(self, now: float) -> bool:
        """Whether a plain line is due: another step of the work done, or LINE_SECONDS since the last line."""
        if self.total:
            steps = min(self.done, self.total) * LINE_STEPS // self.total
            if steps > self._steps_shown:
                self._steps_shown = steps
                return True
        return now - self._last_line >= LINE_SECONDS


def _clock(seconds: float) -> str:
    """Seconds as m:ss, or h:mm:ss from an hour on."""
    minutes, secs = divmod(max(0, round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _live_display() -> bool:
    """Whether stderr is a terminal that can redraw a live bar (not a file, a pipe, or TERM=dumb)."""
    return err.is_terminal and not err.is_dumb_terminal


@contextmanager
def progress(label: str, total: int | None, *, unit: str = "images", enabled: bool = True) -> Iterator[Meter]:
    """A `Meter` for work of `total` units on stderr: a live bar on a terminal, plain lines off one, and nothing but
    the `Meter.say` lines when not `enabled` (--json)."""
    if not (enabled and _live_display()):
        yield Meter(label, total, unit=unit, bar=None, lines=enabled)
        return
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[count]}"),
        TextColumn("{task.fields[stats]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err) as bar:
        yield Meter(label, total, unit=unit, bar=bar, lines=False)


class LayerPath:
    """A layer path (`layer3.0.attn.attention:matrix@centre`) as a table cell that wraps only after a dot or a colon:
    a narrow column folds it between names, never inside one (unless one name alone is wider than the column)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.parts = re.findall(r"[^.:]*[.:]|[^.:]+$", path) or [path]

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(max(cell_len(part) for part in self.parts), cell_len(self.path))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        lines = [""]
        for part in self.parts:
            if lines[-1] and cell_len(lines[-1] + part) > options.max_width:
                lines.append(part)
            else:
                lines[-1] += part
        yield Text("\n".join(lines), overflow="fold")


def report(written: list[Path], result: dict[str, Any], *, as_json: bool) -> None:
    """Say what a drawing command wrote: `result` plus the files as JSON on stdout, or one "wrote" line per file."""
    if as_json:
        out.print_json(json.dumps({**result, "files": [str(p) for p in written]}))
        return
    for path in written:
        err.print(f"wrote {path}", markup=False)


class FinishedEpoch(Protocol):
    """What `run_training` reads from a trainer's finished epoch."""

    epoch: int


E = TypeVar("E", bound=FinishedEpoch)
T = TypeVar("T")


def run_training(
    train: Callable[[Callable[[dict[str, Any]], None], Callable[[E], None]], T],
    *,
    epochs: int,
    images_per_epoch: int | None,
    checkpoint: Path,
    resumed: bool,
    shown: dict[str, str],
    summary: Callable[[E], str],
    quiet: bool,
) -> T:
    """Run `train(on_batch, on_epoch)` (fit, fit-det) with a progress meter per epoch and a summary line per finished
    epoch; Ctrl-C ends in `training_interrupted`.

    Args:
        train: Starts the training with the two callbacks and returns its result.
        epochs: Epochs of the whole run ("epoch 3/10").
        images_per_epoch: Training images per epoch (None: not known).
        checkpoint: The run's resumable checkpoint.
        resumed: Whether the run continues from `checkpoint` (--resume).
        shown: The batch statistics to show: the trainer's name -> the name shown ({"accuracy": "acc"}).
        summary: The line that sums up a finished epoch.
        quiet: No progress (--json); the summary lines still go to stderr.
    """
    finished: list[int] = []
    with progress("resuming" if resumed else f"epoch 1/{epochs}", images_per_epoch, enabled=not quiet) as meter:

        def on_batch(stats: dict[str, Any]) -> None:
            label = f"epoch {int(stats.get('epoch', 0)) + 1}/{epochs}"
            if label != meter.label:
                meter.restart(label, images_per_epoch)
            values = {name: float(stats[key]) for key, name in shown.items()}
            meter.advance(int(stats["batch_size"]), rate=float(stats["images_per_second"]), **values)

        def on_epoch(done: E) -> None:
            finished.append(done.epoch + 1)
            meter.say(summary(done))

        try:
            return train(on_batch, on_epoch)
        except KeyboardInterrupt as interrupt:  # Ctrl-C, SIGTERM or SIGHUP: say what is saved, exit 128 + signal
            training_interrupted(checkpoint, finished[-1] if finished else None, resumed=resumed)
            remove_temporaries()
            raise typer.Exit(signals.exit_code(interrupt)) from None


def training_interrupted(checkpoint: Path, finished: int | None, *, resumed: bool) -> typer.Exit:
    """After Ctrl-C in fit or fit-det: say what is saved, naming the checkpoint only when it exists and holds epochs
    of this run or of the run it resumed, and return the exit (code 130).

    Args:
        checkpoint: The run's resumable checkpoint (`<out>.ckpt`).
        finished: The last epoch (counted from 1) this run finished and checkpointed; None when none did.
        resumed: Whether the run started from `checkpoint` (--resume), which then still holds the earlier epochs.
    """
    path = escape(str(checkpoint))
    if checkpoint.is_file() and finished is not None:
        err.print(f"[yellow]interrupted; epoch {finished} is saved in {path} (continue with --resume)[/]")
    elif checkpoint.is_file() and resumed:
        err.print(f"[yellow]interrupted before an epoch finished; {path} is as it was (continue with --resume)[/]")
    else:
        err.print("[yellow]interrupted before the first epoch finished; nothing was saved[/]")
    return typer.Exit(INTERRUPTED)
