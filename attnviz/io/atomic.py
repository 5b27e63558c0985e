"""Atomic writes: every file attnviz writes goes to a temporary file in the target's folder first and is then
renamed onto the target (`os.replace`, atomic on POSIX and Windows), so a crash or an error never leaves a half-written
file behind and an existing file is only ever replaced by a complete one.

Files that belong together (a picture with the numbers behind it) are written as a group: inside `atomic_group()`
every `atomic_write` only fills its temporary file, and the renames happen together when the block ends; when any
write or rename fails, the group's temporary files are removed and the files it had already replaced are put back,
so the folder holds all of the group or none of it.

A process ended by a signal unwinds through the `except BaseException` below (the CLI turns SIGTERM and SIGHUP into
an exception, as Python does SIGINT); `remove_temporaries` sweeps whatever a signal caught between creating a
temporary file and entering the block that removes it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import IO

from attnviz.errors import AttnvizError, UsageError

_LIVE: set[Path] = set()
"""Temporary files (and backups of replaced files) that exist right now, for `remove_temporaries`."""


@dataclass
class _Group:
    """The files of one `atomic_group`: (temporary file, target) pairs waiting for their rename."""

    pending: list[tuple[Path, Path]] = field(default_factory=list)


_GROUP: ContextVar[_Group | None] = ContextVar("attnviz_atomic_group", default=None)


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


def _sibling(path: Path, kind: str) -> Path:
    """A free hidden name beside `path` (`.NAME.1a2b3c4d.tmp`), registered before the file exists."""
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.{kind}")


def _open_temporary(path: Path) -> tuple[Path, IO[bytes]]:
    """Create a new temporary file beside `path`, registered in `_LIVE` from before it exists."""
    while True:
        temp = _sibling(path, "tmp")
        _LIVE.add(temp)
        try:
            handle = open(temp, "xb", opener=_private)  # closed by atomic_write
        except FileExistsError:
            _LIVE.discard(temp)
            continue
        except OSError as error:
            _LIVE.discard(temp)
            raise UsageError(
                f"cannot write to output directory {path.parent}", error.strerror or type(error).__name__
            ) from error
        return temp, handle


def _private(path: str, flags: int) -> int:
    """Open a temporary file readable by its owner only, until it is complete (see `_file_mode`)."""
    return os.open(path, flags, 0o600)


def _discard(temp: Path) -> None:
    temp.unlink(missing_ok=True)
    _LIVE.discard(temp)


def _write_failed(path: Path, error: OSError) -> AttnvizError:
    """Disk full, folder removed meanwhile...: not a bug; say what failed."""
    return AttnvizError(f"cannot write {path}", error.strerror or str(error))


def atomic_write(path: Path, write_fn: Callable[[IO[bytes]], None]) -> Path:
    """Write a file atomically: `write_fn` fills a temporary file next to `path`, which is then renamed onto it.

    Inside `atomic_group()` the rename waits for the end of the group.

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
    _ensure_directory(path.parent)
    temp, handle = _open_temporary(path)
    try:
        with handle:
            write_fn(handle)
        os.chmod(temp, _file_mode())
        group = _GROUP.get()
        if group is not None:
            group.pending.append((temp, path))
            return path
        os.replace(temp, path)
        _LIVE.discard(temp)
    except BaseException as error:  # KeyboardInterrupt and signals too: no half-written file may stay behind
        _discard(temp)
        if isinstance(error, OSError):
            raise _write_failed(path, error) from error
        raise
    return path


@contextmanager
def atomic_group() -> Iterator[None]:
    """Make the `atomic_write`s inside this block one write: all of their files appear at its end, or none.

    Groups nest: an inner group's files join the outer one.

    Raises:
        AttnvizError: a rename failed (the files already replaced are put back as they were).
        Exception: whatever the block raises; no file of the group is left behind.
    """
    if _GROUP.get() is not None:  # inside another group: its files join that one
        yield
        return
    group = _Group()
    token = _GROUP.set(group)
    try:
        yield
    except BaseException:
        for temp, _ in group.pending:
            _discard(temp)
        raise
    finally:
        _GROUP.reset(token)
    _commit(group.pending)


def _commit(pending: list[tuple[Path, Path]]) -> None:
    """Rename every (temporary file, target) pair; on any failure, undo the renames done and remove the rest."""
    done: list[tuple[Path, Path | None]] = []  # (target, backup of the file it replaced)
    backup = None
    try:
        for temp, target in pending:
            backup = _backup(target)
            os.replace(temp, target)
            _LIVE.discard(temp)
            done.append((target, backup))
            backup = None
    except BaseException as error:
        if backup is not None:  # its rename failed: the target is still the earlier file
            _discard(backup)
        for target, earlier in reversed(done):
            _restore(target, earlier)
        for temp, _ in pending:
            _discard(temp)
        if isinstance(error, OSError):
            raise _write_failed(pending[len(done)][1], error) from error
        raise
    for _, backup in done:
        if backup is not None:
            _discard(backup)


def _backup(target: Path) -> Path | None:
    """A hard link to the file `target` names now, so a failed group can put it back (None: nothing to keep, or a
    filesystem without hard links)."""
    if not target.is_file():
        return None
    backup = _sibling(target, "bak")
    _LIVE.add(backup)
    try:
        os.link(target, backup)
    except OSError:
        _LIVE.discard(backup)
        return None
    return backup


def _restore(target: Path, backup: Path | None) -> None:
    """Undo one rename of a failed group: the earlier file back, or no file where there was none."""
    with suppress(OSError):
        if backup is not None:
            os.replace(backup, target)
            _LIVE.discard(backup)
        else:
            target.unlink(missing_ok=True)


def remove_temporaries() -> None:
    """Remove every temporary file this process still has (after a signal cut a write short)."""
    for temp in list(_LIVE):
        with suppress(OSError):
            _discard(temp)
