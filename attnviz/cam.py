"""Class activation maps from the grad-cam package (pytorch_grad_cam), for the same model attnviz draws.

Imported only where used: the package itself takes seconds to import.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from attnviz.errors import UsageError, option

if TYPE_CHECKING:
    from attnviz.loading import LoadedModel

CamRunner = Callable[[torch.Tensor, torch.Tensor], np.ndarray]
"""(images, target classes) -> (B, H, W) CAM in [0, 1] at the input resolution."""


def cam_methods() -> dict[str, type]:
    """Every CAM class the installed grad-cam package offers, by lower-case name ("gradcam", "scorecam"...)."""
    import pytorch_grad_cam
    from pytorch_grad_cam.base_cam import BaseCAM

    methods = {}
    for name in dir(pytorch_grad_cam):
        cls = getattr(pytorch_grad_cam, name)
        if isinstance(cls, type) and issubclass(cls, BaseCAM) and cls is not BaseCAM:
            methods[name.lower()] = cls
    return methods


def check_cam(method: str) -> str:
    """The lower-case name of the CAM `method`, which the grad-cam package must offer."""
    methods = cam_methods()
    if method.lower() not in methods:
        raise UsageError(
            f"unknown CAM method {method!r} ({option('cam')})", f"choose one of: {', '.join(sorted(methods))}"
        )
    return method.lower()


def cam_for_layer(model: nn.Module, layer: nn.Module, method: str) -> CamRunner:
    """A function (images, target classes) -> (B, H, W) CAM in [0, 1] at the input resolution, for `layer`."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam = cam_methods()[check_cam(method)](model=model, target_layers=[layer])

    def run(images: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
        with torch.enable_grad():
            return np.asarray(cam(input_tensor=images, targets=[ClassifierOutputTarget(int(t)) for t in targets]))

    return run


def stage_cams(loaded: LoadedModel, method: str) -> dict[int, CamRunner]:
    """Per drawn stage, the CAM `method` of the stage's output; built once per model and method (the grad-cam
    package hooks the model when a CAM is made)."""
    method = check_cam(method)
    if method not in loaded.cams:
        outputs = loaded.stage_outputs()
        loaded.cams[method] = {stage: cam_for_layer(loaded.model, module, method) for stage, module in outputs.items()}
    return loaded.cams[method]
