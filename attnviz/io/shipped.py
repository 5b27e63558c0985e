"""Where the shipped data lives: weights/ and samples/ beside the package in a checkout, or under
`<prefix>/share/attnviz/` after `pip install .`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from attnviz.errors import AttnvizError

DEFAULT_SAMPLE = "chelsea.png"


def data_dir(name: str) -> Path:
    """The shipped folder `name` ("weights" or "samples").

    Raises:
        AttnvizError: the folder is in neither place.
    """
    candidates = [
        Path(__file__).resolve().parents[2] / name,
        Path(sys.prefix) / "share" / "attnviz" / name,
    ]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise AttnvizError(
        f"attnviz's {name}/ folder is missing (looked in {', '.join(str(c) for c in candidates)})",
        "reinstall attnviz with `pip install .` from its source folder",
    )


def default_sample() -> Path:
    """The bundled photo commands use when no image is given."""
    return data_dir("samples") / DEFAULT_SAMPLE


def demo_manifest() -> list[dict[str, Any]]:
    """The entries of the shipped weights/MANIFEST.json (empty when there is none)."""
    try:
        manifest = data_dir("weights") / "MANIFEST.json"
    except AttnvizError:
        return []
    if not manifest.is_file():
        return []
    return list(json.loads(manifest.read_text(encoding="utf-8")).get("files", []))


def demo_weights(block: str, backbone: str) -> Path | None:
    """The shipped demo weights for `block` on `backbone`, or None when none are shipped."""
    for entry in demo_manifest():
        if entry.get("block") == block and entry.get("backbone") == backbone and entry.get("kind") == "classifier":
            return data_dir("weights") / entry["file"]
    return None


DEMO = "demo"
"""What a user types in place of a detector file to get the shipped one."""


def detector_path(given: Path) -> Path:
    """`given`, or the shipped demo detector when `given` is the word "demo" (and no file of that name exists).

    Raises:
        AttnvizError: "demo" was asked for and no demo detector is installed.
    """
    if str(given) != DEMO or given.exists():
        return given
    for entry in demo_manifest():
        if entry.get("kind") == "detector":
            return data_dir("weights") / entry["file"]
    raise AttnvizError("no demo detector is installed", "train one with attnviz fit-det and pass its file")
