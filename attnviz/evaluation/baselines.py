"""The maps every score is shown beside, and the one upsampling convention applied to every map alike.

- random: uniform noise at the scene's resolution (what chance scores);
- centre: a cone peaking at the scene's centre (what "objects tend to be central" scores; on an even side the four
  central pixels tie);
- Grad-CAM (or any grad-cam method) of the same model at each stage, taken at the stage's own cell resolution and
  upsampled like the attention maps.
Upsampling (`to_scene`): cell j of an h-cell axis over S pixels is centred on pixel `first_centre + j * S / h`:
"tiled" (half-pixel centres, the centre of the tile the cell covers, as torch's interpolate with
align_corners=False) or "aligned" (pixel s*j, where a "same"-padded conv centres its receptive field); between
centres bilinear, beyond the outer centres the edge value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from attnviz.images import PLACEMENTS, Geometry, map_to_original

UPSAMPLINGS = PLACEMENTS
CellCam = Callable[[torch.Tensor, torch.Tensor], np.ndarray]
"""(images, target classes) -> (B, h, w) CAM at the stage's own resolution, each in [0, 1]."""


def to_scene(cells: np.ndarray, size: tuple[int, int], upsample: str) -> np.ndarray:
    """An (h, w) map covering the whole scene, drawn at `size` (height, width) with the `upsample` convention."""
    cells = np.asarray(cells, dtype=np.float32)
    if cells.shape == tuple(size):
        return cells
    height, width = size
    geometry = Geometry((width, height), (width, height), "resize", (width, height), (0, 0))
    return map_to_original(cells, geometry, placement=upsample)


def centre_prior(size: tuple[int, int]) -> np.ndarray:
    """A cone that peaks at the scene's centre: minus the distance of each pixel centre from it."""
    height, width = size
    ys = np.arange(height, dtype=np.float32) + 0.5 - height / 2
    xs = np.arange(width, dtype=np.float32) + 0.5 - width / 2
    return -np.sqrt(ys[:, None] ** 2 + xs[None, :] ** 2)


def random_map(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """Uniform noise at the scene's resolution."""
    return rng.random(size, dtype=np.float32)


@contextmanager
def cell_cams(
    stage_modules: dict[int, nn.Module], model: nn.Module, method: str | None
) -> Iterator[dict[int, CellCam]]:
    """Per stage, a CAM runner at the stage's own resolution; the grad-cam package's hooks go when the block ends.

    The grad-cam package draws its CAMs at the input's size with its own resize; asking it for the activation's own
    size keeps them at cell resolution, so `to_scene` upsamples them exactly like the attention maps.
    """
    if not method:
        yield {}
        return
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from attnviz.cam import cam_methods, check_cam

    cls = cam_methods()[check_cam(method)]
    cams = {stage: cls(model=model, target_layers=[module]) for stage, module in stage_modules.items()}
    for cam in cams.values():
        cam.get_target_width_height = _own_size(cam)

    def runner(cam: object) -> CellCam:
        def run(images: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
            with torch.enable_grad():
                wanted = [ClassifierOutputTarget(int(t)) for t in targets]
                return np.asarray(cam(input_tensor=images, targets=wanted))

        return run

    try:
        yield {stage: runner(cam) for stage, cam in cams.items()}
    finally:
        for cam in cams.values():
            cam.activations_and_grads.release()


def _own_size(cam: object) -> Callable[[torch.Tensor], tuple[int, int]]:
    def size(_input: torch.Tensor) -> tuple[int, int]:
        activation = cam.activations_and_grads.activations[0]
        return int(activation.shape[-1]), int(activation.shape[-2])

    return size
