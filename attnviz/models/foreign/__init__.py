"""Attention inside models attnviz did not build: torchvision, timm, and users' own modules.

`attach_taps(model)` finds the attention modules of a network and gives each one a `ForeignTap` child per attention
tensor it computes, so `capture` records them like the taps of attnviz's own blocks. Modules are recognised by type
(torchvision's and timm's SE, ECA, CBAM, coordinate, selective-kernel, global-context and split attention, matched
by package and class name along the MRO) or by structure from one dummy forward (blog-style SE and CBAM gates).
attnviz's own blocks are reported beside them; attention-like modules nothing matched are reported as not
recognised. Taps only hook, so outputs and state dicts are unchanged.

- `taps`: TapSpec, ForeignTap, adding and removing taps.
- `recognise`: the adapters by type, recognition by structure, `attach_taps` and its ForeignReport.
- `probe`: the dummy forward recognition reads shapes and stages from.
- `zoo`: building or reading the model a `--model` names (torchvision, timm, model files).
"""

from __future__ import annotations

from attnviz.models.foreign.recognise import ForeignReport, attach_taps
from attnviz.models.foreign.taps import TAP_PREFIX, ForeignTap, TapSpec, detach_taps
from attnviz.models.foreign.zoo import (
    ForeignModel,
    file_slug,
    model_file,
    module_from_checkpoint,
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
