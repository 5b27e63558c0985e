"""Where a model's feature-map cells sit on its input, measured with input gradients.

A conv net with "same" padding centres the receptive field of cell j of a stride-s map on input pixel s*j
("aligned"); a patch embedding centres it in the middle of the tile it covers ("tiled"). Drawing a map with the
wrong convention shifts it by up to half a cell (15.5 px for stage 4 of a ResNet). `measure_placement` finds out
which holds for a model: it backpropagates from a central cell of the first feature map of stride 4 or more that
its forward computes (the forward stops there) to a random input, takes the centroid of the gradient's magnitude,
and picks the convention whose centre is nearer. A fine map is used because its receptive field is small: a deep
cell's reaches past the image, and the clipping pulls its centroid towards the image centre. The convention holds
for the whole model: "same"-padded convs stacked on each other keep it, and so do transformer blocks on a patch
grid.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from attnviz.capture import evaluating
from attnviz.images import Size, first_centre, input_dims

MIN_STRIDE = 4
"""Maps finer than this (a stride-2 stem) tell the conventions apart by half a pixel only."""


class _Found(Exception):
    """Raised by the hook that sees the first usable feature map, to stop the forward there."""

    def __init__(self, feature: torch.Tensor) -> None:
        super().__init__()
        self.feature = feature


def measure_placement(model: nn.Module, size: Size = 224) -> str | None:
    """ "aligned" or "tiled" (see attnviz.images.PLACEMENTS) for `model`, measured on a random `size` input; None
    when no feature map of stride MIN_STRIDE or more is found or no gradient reaches the input."""
    width, height = input_dims(size)
    handles = [module.register_forward_hook(_stop_at_stride(height, width)) for module in model.modules()]
    parameter = next(model.parameters(), None)
    image = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(0))
    if parameter is not None and parameter.is_floating_point():
        image = image.to(parameter.device, parameter.dtype)
    image.requires_grad_(True)
    try:
        with torch.enable_grad(), evaluating(model):
            try:
                model(image)
            except _Found as found:
                return _nearer(found.feature, image)
        return None
    finally:
        for handle in handles:
            handle.remove()


def _stop_at_stride(height: int, width: int) -> Any:
    def hook(_module: nn.Module, _args: tuple[Any, ...], output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.dim() == 4 and output.requires_grad and output.shape[0] == 1:
            h, w = output.shape[-2:]
            if height / h >= MIN_STRIDE and width / w >= MIN_STRIDE:
                raise _Found(output)

    return hook


def _nearer(feature: torch.Tensor, image: torch.Tensor) -> str | None:
    """The convention whose centre of a central cell of `feature` is nearer its gradient centroid on `image`."""
    h, w = feature.shape[-2:]
    row, col = h // 2, w // 2
    (grad,) = torch.autograd.grad(feature[0, :, row, col].sum(), image, allow_unused=True)
    if grad is None:
        return None
    weight = grad[0].abs().sum(0).double()
    total = float(weight.sum())
    if not total > 0:
        return None
    in_h, in_w = weight.shape
    y = float((weight.sum(1) * (torch.arange(in_h, dtype=torch.float64) + 0.5)).sum()) / total
    x = float((weight.sum(0) * (torch.arange(in_w, dtype=torch.float64) + 0.5)).sum()) / total

    def miss(placement: str) -> float:
        cy = first_centre(in_h, h, placement) + row * in_h / h
        cx = first_centre(in_w, w, placement) + col * in_w / w
        return abs(cy - y) + abs(cx - x)

    return min(("aligned", "tiled"), key=miss)
