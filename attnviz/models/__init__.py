"""Models: backbones fitted with attention blocks, checkpoints, and (later) detectors and foreign models.

Only names live here, so the CLI can offer choices without importing torch.
"""

from __future__ import annotations

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
MOBILENETS = ("mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large")
BACKBONES = RESNETS + MOBILENETS
STAGES = (1, 2, 3, 4)
"""Stage N of every backbone is the part running at output stride 2**(N+1): 4, 8, 16, 32."""

DETECTOR_BACKBONES = ("resnet18", "mobilenet_v2")
DETECTOR_STRIDES = (8, 16, 32)
"""The detector's pyramid levels (attnviz.models.detector), fine to coarse."""
LEVEL_NAMES = ("fine", "mid", "coarse")
HEAD_PREFIXES = ("fc.", "classifier.")
"""State-dict key prefixes of the classifier head (ResNet's fc, MobileNet's classifier)."""
