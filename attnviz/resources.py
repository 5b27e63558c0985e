"""Where the shipped data lives: weights/ and samples/ beside the package in a checkout, or under
`<prefix>/share/attnviz/` after `pip install .`."""

from __future__ import annotations

import sys
from pathlib import Path

from attnviz.errors import AttnvizError

DEFAULT_SAMPLE = "chelsea.png"


def data_dir(name: str) -> Path:
    """The shipped folder `name` ("weights" or "samples").

    Raises:
        AttnvizError: the folder is in neither place.
    """
    candidates = [
        Path(__file__).resolve().parent.parent / name,
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
