"""The report of a photo through an ASFF detector: per fusion level, the weight of each source level on the photo,
which source dominates each pixel, and the detections with their mean level weights."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from attnviz.report.data import plane_entry

if TYPE_CHECKING:
    from attnviz.detection.analysis import DetectorAnalysis, LevelMap


def _source_names(level: LevelMap) -> list[str]:
    from attnviz.detection import LEVEL_NAMES

    if not level.order_known:
        return [f"input {k} (order unknown)" for k in range(level.planes.shape[0])]
    strides = level.source_strides or [None] * len(LEVEL_NAMES)
    return [
        f"{name} (stride {stride:g})" if stride else name for name, stride in zip(LEVEL_NAMES, strides, strict=False)
    ]


def collect_detector(analysis: DetectorAnalysis) -> tuple[list[dict[str, Any]], list[str]]:
    """(stages, notes) for the page: one tab per ASFF module (fusion level), fine first."""
    stages = []
    for index, level in enumerate(analysis.levels):
        h, w = level.grid
        names = _source_names(level)
        planes = [
            plane_entry(f"{level.layer} · weight of {name}", cells, fixed=(0.0, 1.0), name=f"{level.layer}:{k}")
            for k, (name, cells) in enumerate(zip(names, level.planes, strict=False))
        ]
        entry = {
            "type": "asff",
            "name": level.layer,
            "caption": f"{level.layer} ({level.type}) → level {index}, {h}x{w} cells",
            "sources": names,
            "planes": planes,
            "level": index,
        }
        block = {"layer": level.layer, "block": level.type, "maps": [entry]}
        stages.append({"stage": index, "title": f"fusion level {index}", "blocks": [block]})
    notes = []
    if analysis.detections is None:
        notes.append("detections are drawn only for attnviz detectors; this model's outputs are not decoded")
    return stages, notes


def detections(analysis: DetectorAnalysis) -> list[dict[str, Any]]:
    """The boxes on the original photo, with class, score, the level that found them and their mean level
    weights."""
    return [
        {
            "box": [round(v, 2) for v in d.box],
            "name": d.name,
            "score": round(d.score, 4),
            "level": d.level,
            "weights": [round(float(v), 4) for v in d.weights],
        }
        for d in analysis.detections or []
    ]
