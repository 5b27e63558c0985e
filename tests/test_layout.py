"""The rules of the house that a grep can check: arrows point down, inference never imports training, small files."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "attnviz"
MAX_LINES = 400


def _modules() -> dict[str, str]:
    return {p.relative_to(PACKAGE).as_posix(): p.read_text(encoding="utf-8") for p in PACKAGE.rglob("*.py")}


def _imports(source: str, package: str) -> bool:
    return re.search(rf"^\s*(from {re.escape(package)}[\s.]|import {re.escape(package)}\b)", source, re.M) is not None


def test_only_the_cli_imports_typer() -> None:
    offenders = [
        name for name, source in _modules().items() if _imports(source, "typer") and not name.startswith("cli/")
    ]
    assert offenders == []


def test_the_library_never_imports_the_cli() -> None:
    offenders = [
        name
        for name, source in _modules().items()
        if _imports(source, "attnviz.cli") and not name.startswith(("cli/", "__main__"))
    ]
    assert offenders == []


def test_inference_never_imports_training() -> None:
    trainers = ("training/", "cli/fit", "detection/train")
    offenders = [
        name
        for name, source in _modules().items()
        if (_imports(source, "attnviz.training") or _imports(source, "attnviz.detection.train"))
        and not name.startswith(trainers)
    ]
    assert offenders == []


def test_no_file_is_over_400_lines() -> None:
    long = {name: source.count("\n") for name, source in _modules().items() if source.count("\n") > MAX_LINES}
    assert long == {}
