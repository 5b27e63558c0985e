"""Scoring maps on held-out scenes with known masks: the front door of `attnviz.evaluation`.

`evaluate(model, batches, classes=...)` returns an `EvalResult`: localisation under named protocols beside random,
centre-prior and Grad-CAM baselines, the best map chosen on one half of the scenes and scored on the other, gate
ablation, deletion/insertion curves, and channel probes beside a probe on the block's input features. The
protocols and their rules are in `attnviz.evaluation.protocols`.
"""

from __future__ import annotations

from attnviz.evaluation.ablation import ABLATIONS, ablated, gate_ablation
from attnviz.evaluation.baselines import UPSAMPLINGS, centre_prior, to_scene
from attnviz.evaluation.curves import deletion_insertion
from attnviz.evaluation.external import export_scenes, load_maps
from attnviz.evaluation.probes import linear_probe
from attnviz.evaluation.protocols import (
    Scores,
    Target,
    auroc,
    dilate,
    energy_ratio,
    energy_share,
    pointing_hit,
    standard_tolerance,
)
from attnviz.evaluation.run import SPATIAL, EvalResult, _stage_of, evaluate, spatial_cells

__all__ = [
    "ABLATIONS",
    "SPATIAL",
    "UPSAMPLINGS",
    "EvalResult",
    "Scores",
    "Target",
    "_stage_of",
    "ablated",
    "auroc",
    "centre_prior",
    "deletion_insertion",
    "dilate",
    "energy_ratio",
    "energy_share",
    "evaluate",
    "export_scenes",
    "gate_ablation",
    "linear_probe",
    "load_maps",
    "pointing_hit",
    "spatial_cells",
    "standard_tolerance",
    "to_scene",
]
