"""`evaluate`: every score of a model on held-out scenes with known masks, each beside its baselines.

1. Localisation (protocols.py) of every map with a place (spatial maps, Coordinate Attention's a_h x a_w, the
   attention-matrix row of the pixel at the object's centre), of Grad-CAM at every stage, of a random and a
   centre-prior map, and of maps from other tools, all upsampled alike (baselines.py).
2. The best map: chosen on the first half of the scenes (pointing game, then AUROC), scored on the second half.
3. Faithfulness on the first `faith_n` scenes of the second half: gate ablation per block layer (ablation.py), and
   deletion/insertion curves (curves.py) in the order of the best map, of Grad-CAM at its stage, of the centre
   prior and of a random map (and of other tools' maps).
4. Channel weights (and selection weights): a linear probe predicting the class, beside the same probe on the
   block's pooled input features (probes.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from attnviz.capture import capture
from attnviz.evaluation.ablation import ABLATIONS, gate_ablation
from attnviz.evaluation.baselines import UPSAMPLINGS, cell_cams, centre_prior, random_map, to_scene
from attnviz.evaluation.curves import deletion_insertion
from attnviz.evaluation.probes import linear_probe, pooled_inputs
from attnviz.evaluation.protocols import Scores, Target, protocol_description
from attnviz.maps import AttentionMap, channel_vector, coordinate_outer, plane, query_plane, selection_weights
from attnviz.models.backbones import stage_outputs

SPATIAL = ("spatial", "coordinate", "matrix")


def spatial_cells(maps: list[AttentionMap], index: int, mask: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    """(layer:label, map at its own cell resolution) for every spatial-type map of image `index` in a recording."""
    coordinate: dict[str, list[AttentionMap]] = {}
    for m in maps:
        if m.kind == "spatial":
            yield m.name, plane(m)[index]
        elif m.kind == "coordinate":
            coordinate.setdefault(m.layer, []).append(m)
        elif m.kind == "matrix" and m.tokens == "grid" and m.grid is not None:
            row, col = _centre_cell(mask, m.grid)
            yield f"{m.name}@centre", query_plane(m, row * m.grid[1] + col)[index].mean(axis=0)
    for layer, pair in coordinate.items():
        if len(pair) >= 2:
            yield f"{layer}:a_h*a_w", coordinate_outer(pair[0], pair[1])[index]


def _centre_cell(mask: np.ndarray, grid: tuple[int, int]) -> tuple[int, int]:
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    cy, cx = (ys.mean() + 0.5, xs.mean() + 0.5) if ys.size else (h / 2, w / 2)
    return min(grid[0] - 1, int(cy * grid[0] / h)), min(grid[1] - 1, int(cx * grid[1] / w))


@dataclass
class _Collected:
    """What one pass over the scenes gathers."""

    images: list[torch.Tensor] = field(default_factory=list)
    labels: list[torch.Tensor] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)
    cells: dict[str, list[np.ndarray]] = field(default_factory=dict)
    maps: dict[str, Scores] = field(default_factory=dict)
    cams: dict[int, Scores] = field(default_factory=dict)
    external: dict[str, Scores] = field(default_factory=dict)
    baselines: dict[str, Scores] = field(default_factory=lambda: {"random": Scores(), "centre": Scores()})
    vectors: dict[str, list[np.ndarray]] = field(default_factory=dict)
    pooled: dict[str, list[np.ndarray]] = field(default_factory=dict)
    correct: int = 0


@dataclass
class EvalResult:
    """Accuracy, localisation, faithfulness and probe numbers, each beside its baselines (see `to_dict`)."""

    accuracy: float
    images: int
    classes: int
    maps: dict[str, dict[str, Any]]
    gradcam: dict[int, dict[str, Any]]
    random: dict[str, Any]
    channel: dict[str, dict[str, Any]]
    cam_method: str | None = None
    centre: dict[str, Any] = field(default_factory=dict)
    protocols: dict[str, Any] = field(default_factory=dict)
    best: dict[str, Any] | None = None
    ablation: dict[str, Any] | None = None
    curves: dict[str, Any] | None = None
    external: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "images": self.images,
            "classes": self.classes,
            "protocols": self.protocols,
            "maps": self.maps,
            "gradcam": {str(k): v for k, v in self.gradcam.items()},
            "cam_method": self.cam_method,
            "random": self.random,
            "centre": self.centre,
            "external": self.external,
            "best": self.best,
            "ablation": self.ablation,
            "curves": self.curves,
            "channel": self.channel,
        }

    def best_stage(self) -> dict[str, Any] | None:
        """The best map (chosen on the first half of the scenes), scored on the second half, with its baselines."""
        return self.best


def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    *,
    classes: int,
    tolerance: int = 4,
    cam: str | None = "gradcam",
    seed: int = 0,
    on_batch: Callable[[int], None] | None = None,
    upsample: str = "aligned",
    faith_n: int = 100,
    steps: int = 10,
    ablations: Sequence[str] = ABLATIONS,
    external: dict[str, np.ndarray] | None = None,
    batch_size: int = 50,
    on_phase: Callable[[str], None] | None = None,
) -> EvalResult:
    """Score `model` on `batches` of (images, labels, masks); see the module docstring.

    Args:
        model: A network built by attnviz (its blocks and stages are known).
        batches: (images, labels, masks) batches of held-out scenes.
        classes: Number of classes.
        tolerance: Pointing-game tolerance in input pixels (the standard protocol is reported beside it).
        cam: grad-cam method for the CAM baseline, or None.
        seed: Seed of the random maps, the shuffles and the probes.
        on_batch: Called with the number of scenes after each batch.
        upsample: "aligned" or "tiled" (baselines.UPSAMPLINGS), for every map alike.
        faith_n: Scenes (of the scoring half) for gate ablation and deletion/insertion; 0 skips both.
        steps: Steps of the deletion and insertion curves.
        ablations: Gate replacements (ablation.ABLATIONS).
        external: Maps from other tools: name -> (N, h, w), one per scene in order.
        batch_size: Images per forward pass of the faithfulness checks.
        on_phase: Called with a short description when a slow phase starts.
    """
    if upsample not in UPSAMPLINGS:
        raise ValueError(f"unknown upsampling {upsample!r}; expected one of {UPSAMPLINGS}")
    rng = np.random.default_rng(seed)
    got = _Collected()
    model.eval()
    with cell_cams(stage_outputs(model), model, cam) as cams:
        for images, labels, masks in batches:
            _one_batch(model, images, labels, masks, cams, got, rng, tolerance, upsample, external)
            if on_batch is not None:
                on_batch(labels.shape[0])
    labels_all = torch.cat(got.labels)
    seen = len(labels_all)
    side = min(got.masks[0].shape) if got.masks else 0
    half = seen // 2
    if on_phase is not None and got.vectors:
        on_phase("fitting the channel-weight probes")
    channel = _probes(model, got.vectors, got.pooled, labels_all.numpy(), classes, seed)
    best = _best(model, got, half, seen)
    result = EvalResult(
        got.correct / max(seen, 1),
        seen,
        classes,
        {name: {"stage": _stage_of(model, name), **s.summary()} for name, s in got.maps.items()},
        {stage: s.summary() for stage, s in sorted(got.cams.items())},
        got.baselines["random"].summary(),
        channel,
        cam,
        centre=got.baselines["centre"].summary(),
        protocols={**protocol_description(tolerance, side, upsample), "selection": _split_note(half, seen)},
        best=best,
        external={name: s.summary() for name, s in got.external.items()},
    )
    subset = slice(half, min(seen, half + faith_n))
    if faith_n > 0 and subset.stop > subset.start:
        images_all = torch.cat(got.images)
        if on_phase is not None:
            on_phase("gate ablation")
        result.ablation = gate_ablation(
            model, images_all[subset], labels_all[subset], modes=ablations, batch_size=batch_size, seed=seed
        )
        result.ablation["scenes_range"] = [subset.start, subset.stop]
        sources = _curve_sources(got, best, subset, upsample, seed, external or {})
        if sources:
            if on_phase is not None:
                on_phase("deletion and insertion curves")
            result.curves = {
                "scenes": subset.stop - subset.start,
                "scenes_range": [subset.start, subset.stop],
                "steps": steps,
                "sources": deletion_insertion(
                    model,
                    images_all[subset],
                    labels_all[subset],
                    sources,
                    steps=steps,
                    batch_size=batch_size,
                    seed=seed,
                ),
            }
    return result


def _one_batch(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    masks: torch.Tensor,
    cams: dict[int, Callable[[torch.Tensor, torch.Tensor], np.ndarray]],
    got: _Collected,
    rng: np.random.Generator,
    tolerance: int,
    upsample: str,
    external: dict[str, np.ndarray] | None,
) -> None:
    """Forward one batch under capture and score every map source on each of its scenes."""
    kinds = (*SPATIAL, "channel", "selection")
    with torch.no_grad(), capture(model, kinds=kinds) as rec, pooled_inputs(model, model.attnviz_blocks, got.pooled):
        logits = model(images)
    predicted = logits.argmax(1)
    got.correct += int((predicted == labels).sum())
    first = sum(len(part) for part in got.labels)
    got.images.append(images)
    got.labels.append(labels)
    for m in rec.of_kind("channel"):
        got.vectors.setdefault(m.name, []).append(channel_vector(m))
    for m in rec.of_kind("selection"):
        got.vectors.setdefault(m.name, []).append(selection_weights(m).reshape(labels.shape[0], -1))
    cam_cells = {stage: runner(images, predicted) for stage, runner in cams.items()}
    spatial_maps = [m for m in rec if m.kind in SPATIAL]
    for i in range(labels.shape[0]):
        mask = masks[i].numpy().astype(bool)
        got.masks.append(mask)
        target = Target.of(mask, tolerance)
        for name, cells in spatial_cells(spatial_maps, i, mask):
            got.cells.setdefault(name, []).append(cells)
            got.maps.setdefault(name, Scores()).add(to_scene(cells, mask.shape, upsample), target)
        for stage, cells in cam_cells.items():
            got.cells.setdefault(f"cam:{stage}", []).append(cells[i])
            got.cams.setdefault(stage, Scores()).add(to_scene(cells[i], mask.shape, upsample), target)
        for name, maps in (external or {}).items():
            got.external.setdefault(name, Scores()).add(to_scene(maps[first + i], mask.shape, upsample), target)
        got.baselines["random"].add(random_map(rng, mask.shape), target)
        got.baselines["centre"].add(centre_prior(mask.shape), target)


def _split_note(half: int, seen: int) -> str:
    return f"best map chosen on scenes 0-{half - 1} (pointing game, then AUROC) and scored on scenes {half}-{seen - 1}"


def _best(model: nn.Module, got: _Collected, half: int, seen: int) -> dict[str, Any] | None:
    """The map that localises best on the selection half, with it and its baselines scored on the other half."""
    scores = got.maps
    candidates = list(scores)
    if not candidates or half < 1 or seen - half < 1:
        return None
    selection, scoring = slice(0, half), slice(half, seen)

    def rank(name: str) -> tuple[float, float]:
        chosen = scores[name].summary(selection)
        return (np.nan_to_num(chosen["pointing"], nan=-1.0), np.nan_to_num(chosen["auroc"], nan=-1.0))

    name = max(candidates, key=rank)
    stage = _stage_of(model, name)
    cam = got.cams.get(stage)
    return {
        "map": name,
        "stage": stage,
        "scored_on": [half, seen],
        **scores[name].summary(scoring),
        "gradcam": cam.summary(scoring) if cam is not None else None,
        "centre": got.baselines["centre"].summary(scoring),
        "random": got.baselines["random"].summary(scoring),
    }


def _curve_sources(
    got: _Collected,
    best: dict[str, Any] | None,
    subset: slice,
    upsample: str,
    seed: int,
    external: dict[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """The maps whose order the deletion and insertion curves follow, at the scenes' resolution; none when there
    is neither an attention map with a place nor an external map."""
    size = got.masks[0].shape
    count = subset.stop - subset.start

    def drawn(cells: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack([to_scene(c, size, upsample) for c in cells])

    sources: dict[str, np.ndarray] = {}
    if best is not None:
        sources[f"attention {best['map']}"] = drawn(got.cells[best["map"]][subset])
        if f"cam:{best['stage']}" in got.cells:
            sources[f"gradcam stage {best['stage']}"] = drawn(got.cells[f"cam:{best['stage']}"][subset])
    sources.update({f"external {name}": drawn(maps[subset]) for name, maps in external.items()})
    if sources:
        rng = np.random.default_rng(seed + 1)
        sources["centre"] = np.broadcast_to(centre_prior(size), (count, *size))
        sources["random"] = np.stack([random_map(rng, size) for _ in range(count)])
    return sources


def _probes(
    model: nn.Module,
    vectors: dict[str, list[np.ndarray]],
    pooled: dict[str, list[np.ndarray]],
    labels: np.ndarray,
    classes: int,
    seed: int,
) -> dict[str, dict[str, Any]]:
    """Per channel map, the probe on its weights beside the probe on its block's pooled input features."""
    result = {}
    for name, parts in vectors.items():
        layer = _layer_of(model, name)
        inputs = pooled.get(layer) if layer is not None else None
        result[name] = {
            "probe_accuracy": linear_probe(np.concatenate(parts), labels, classes, seed=seed),
            "input_probe_accuracy": linear_probe(np.concatenate(inputs), labels, classes, seed=seed)
            if inputs
            else None,
            "chance": 1.0 / classes,
            "stage": _stage_of(model, name),
        }
    return result


def _layer_of(model: nn.Module, map_name: str) -> str | None:
    layer = map_name.split(":")[0]
    for path in model.attnviz_blocks:
        if layer == path or layer.startswith(path + "."):
            return path
    return None


def _stage_of(model: nn.Module, map_name: str) -> int | None:
    """The stage of the block a map comes from (its tap may sit in a submodule, e.g. `layer3.0.attn.attention`)."""
    layer = _layer_of(model, map_name)
    return model.attnviz_blocks[layer] if layer is not None else None
