"""Attention inside models attnviz did not build: torchvision, timm, YOLO, and users' own modules.

`attach_taps(model)` finds the attention modules of a network and gives each one a `ForeignTap` child per attention
tensor it computes, so `capture` records them like the taps of attnviz's own blocks. Modules are recognised by type
(torchvision's and timm's SE, ECA, CBAM, coordinate, selective-kernel, global-context and split attention, their
self-attention, ultralytics' CBAM and PSA/area attention, matched by package and class name along the MRO) or by
structure from one dummy forward (blog-style gates, as modules or as inline `torch.sigmoid`/`softmax` calls, judged
by the shape of what they scale). attnviz's own blocks are reported beside them; attention-like modules nothing
matched are reported as not recognised. Taps only hook, so outputs and state dicts are unchanged.

- `taps`: TapSpec, ForeignTap, adding and removing taps.
- `recognise`: the adapters by type, `attach_taps` and its ForeignReport; `structure`: recognition by structure.
- `probe`: the dummy forward recognition reads shapes, stages and gate calls from; `functional`: watching and
  catching inline gate calls.
- `selfattn`: the self-attention adapters (ViT, BoT, Halo, Lambda, non-local, BAT, MultiheadAttention, YOLO's),
  with `thirdparty` (mmcv, fightingcv, segmentation-models-pytorch, monai) and `rollout` (a ViT's attention
  rollout); `recompute`, `yolo`,
  `thirdparty_recipes` and `found`: the recipes that recompute their weights from what the module computed.
- `zoo`: building or reading the model a `--model` names (torchvision, timm, model files, your own code).
"""

from __future__ import annotations

from attnviz.models.foreign.modelfile import model_file, module_from_checkpoint
from attnviz.models.foreign.recognise import ForeignReport, attach_taps
from attnviz.models.foreign.taps import TAP_PREFIX, ForeignTap, TapSpec, detach_taps
from attnviz.models.foreign.zoo import (
    ForeignModel,
    file_slug,
    parse_model_spec,
    reachable,
    timm_model,
    torchvision_model,
)

__all__ = [
    "TAP_PREFIX",
    "ForeignModel",
    "ForeignReport",
    "ForeignTap",
    "TapSpec",
    "attach_taps",
    "detach_taps",
    "file_slug",
    "model_file",
    "module_from_checkpoint",
    "parse_model_spec",
    "reachable",
    "timm_model",
    "torchvision_model",
]
