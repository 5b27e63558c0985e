"""attnviz: find the attention blocks in a CNN, capture what each one computes, and draw it.

The front door, the same from a notebook as from the command line (each call returns the picture the CLI writes):

    >>> import attnviz
    >>> view = attnviz.show("cbam", "photo.jpg")          # demo weights; view.image shows inline, view.save("out/")
    >>> view = attnviz.channels("se", "photo.jpg", layer=3)
    >>> loaded = attnviz.load(model="timm:resnet18", timm_attn="cbam")
    >>> view = attnviz.show(loaded, "photo.jpg")          # a loaded model is reused, photo after photo
    >>> analysis = attnviz.analyse(loaded, "photo.jpg")   # the captured maps themselves: analysis.recording

Everything is imported lazily, so `import attnviz` (and `attnviz --help`) never pays for torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load": "attnviz.loading",
    "LoadedModel": "attnviz.loading",
    "analyse": "attnviz.analysis",
    "Analysis": "attnviz.analysis",
    "show": "attnviz.api",
    "channels": "attnviz.api",
    "coords": "attnviz.api",
    "matrix": "attnviz.api",
    "inspect": "attnviz.api",
    "asff_weights": "attnviz.detection",
    "sequence": "attnviz.sequence.api",
    "View": "attnviz.views.base",
    "Style": "attnviz.views.base",
    "capture": "attnviz.capture",
    "AttentionMap": "attnviz.maps",
    "create_block": "attnviz.blocks.base",
    "Tap": "attnviz.blocks.base",
    "block_names": "attnviz.blocks.catalog",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'attnviz' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


class _FrontDoor(types.ModuleType):
    """The package's module type. `attnviz.capture` is the context manager and `attnviz.sequence` the drawing
    function, although a submodule of each name exists: importing a submodule sets it as an attribute of its
    package, which these properties turn away."""

    @property
    def capture(self) -> Any:
        from attnviz.capture import capture

        return capture

    @capture.setter
    def capture(self, _module: Any) -> None:
        pass  # the submodule stays in sys.modules["attnviz.capture"]

    @property
    def sequence(self) -> Any:
        from attnviz.sequence.api import sequence

        return sequence

    @sequence.setter
    def sequence(self, _module: Any) -> None:
        pass  # the package stays in sys.modules["attnviz.sequence"], as attnviz.capture above


sys.modules[__name__].__class__ = _FrontDoor
