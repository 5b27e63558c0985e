"""Ending on Ctrl-C, SIGTERM or SIGHUP: one line, exit code 128 + the signal's number, and no file half-written.

Python turns SIGINT into KeyboardInterrupt; `install` makes SIGTERM (`kill PID`, a job scheduler's stop) and SIGHUP
(a closed terminal) raise `Terminated`, a KeyboardInterrupt, so they unwind the same way: every atomic write on the
way removes its temporary file and a trainer keeps its last checkpoint. A signal that is ignored when attnviz
starts (SIGHUP under `nohup`) stays ignored, and so does the same signal again once the way out has begun. This
module imports nothing but the standard library, so the entry point can install it before anything else.
"""

from __future__ import annotations

import signal
import sys
from contextlib import suppress
from types import FrameType

INTERRUPTED = 128 + signal.SIGINT
"""Exit code after Ctrl-C (130), what shells report for a process ended by SIGINT."""

HANDLED = ("SIGTERM", "SIGHUP")


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived (see the module docstring)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


def _raise_terminated(signum: int, _frame: FrameType | None) -> None:
    # The way out is under way: a repeat (`timeout` signals the process and then its group) must not cut the cleanup.
    signal.signal(signum, signal.SIG_IGN)
    raise Terminated(signum)


def install() -> None:
    """Make SIGTERM and SIGHUP raise `Terminated` where they still have their default action (a no-op outside the
    main thread, where Python cannot set handlers)."""
    for name in HANDLED:
        number = getattr(signal, name, None)  # Windows has no SIGHUP
        if number is None:
            continue
        with suppress(ValueError, OSError):  # not the main thread
            if signal.getsignal(number) is signal.SIG_DFL:
                signal.signal(number, _raise_terminated)


def exit_code(interrupt: KeyboardInterrupt) -> int:
    """128 + the number of the signal that ended the run: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP."""
    return 128 + interrupt.signum if isinstance(interrupt, Terminated) else INTERRUPTED


def message(interrupt: KeyboardInterrupt) -> str:
    """The one line said on the way out: "interrupted" (Ctrl-C) or "terminated by SIGTERM"."""
    return f"terminated by {interrupt}" if isinstance(interrupt, Terminated) else "interrupted"


def clean_exit(interrupt: KeyboardInterrupt) -> int:
    """Remove the temporary files a signal cut short, say `message` on stderr, and return `exit_code`.

    Only the standard library and attnviz.io.atomic are imported, so this works while the CLI is still starting.
    """
    from attnviz.io.atomic import remove_temporaries

    remove_temporaries()
    with suppress(OSError, ValueError):  # SIGHUP: the terminal may be gone
        sys.stderr.write(message(interrupt) + "\n")
        sys.stderr.flush()
    return exit_code(interrupt)
