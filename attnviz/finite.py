"""Saying which layer first computed NaN or infinity, when a forward's output or its maps are not finite.

The normal forward runs without extra hooks; only when what it produced is not finite is the input run once more with
a forward hook on every module, to name the first one (in call order) whose output is not finite.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from attnviz.errors import AttnvizError


class NonFiniteError(AttnvizError):
    """A forward computed NaN or infinity (broken weights, or values that overflow)."""


def tensors_in(value: Any) -> Iterator[torch.Tensor]:
    """Every tensor in a model output: a tensor, or tensors nested in tuples, lists and dicts."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from tensors_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from tensors_in(item)


def all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """Whether every floating-point value in `tensors` is finite."""
    return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())


def first_non_finite(model: nn.Module, inputs: torch.Tensor) -> str | None:
    """Run `inputs` through `model` with a hook on every module; the path of the first module (in call order) whose
    output is not finite ("" for the model itself), or None when every output is finite this time."""
    found: list[str] = []

    def hook(path: str) -> Any:
        def check(_module: nn.Module, _args: Any, output: Any) -> None:
            if not found and not all_finite(tensors_in(output)):
                found.append(path)

        return check

    handles = [module.register_forward_hook(hook(path)) for path, module in model.named_modules()]
    try:
        with torch.inference_mode():
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return found[0] if found else None


def check_finite(model: nn.Module, inputs: torch.Tensor, output: Any, maps: Iterable[torch.Tensor]) -> None:
    """Refuse a forward whose output or recorded maps hold NaN or infinity, naming the first layer that computed it.

    Raises:
        NonFiniteError: one line naming the layer.
    """
    if all_finite(tensors_in(output)) and all_finite(maps):
        return
    if not bool(torch.isfinite(inputs).all()):
        raise NonFiniteError("the input image holds NaN or infinity after preprocessing", "check the image file")
    path = first_non_finite(model, inputs)
    where = (
        f"{path} ({type(model.get_submodule(path)).__name__}) is the first layer whose output is"
        if path
        else "the model's output is"
    )
    raise NonFiniteError(
        f"{where} not finite (NaN or infinity) on this image",
        "the weights are broken (NaN or huge values), or a layer overflows; check the weights",
    )
