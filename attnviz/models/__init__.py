"""Models: backbones fitted with attention blocks, checkpoints, and foreign models (the detector is attnviz.detection).

Only names live here, so the CLI can offer choices without importing torch.
"""

from __future__ import annotations

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
MOBILENETS = ("mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large")
BACKBONES = RESNETS + MOBILENETS
STAGES = (1, 2, 3, 4)
"""Stage N of every backbone is the part running at output stride 2**(N+1): 4, 8, 16, 32."""

HEAD_PREFIXES = ("fc.", "classifier.")
"""State-dict key prefixes of the classifier head (ResNet's fc, MobileNet's classifier)."""
