"""The environment variables attnviz reads, parsed in one place and one way.

    ATTNVIZ_DEBUG        a flag: an unexpected error shows its traceback instead of one line
    ATTNVIZ_MAX_PIXELS   a positive whole number: the largest photo read (the decompression-bomb guard)

A flag is off when it is unset, empty, or one of 0 / false / no / off (any case, spaces ignored), and on otherwise,
so `ATTNVIZ_DEBUG=0` turns debugging off as it reads.
"""

from __future__ import annotations

import os

from attnviz.errors import UsageError

DEBUG = "ATTNVIZ_DEBUG"
MAX_PIXELS = "ATTNVIZ_MAX_PIXELS"

_OFF = frozenset({"", "0", "false", "no", "off"})


def flag(name: str) -> bool:
    """Whether the flag `name` is on (see the module docstring for what counts as off)."""
    return os.environ.get(name, "").strip().lower() not in _OFF


def positive_whole_number(name: str, example: str, error: type[UsageError] = UsageError) -> int | None:
    """The value of `name` as a positive whole number; None when it is unset.

    Raises:
        UsageError: (`error`, a subclass) it is set to anything else; the message names the variable and gives
            `example`.
    """
    raw = os.environ.get(name)
    if raw is None:
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        value = 0
    if value <= 0:
        raise error(f"{name} must be a positive whole number, got {raw!r}", f"e.g. {name}={example}")
    return value
