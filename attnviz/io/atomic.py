"""Atomic writes: every file attnviz writes goes to a temporary file in the target's folder first and is then
renamed onto the target (`os.replace`, atomic on POSIX and Windows), so a crash or an error never leaves a half-written
file behind and an existing file is only ever replaced by a complete one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import IO

from attnviz.errors import AttnvizError, UsageError


@lru_cache(maxsize=1)
def _file_mode() -> int:
    """Permissions a normally created file gets (0o666 minus the umask); temporary files start at 0o600."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def _ensure_directory(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(
            f"cannot create output directory {directory}", error.strerror or type(error).__name__
        ) from error


def atomic_write(path: Path, write_fn: Callable[[IO[bytes]], None]) -> Path:
    """Write a file atomically: `write_fn` fills a temporary file next to `path`, which is then renamed onto it.

    Args:
        path: The target file. Its directory is created if missing.
        write_fn: Called with the open binary temporary file; it must only write to it.

    Returns:
        `path`.

    Raises:
        UsageError: the directory cannot be created or written to.
        AttnvizError: writing failed with an OSError (disk full, ...); nothing is left behind.
        Exception: whatever else `write_fn` raises; the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    directory = path.parent
    _ensure_directory(directory)
    try:
        handle = tempfile.NamedTemporaryFile(  # closed below: it must outlive this block
            dir=directory, prefix=f".{path.name}.", suffix=".tmp", delete=False
        )
    except OSError as error:
        raise UsageError(
            f"cannot write to output directory {directory}", error.strerror or type(error).__name__
        ) from error
    temp = Path(handle.name)
    try:
        with handle:
            write_fn(handle)
        os.chmod(temp, _file_mode())
        os.replace(temp, path)
    except BaseException as error:  # KeyboardInterrupt too: no half-written file may stay behind
        temp.unlink(missing_ok=True)
        if isinstance(error, OSError):  # disk full, folder removed meanwhile...: not a bug, say what failed
            raise AttnvizError(f"cannot write {path}", error.strerror or str(error)) from error
        raise
    return path
