"""Looking inside a weights file before anything in it is read: its zip entries and the globals its pickle names.

torch.save writes a zip archive whose entries are stored, never compressed, so no entry can hold more bytes than the
file; a deflated entry (a "zip bomb" can inflate 4 MB into 4 GiB before a shape is checked) is refused before
torch.load opens the file. A pickle is read here only as a list of opcodes (`pickletools.genops`), which runs nothing:
enough to tell a truncated file from a pickled model, and to say whether the classes it needs exist here (whether
`--trust` would load it at all).
"""

from __future__ import annotations

import _compat_pickle
import importlib.util
import pickletools
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnviz.errors import CheckpointError, UsageError, option

ENTRY_SLACK = 1 << 20
"""Bytes an archive may hold beyond its own size (headers and alignment make stored entries a little larger than
nothing; anything past this is compression)."""
MAX_PICKLE_BYTES = 256 << 20
"""The most bytes of a pickle read to list its globals."""
_STRING_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8"}
_PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}
_GET_OPS = {"GET", "BINGET", "LONG_BINGET"}


def is_zip(path: Path) -> bool:
    """Whether `path` starts as a zip archive (torch.save's format since torch 1.6)."""
    with path.open("rb") as handle:
        return handle.read(4) == b"PK\x03\x04"


def check_zip_entries(path: Path) -> None:
    """Refuse an archive whose entries are compressed or would inflate beyond the file, before any is read.

    Raises:
        UsageError: the archive is a TorchScript model.
        CheckpointError: the archive is damaged, an entry is compressed, or the entries add up to more than the file.
    """
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path} is a damaged zip archive, not a readable torch weights file ({exc})",
            "the file may be truncated; re-save or re-download it",
        ) from exc
    if any(e.filename.endswith("/constants.pkl") or "/code/__torch__/" in e.filename for e in entries):
        raise UsageError(
            f"{path} is a TorchScript archive (torch.jit.save); attnviz hooks Python modules and cannot see inside "
            "compiled TorchScript",
            "pass the model's state_dict saved with torch.save(model.state_dict()), or the code that builds it "
            f"({option('model')} file.py:factory)",
        )
    for entry in entries:
        if entry.compress_type != zipfile.ZIP_STORED:
            raise CheckpointError(
                f"{path} holds a compressed entry ({entry.filename}, {entry.file_size:,} bytes once inflated); "
                "torch.save never compresses, so it is refused unread",
                "load it with torch.load yourself if you trust it, and re-save it with torch.save",
            )
    inflated = sum(entry.file_size for entry in entries)
    if inflated > size + ENTRY_SLACK or any(e.header_offset + e.compress_size > size for e in entries):
        raise CheckpointError(
            f"{path} claims {inflated:,} bytes of entries in a {size:,}-byte file; it is refused unread",
            "the file is damaged or crafted; re-save or re-download it",
        )


@dataclass
class PickleReport:
    """What a pickle names, read without running it.

    Attributes:
        readable: Whether its opcodes parse up to STOP (False: truncated or not a pickle).
        globals: "module.name" of every class or function it would import, in order.
        missing: Those that do not exist in this Python (a module not installed, a class of another `__main__`).
    """

    readable: bool
    globals: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def pickle_report(path: Path) -> PickleReport:
    """List the globals the pickle in `path` (a zip archive's data.pkl, or a legacy file's pickles) would import."""
    data = _pickle_bytes(path)
    if data is None:
        return PickleReport(False)
    names, readable = _globals_of(data)
    return PickleReport(readable, names, [name for name in dict.fromkeys(names) if not _exists(name)])


def _pickle_bytes(path: Path) -> bytes | None:
    if is_zip(path):
        try:
            with zipfile.ZipFile(path) as archive:
                name = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
                if name is None or archive.getinfo(name).file_size > MAX_PICKLE_BYTES:
                    return None
                return archive.read(name)
        except (zipfile.BadZipFile, OSError, ValueError):
            return None
    with path.open("rb") as handle:
        return handle.read(MAX_PICKLE_BYTES)


def _globals_of(data: bytes) -> tuple[list[str], bool]:
    """The globals named by the pickles at the start of `data` (a legacy torch file holds several in a row), and
    whether the first one parsed to its end."""
    names: list[str] = []
    position, parsed = 0, 0
    while position < len(data) and parsed < 4:
        try:
            position = _scan(data, position, names)
        except (ValueError, EOFError, UnicodeDecodeError, IndexError):
            return names, parsed > 0
        parsed += 1
    return names, parsed > 0


def _scan(data: bytes, start: int, names: list[str]) -> int:
    """Add the globals of the pickle at `start` to `names`; returns where it ends.

    STACK_GLOBAL takes its module and name from the stack: the strings pushed just before it (directly or from the
    memo), which is all of the stack this needs to follow.
    """
    import io

    stream = io.BytesIO(data)
    stream.seek(start)
    pushed: list[str | None] = []  # strings pushed since the last other opcode (None: from the memo, not a string)
    memo: dict[Any, str | None] = {}
    for op, arg, position in pickletools.genops(stream):
        if op.name in _STRING_OPS:
            pushed.append(arg.decode("latin-1") if isinstance(arg, bytes) else str(arg))
        elif op.name in _GET_OPS:
            pushed.append(memo.get(arg))
        elif op.name == "MEMOIZE" or op.name in _PUT_OPS:
            memo[len(memo) if op.name == "MEMOIZE" else arg] = pushed[-1] if pushed else None
        elif op.name in ("GLOBAL", "INST"):
            names.append(".".join(str(arg).split(" ", 1)))
            pushed = []
        elif op.name == "STACK_GLOBAL":
            module, name = [None, None, *pushed][-2:]
            names.append(f"{module}.{name}" if module and name else "?.?")
            pushed = []
        elif op.name == "STOP":
            return position + 1
        else:
            pushed = []
    raise EOFError("pickle without STOP")


def _exists(name: str) -> bool:
    """Whether the global `name` ("package.module.Class") could be found here, importing nothing: checked in the
    longest module prefix already loaded (`__main__` is the running program: a class of the script that saved the file
    is not in it), else by whether its top-level package is installed."""
    module, _, attr = name.rpartition(".")
    module, attr = _compat_pickle.NAME_MAPPING.get((module, attr), (module, attr))  # Python 2 names in protocol 2
    parts = [*_compat_pickle.IMPORT_MAPPING.get(module, module).split("."), attr]
    for cut in range(len(parts) - 1, 0, -1):
        module = sys.modules.get(".".join(parts[:cut]))
        if module is None:
            continue
        # a submodule not imported yet is no attribute of its package, but the full unpickler would import it
        return hasattr(module, parts[cut]) or hasattr(module, "__path__")
    try:
        return importlib.util.find_spec(parts[0]) is not None
    except (ImportError, ValueError):
        return False
