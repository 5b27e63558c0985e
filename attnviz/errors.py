"""Errors attnviz raises on purpose.

Every error carries a one-line message saying what was wrong and, where there is one, a hint saying what to do.
Only the CLI turns them into exit codes: `UsageError` (the user asked for something that cannot be) exits 2,
every other `AttnvizError` (the request was fine but something failed while carrying it out) exits 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_SPELLING: ContextVar[str] = ContextVar("attnviz_spelling", default="python")


def option(name: str) -> str:
    """How the caller spells the option `name` (a Python keyword such as "top_k") in a message: "top_k=" from
    Python, "--top-k" while a CLI command runs (see `cli_spelling`)."""
    return f"--{name.replace('_', '-')}" if _SPELLING.get() == "cli" else f"{name}="


def invocation(name: str, *args: str, **options: str) -> str:
    """How the caller runs the command `name` with these arguments: "attnviz channels --model X" on the command
    line, "attnviz.channels(model='X')" from Python."""
    if _SPELLING.get() == "cli":
        flags = [f"--{key.replace('_', '-')} {value}" for key, value in options.items()]
        return " ".join(["attnviz", name, *args, *flags])
    params = [repr(a) for a in args] + [f"{key}={value!r}" for key, value in options.items()]
    return f"attnviz.{name.replace('-', '_')}({', '.join(params)})"


@contextmanager
def cli_spelling() -> Iterator[None]:
    """Name options as command-line flags in the messages raised inside this block."""
    token = _SPELLING.set("cli")
    try:
        yield
    finally:
        _SPELLING.reset(token)


class AttnvizError(Exception):
    """Base of every error attnviz raises on purpose.

    Args:
        message: What was wrong, in one line.
        hint: What the user can do about it, in one line (optional).
    """

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class UsageError(AttnvizError):
    """The request itself cannot be carried out: unknown name, bad option value, missing file."""

    exit_code = 2


class UnknownNameError(UsageError):
    """A name that is not in a registry; the message lists the valid names."""

    def __init__(self, what: str, name: str, valid: Iterable[str]) -> None:
        names = ", ".join(sorted(valid))
        super().__init__(f"unknown {what} {name!r}", f"choose one of: {names}")
        self.name = name
        self.valid = tuple(sorted(valid))


class BlockConfigError(UsageError):
    """A block was asked for with arguments it cannot work with."""


class ImageError(UsageError):
    """An input image is missing, unreadable, or unusable."""


class CheckpointError(AttnvizError):
    """A weights file cannot be read, or does not fit the model it is loaded into."""


class UntrustedCheckpointError(UsageError):
    """A checkpoint would run code when loaded and the user did not pass --trust."""


class CaptureError(AttnvizError):
    """Capturing attention failed, or would exceed a limit the user set."""
