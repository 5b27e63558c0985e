"""A small one-stage detector whose pyramid levels are fused by ASFF: where ASFF weights mean something.

Liu, Huang, Wang. "Learning Spatial Fusion for Single-Shot Object Detection", arXiv 2019 (arXiv:1911.09516) for the
fusion; Zhou, Wang, Krähenbühl. "Objects as Points" (CenterNet), arXiv 2019 (arXiv:1904.07850) for the head.

    image (B, 3, H, W)
      -> backbone C3, C4, C5 at strides 8, 16, 32   resnet18: layer2/3/4; mobilenet_v2: features[4:7], [7:14], [14:18]
      -> neck: FPN top-down (attnviz's FPN block, no P6/P7), then a PANet bottom-up path, all `channels` wide
      -> ASFF(level=i) for i = 0, 1, 2: level i's map is a per-pixel softmax mix of all three levels (tap "level")
      -> one head shared by the levels: 2 x (3x3 conv, GroupNorm, ReLU), then 1x1 convs to
            heatmap  (num_classes)  sigmoid: an object's centre lies in this cell
            size     (2)            log(w / sx), log(h / sy): the box in cells of its level
            offset   (2)            the centre relative to the cell centre, in cells
      -> decode: per level the 3x3 local maxima of the heatmap (max-pool NMS), the top k, boxes from size and offset;
         then torchvision.ops.batched_nms over the boxes of all levels, per class.

Cell (i, j) of an h x w level covers input pixels [j*sx, (j+1)*sx) x [i*sy, (i+1)*sy) with sx = W / w, sy = H / h,
as everywhere in attnviz, so odd and non-square inputs decode correctly. Each object is the target of exactly one
level, chosen by the longer side of its box: below `4 * stride` of level 0 (32 px at stride 8) it is small (level 0),
below `4 * stride` of level 1 (64 px) medium (level 1), else large (level 2). Its targets and loss are in `loss.py`.

`config.asff = False` builds the same detector without the ASFF modules (each head reads its PAN level): the
ablation baseline, and a detector in which asff-weights finds nothing to draw.

Detector files (det.pt: the config, weights, class names and metrics) are read and written in `files.py`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from attnviz.blocks.asff import ASFF, fit_to_size
from attnviz.blocks.base import ConvNormAct, divisor_at_most
from attnviz.blocks.fpn import FPN
from attnviz.detection import DETECTOR_BACKBONES, DETECTOR_STRIDES
from attnviz.errors import UsageError

FORMAT = "attnviz-detector/1"
"""The "format" of the config in a detector file."""
STRIDES = DETECTOR_STRIDES
SIZE_BUCKETS = ("small", "medium", "large")
HEATMAP_PRIOR = 0.01  # initial centre probability of every cell (RetinaNet's prior for the focal loss)
TOP_K = 100  # peaks kept per level before NMS
MAX_LOG_SIZE = 8.0  # box sizes are exp(at most this) cells: keeps an untrained head's boxes finite

LevelOutput = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""One level's head output: heatmap logits (B, K, h, w), log box size (B, 2, h, w), centre offset (B, 2, h, w)."""


@dataclass
class DetectorConfig:
    """Everything needed to build the detector again (stored in det.pt).

    Attributes:
        backbone: "resnet18" or "mobilenet_v2".
        channels: Width of the neck, the ASFF modules and the head.
        num_classes: Object classes.
        input_size: Side of the square input it was trained at.
        strides: Output strides of the three levels (fixed by the backbones: 8, 16, 32).
        compress: Channels of each level's compressed map in ASFF's weight branch.
        asff: Fuse the levels with ASFF (False: the ablation without it).
    """

    backbone: str = "resnet18"
    channels: int = 64
    num_classes: int = 10
    input_size: int = 256
    strides: tuple[int, int, int] = STRIDES
    compress: int = 16
    asff: bool = True

    def __post_init__(self) -> None:
        if self.backbone not in DETECTOR_BACKBONES:
            raise UsageError(
                f"the detector has no backbone {self.backbone!r}", f"choose one of: {', '.join(DETECTOR_BACKBONES)}"
            )
        if tuple(self.strides) != STRIDES:
            raise UsageError(f"the detector's levels are at strides {STRIDES}, not {tuple(self.strides)}")
        for name, value, low in (("channels", self.channels, 8), ("num_classes", self.num_classes, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UsageError(f"detector {name} must be a whole number of at least {low}, got {value!r}")
        if not 32 <= self.input_size <= 4096:
            raise UsageError(f"detector input size must be 32..4096, got {self.input_size}")
        self.strides = tuple(self.strides)

    def to_dict(self) -> dict[str, Any]:
        """Plain values with the file format's tag, as stored in det.pt."""
        data = asdict(self)
        data["strides"] = list(self.strides)
        return {"format": FORMAT, **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DetectorConfig:
        """Rebuild from `to_dict`'s output.

        Raises:
            UsageError: the values describe no detector attnviz can build.
        """
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "strides" in fields:
            fields["strides"] = tuple(fields["strides"])
        return cls(**fields)

    @property
    def level_bounds(self) -> tuple[int, int]:
        """Longer box sides (input pixels) where objects move from level 0 to 1 and from 1 to 2."""
        return 4 * self.strides[0], 4 * self.strides[1]


def assign_level(side: float, config: DetectorConfig) -> int:
    """The level (0 fine .. 2 coarse) whose head detects an object whose box has `side` as its longer side."""
    small, medium = config.level_bounds
    return 0 if side < small else 1 if side < medium else 2


def size_bucket(side: float, config: DetectorConfig) -> str:
    """ "small", "medium" or "large": the name of the level `assign_level` gives."""
    return SIZE_BUCKETS[assign_level(side, config)]


# -------------------------------------------------------------------------------------------------- the network


class BackboneFeatures(nn.Module):
    """C3, C4, C5 (output strides 8, 16, 32) of a torchvision backbone; its classifier is dropped."""

    def __init__(
        self, name: str, *, pretrained: bool = False, init: tuple[dict[str, torch.Tensor], str] | None = None
    ) -> None:
        """`init`: (a torchvision-keyed state dict of the backbone without its classifier, where it comes from)."""
        super().__init__()
        import torchvision

        from attnviz.io.checkpoints import apply_state_dict

        net = torchvision.models.get_model(name, weights=None)
        if pretrained:
            from attnviz.models.backbones import pretrained_state_dict

            apply_state_dict(net, pretrained_state_dict(name), f"torchvision's {name} weights")
        if init is not None:
            state, source = init
            head = {k: v for k, v in net.state_dict().items() if k.startswith(("fc.", "classifier."))}
            apply_state_dict(net, {**head, **state}, source)
        if name == "resnet18":
            self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
            self.stages = nn.ModuleList([net.layer2, net.layer3, net.layer4])
            self.out_channels = (128, 256, 512)
        else:  # mobilenet_v2; features[18] (the 1280-channel 1x1 conv) only serves the classifier
            features = net.features
            self.stem = features[:4]
            self.stages = nn.ModuleList([features[4:7], features[7:14], features[14:18]])
            self.out_channels = (32, 96, 320)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        levels = []
        for stage in self.stages:
            x = stage(x)
            levels.append(x)
        return levels


class PANNeck(nn.Module):
    """FPN's top-down path (P3-P5), then PANet's bottom-up path: N3 = P3, N_i = conv(P_i + down(N_{i-1}))."""

    def __init__(self, in_channels: tuple[int, int, int], channels: int) -> None:
        super().__init__()
        self.fpn = FPN(channels, in_channels, extra_levels=False)
        self.down = nn.ModuleList([ConvNormAct(channels, channels, 3, stride=2) for _ in range(2)])
        self.merge = nn.ModuleList([ConvNormAct(channels, channels, 3) for _ in range(2)])

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        pyramid = self.fpn(features)
        out = [pyramid[0]]
        for i, (down, merge) in enumerate(zip(self.down, self.merge, strict=True)):
            target = pyramid[i + 1]
            out.append(merge(target + fit_to_size(down(out[-1]), tuple(target.shape[-2:]))))
        return out


class CenterHead(nn.Module):
    """The anchor-free head shared by every level (GroupNorm, since the levels' statistics differ)."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        groups = divisor_at_most(channels, 16)
        self.trunk = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.GroupNorm(groups, channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.GroupNorm(groups, channels),
            nn.ReLU(inplace=True),
        )
        self.heatmap = nn.Conv2d(channels, num_classes, 1)
        self.size = nn.Conv2d(channels, 2, 1)
        self.offset = nn.Conv2d(channels, 2, 1)
        nn.init.constant_(self.heatmap.bias, -math.log((1 - HEATMAP_PRIOR) / HEATMAP_PRIOR))
        for conv in (self.size, self.offset):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> LevelOutput:
        trunk = self.trunk(x)
        return self.heatmap(trunk), self.size(trunk), self.offset(trunk)


class Detector(nn.Module):
    """Backbone -> FPN/PAN -> ASFF per level -> CenterNet-style head (see the module docstring).

    Args:
        config: What to build.
        classes: Names of the classes (default "class 0", "class 1", ...).
        pretrained: Start the backbone from torchvision's ImageNet weights.
        backbone_init: Start the backbone from this (torchvision-keyed state dict, source name) instead.

    `forward(x)` returns one `LevelOutput` per level, fine to coarse; `detect(x)` decodes them into boxes.
    """

    def __init__(
        self,
        config: DetectorConfig,
        *,
        classes: list[str] | None = None,
        pretrained: bool = False,
        backbone_init: tuple[dict[str, torch.Tensor], str] | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.classes = list(classes) if classes is not None else [f"class {k}" for k in range(config.num_classes)]
        if len(self.classes) != config.num_classes:
            raise UsageError(f"{len(self.classes)} class names for a detector of {config.num_classes} classes")
        self.backbone = BackboneFeatures(config.backbone, pretrained=pretrained, init=backbone_init)
        self.neck = PANNeck(self.backbone.out_channels, config.channels)
        self.asff = (
            nn.ModuleList([ASFF(config.channels, level=i, compress=config.compress) for i in range(3)])
            if config.asff
            else None
        )
        self.head = CenterHead(config.channels, config.num_classes)
        # stage = log2(stride) - 1, as for attnviz's backbones: stride 8 is stage 2
        stages = {f"asff.{i}": int(math.log2(s)) - 1 for i, s in enumerate(config.strides)}
        self.attnviz_blocks = stages if config.asff else {}

    def forward(self, x: torch.Tensor) -> list[LevelOutput]:
        levels = self.neck(self.backbone(x))
        if self.asff is not None:
            levels = [fuse(levels) for fuse in self.asff]
        return [self.head(level) for level in levels]

    @torch.no_grad()
    def detect(
        self, x: torch.Tensor, *, score: float = 0.3, iou: float = 0.5, max_detections: int = 100
    ) -> list[dict[str, torch.Tensor]]:
        """Boxes for each image of `x` (see `decode`)."""
        return decode(self(x), (x.shape[-1], x.shape[-2]), score=score, iou=iou, max_detections=max_detections)


def cell_scale(input_size: tuple[int, int], grid: tuple[int, int]) -> tuple[float, float]:
    """(sx, sy): input pixels per cell of an (h, w) level of a (width, height) input."""
    return input_size[0] / grid[1], input_size[1] / grid[0]


def decode(
    outputs: list[LevelOutput],
    input_size: tuple[int, int],
    *,
    score: float = 0.3,
    iou: float = 0.5,
    max_detections: int = 100,
    top_k: int = TOP_K,
    agnostic_iou: float | None = None,
) -> list[dict[str, torch.Tensor]]:
    """Turn head outputs into detections.

    Args:
        outputs: `Detector.forward`'s result.
        input_size: (width, height) of the input the outputs came from.
        score: Keep peaks with a centre probability of at least this.
        iou: Boxes of one class overlapping more than this are suppressed (torchvision's batched_nms).
        max_detections: Most boxes per image, best first.
        top_k: Peaks kept per level and image before NMS.
        agnostic_iou: Also drop a box overlapping a better box of any class by more than this (one label per
            object, for pictures; None keeps per-class NMS only, as the mAP wants).

    Returns:
        Per image: "boxes" (N, 4) x0, y0, x1, y1 in input pixels (clipped to the input), "scores" (N,),
        "labels" (N,) class indices, "levels" (N,) the level that found each box; sorted by score.
    """
    from torchvision.ops import batched_nms

    width, height = input_size
    per_level = [_level_candidates(out, input_size, level, top_k) for level, out in enumerate(outputs)]
    results = []
    for b in range(outputs[0][0].shape[0]):
        boxes = torch.cat([c[0][b] for c in per_level])
        scores = torch.cat([c[1][b] for c in per_level])
        labels = torch.cat([c[2][b] for c in per_level])
        levels = torch.cat([c[3][b] for c in per_level])
        keep = scores >= score
        boxes, scores, labels, levels = boxes[keep], scores[keep], labels[keep], levels[keep]
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        kept = batched_nms(boxes, scores, labels, iou)  # sorted by decreasing score
        if agnostic_iou is not None:
            from torchvision.ops import nms

            kept = kept[nms(boxes[kept], scores[kept], agnostic_iou)]
        kept = kept[:max_detections]
        results.append({"boxes": boxes[kept], "scores": scores[kept], "labels": labels[kept], "levels": levels[kept]})
    return results


def _level_candidates(
    out: LevelOutput, input_size: tuple[int, int], level: int, top_k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(boxes (B, k, 4), scores (B, k), labels (B, k), levels (B, k)) of one level's top-k heatmap peaks."""
    heat, size, offset = (t.float() for t in out)
    _, k, h, w = heat.shape
    sx, sy = cell_scale(input_size, (h, w))
    prob = heat.sigmoid()
    peaks = prob * (F.max_pool2d(prob, 3, stride=1, padding=1) == prob)
    scores, index = peaks.flatten(1).topk(min(top_k, k * h * w), dim=1)
    labels, cell = index // (h * w), index % (h * w)
    rows, cols = (cell // w).float(), (cell % w).float()
    gather = cell.unsqueeze(1).expand(-1, 2, -1)
    log_size = size.flatten(2).gather(2, gather).clamp(max=MAX_LOG_SIZE)
    shift = offset.flatten(2).gather(2, gather)
    cx = (cols + 0.5 + shift[:, 0]) * sx
    cy = (rows + 0.5 + shift[:, 1]) * sy
    half_w, half_h = log_size[:, 0].exp() * sx / 2, log_size[:, 1].exp() * sy / 2
    boxes = torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=-1)
    return boxes, scores, labels, torch.full_like(labels, level)
