"""`inspect`: where the attention sits in a model, what each module emits and the map shapes at an input size."""

from __future__ import annotations

from typing import Any

import torch

from attnviz.capture import Recording, capture
from attnviz.images import Size, input_dims
from attnviz.loading import LoadedModel


def inspect_model(loaded: LoadedModel, *, size: Size | None = None, height: int | None = None) -> dict[str, Any]:
    """What attention `loaded` holds, found by one forward of a blank (height x size) input.

    For attnviz's own models: every block of the drawn stages with its stage, maps and parameters. For a model
    attnviz did not build: every recognised attention module (whatever the drawn stages) with its kinds and call
    count, and the attention-like modules that were not recognised.

    Args:
        loaded: The model.
        size: The input: a side, or (width, height) (default: the model's own input size).
        height: Input height, overriding the height `size` gives.
    """
    width, own_height = input_dims(size or loaded.input_size)
    hw = (height or own_height, width)
    with torch.inference_mode(), capture(loaded.model) as rec:
        loaded.model(torch.zeros(1, 3, *hw, device=loaded.device))
    if loaded.foreign is not None:
        return _foreign(loaded, rec, hw)
    model = loaded.model
    by_layer = rec.by_layer()
    rows = [
        {
            "layer": path,
            "stage": stage,
            "block": loaded.config.block,
            "maps": _maps(by_layer.get(path, [])),
            "parameters": _parameters(loaded, path),
        }
        for path, stage in model.attnviz_blocks.items()
        if stage in loaded.stages()  # --stages narrowed what is listed
    ]
    total = sum(p.numel() for p in model.parameters())
    return {"model": loaded.config.to_dict(), "input": list(hw), "blocks": rows, "total_parameters": total}


def _foreign(loaded: LoadedModel, rec: Recording, hw: tuple[int, int]) -> dict[str, Any]:
    report = loaded.foreign
    assert report is not None
    by_layer = rec.by_layer()
    rows = []
    for found in report.recognised:
        maps = by_layer.get(found.path, [])
        rows.append(
            {
                **found.summary(),
                "calls": max((m.call + 1 for m in maps), default=0),
                "maps": _maps([m for m in maps if m.call == 0]),
                "parameters": _parameters(loaded, found.path),
            }
        )
    missing = [{"layer": path, "type": name} for path, name in report.unrecognised]
    return {
        "model": loaded.spec,
        "weights": loaded.source,
        "input": list(hw),
        "recognised": rows,
        "not_recognised": missing,
    }


def _maps(maps: list[Any]) -> list[dict[str, Any]]:
    return [{"label": m.label, "kind": m.kind, "shape": list(m.shape[1:]), "axes": list(m.axes[1:])} for m in maps]


def _parameters(loaded: LoadedModel, path: str) -> int:
    return sum(p.numel() for p in loaded.model.get_submodule(path).parameters())
