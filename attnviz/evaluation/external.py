"""Maps made by other tools, scored on attnviz's held-out scenes; and the scenes themselves, for those tools.

The scenes file (`export_scenes`, `attnviz eval BLOCK --export-scenes FILE.npz`) holds scenes 0..N-1 of the test
split at one size: "inputs" (N, 3, S, S) float32, the normalised tensors the model sees (ImageNet mean and std),
"images" (N, S, S, 3) uint8 RGB, "labels" (N,) int64, "masks" (N, S, S) bool (the object's visible pixels) and
"classes" (the class names, in label order). Scene i is also `attnviz.data.SceneDataset("test", N, S)[i]`.

A maps file (`attnviz eval BLOCK --maps FILE.npz`) holds one array per map source, named as it should be reported
(e.g. "pytorch-grad-cam:layer4"), each (N, h, w) finite floats: one map per scene, in scene order, larger =
more important, at any resolution covering the whole scene (upsampled like attnviz's own maps).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from attnviz.errors import UsageError, option


def load_maps(path: Path, scenes: int) -> dict[str, np.ndarray]:
    """The map sources in a maps file, checked against the number of scenes scored."""
    try:
        with np.load(path, allow_pickle=False) as data:
            maps = {name: np.asarray(data[name]) for name in data.files}
    except (OSError, ValueError) as error:
        raise UsageError(
            f"cannot read {path} as a .npz of maps ({option('maps')}): {error}",
            "write it with numpy.savez(path, name=maps), maps shaped (N, h, w)",
        ) from error
    if not maps:
        raise UsageError(f"{path} holds no arrays ({option('maps')})", "save one (N, h, w) array per map source")
    for name, values in maps.items():
        if values.ndim != 3 or values.shape[0] != scenes:
            raise UsageError(
                f"maps {name!r} in {path} have shape {values.shape}, expected ({scenes}, h, w): one map per scene",
                f"score as many scenes as the file holds ({option('n')} {values.shape[0]})"
                if values.ndim == 3
                else "save one (h, w) map per scene, stacked",
            )
        if not np.issubdtype(values.dtype, np.number) or not np.isfinite(values).all():
            raise UsageError(f"maps {name!r} in {path} hold NaN, infinity or non-numbers", "save finite floats")
        maps[name] = values.astype(np.float32)
    return maps


def export_scenes(path: Path, scenes: int, size: int) -> Path:
    """Write scenes 0..scenes-1 of the test split at `size` px (the layout in the module docstring), atomically."""
    from attnviz.data.datasets import SceneDataset, class_names
    from attnviz.io.atomic import atomic_write

    inputs, labels, masks = _stacked(SceneDataset("test", scenes, size, augment=False))
    raw, _, _ = _stacked(SceneDataset("test", scenes, size, augment=False, normalise=False))
    images = np.clip(np.rint(raw.transpose(0, 2, 3, 1) * 255), 0, 255).astype(np.uint8)
    arrays = {
        "inputs": inputs,
        "images": images,
        "labels": labels,
        "masks": masks,
        "classes": np.array(class_names(), dtype=str),
    }
    return atomic_write(Path(path), lambda handle: np.savez_compressed(handle, **arrays))


def _stacked(dataset: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    items = [dataset[i] for i in range(len(dataset))]
    inputs = np.stack([image.numpy() for image, _, _ in items]).astype(np.float32)
    labels = np.array([label for _, label, _ in items], dtype=np.int64)
    masks = np.stack([mask.numpy() for _, _, mask in items]).astype(bool)
    return inputs, labels, masks
