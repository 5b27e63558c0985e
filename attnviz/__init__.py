"""attnviz: find the attention blocks in a CNN, capture what each one computes, and draw it.

The public API is imported lazily, so `import attnviz` (and `attnviz --help`) never pays for torch.

    >>> from attnviz import create_block
    >>> block = create_block("cbam", 64)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "create_block": "attnviz.blocks.base",
    "Tap": "attnviz.blocks.base",
    "block_names": "attnviz.blocks.catalog",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'attnviz' has no attribute {name!r}")
