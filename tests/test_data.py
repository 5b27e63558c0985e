"""Procedural scenes: determinism, class balance, exact masks and boxes, visible objects, splits, torch datasets."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from itertools import combinations

import numpy as np
import pytest
from PIL import Image

from attnviz.data import (
    SHAPES,
    SPLITS,
    box_iou,
    make_detection_scene,
    make_scene,
    save_sample,
    seed_for,
    shape_mask,
    tight_box,
)
from attnviz.data.backgrounds import background, random_stroke
from attnviz.errors import UnknownNameError, UsageError

N_CLASSIFICATION = 200
N_DETECTION = 60


@pytest.fixture(scope="module")
def scenes():
    return [make_scene(seed_for("test", i)) for i in range(N_CLASSIFICATION)]


@pytest.fixture(scope="module")
def detection_scenes():
    return [make_detection_scene(seed_for("test", i)) for i in range(N_DETECTION)]


def reference_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(mask)
    return int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1


def ring_around(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels within `width` (chessboard distance) of the mask, outside it."""
    padded = np.pad(mask, width)
    grown = np.zeros_like(mask)
    h, w = mask.shape
    for dy in range(2 * width + 1):
        for dx in range(2 * width + 1):
            grown |= padded[dy : dy + h, dx : dx + w]
    return grown & ~mask


def touches_border(mask: np.ndarray) -> bool:
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


# --- determinism ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [make_scene, make_detection_scene])
def test_same_seed_same_scene(make) -> None:
    first, second = make(12345), make(12345)
    assert np.array_equal(np.asarray(first.image), np.asarray(second.image))
    assert np.array_equal(first.mask, second.mask)
    assert (first.label, first.box, first.shape) == (second.label, second.box, second.shape)
    assert [(o.label, o.box) for o in first.objects] == [(o.label, o.box) for o in second.objects]
    for a, b in zip(first.objects, second.objects, strict=True):
        assert np.array_equal(a.mask, b.mask) and np.array_equal(a.full_mask, b.full_mask)


@pytest.mark.parametrize("make", [make_scene, make_detection_scene])
def test_different_seeds_differ(make) -> None:
    images = [np.asarray(make(seed).image) for seed in range(4)]
    for a, b in combinations(images, 2):
        assert not np.array_equal(a, b)


def test_generation_leaves_global_random_state_alone() -> None:
    np.random.seed(7)
    expected = np.random.random()
    np.random.seed(7)
    make_scene(3)
    make_detection_scene(3)
    assert np.random.random() == expected


# --- classification scenes ------------------------------------------------------------------------------------


def test_every_class_appears_roughly_uniformly(scenes) -> None:
    counts = Counter(scene.label for scene in scenes)
    expected = N_CLASSIFICATION / len(SHAPES)
    assert set(counts) == set(range(len(SHAPES)))
    assert all(0.4 * expected <= count <= 1.8 * expected for count in counts.values()), counts
    assert all(SHAPES[scene.label] == scene.shape for scene in scenes)


def test_scene_fields(scenes) -> None:
    for scene in scenes:
        assert scene.image.mode == "RGB" and scene.image.size == (128, 128)
        assert scene.mask.shape == (128, 128) and scene.mask.dtype == bool
        assert len(scene.objects) == 1
        obj = scene.objects[0]
        assert (obj.label, obj.shape, obj.box) == (scene.label, scene.shape, scene.box)
        assert obj.mask is scene.mask


def test_masks_non_empty_and_boxes_tight(scenes) -> None:
    for scene in scenes:
        assert scene.mask.any()
        assert scene.box == reference_box(scene.mask)


def test_object_fully_inside_image(scenes) -> None:
    for scene in scenes:
        assert not touches_border(scene.objects[0].full_mask), scene.seed


def test_object_size_range(scenes) -> None:
    sides = [max(x1 - x0, y1 - y0) / 128 for x0, y0, x1, y1 in (reference_box(s.objects[0].full_mask) for s in scenes)]
    assert 0.16 <= min(sides) < 0.25
    assert 0.38 < max(sides) <= 0.47


def test_object_pixels_carry_the_object_colour(scenes) -> None:
    """The mask is aligned with the drawing: every visible object pixel is the object colour, shaded and noisy."""
    for scene in scenes:
        pixels = np.asarray(scene.image, dtype=np.float32)[scene.mask]
        deviation = np.abs(pixels - np.asarray(scene.objects[0].colour, dtype=np.float32))
        assert deviation.max() <= 70, scene.seed  # shading <= 20% of 255, pixel noise <= 13


def test_object_stands_out_from_its_surroundings(scenes) -> None:
    contrasts = []
    for scene in scenes:
        pixels = np.asarray(scene.image, dtype=np.float32)
        ring = ring_around(scene.objects[0].full_mask, 3)
        contrasts.append(np.linalg.norm(pixels[scene.mask].mean(axis=0) - pixels[ring].mean(axis=0)))
    assert np.mean(np.array(contrasts) > 50) >= 0.95, np.percentile(contrasts, [0, 5, 50])


def test_distractors_hide_at_most_15_percent(scenes) -> None:
    hidden = []
    for scene in scenes:
        obj = scene.objects[0]
        assert not (obj.mask & ~obj.full_mask).any()
        hidden.append(1 - obj.mask.sum() / obj.full_mask.sum())
        assert hidden[-1] == pytest.approx(obj.hidden_fraction)
    assert max(hidden) <= 0.15
    assert any(h > 0 for h in hidden)  # strokes do pass over objects


def test_backgrounds_are_not_flat() -> None:
    for seed in range(30):
        pixels = np.asarray(background(np.random.default_rng(seed), 128), dtype=np.float32)
        assert pixels.reshape(-1, 3).std(axis=0).max() > 8, seed


@pytest.mark.parametrize("seed", [-1, 1.5, True])
def test_bad_seeds_are_refused(seed) -> None:
    with pytest.raises(UsageError, match="seed"):
        make_scene(seed)


def test_chosen_classes_index_labels() -> None:
    labels = Counter()
    for seed in range(40):
        scene = make_scene(seed, 64, classes=("ring", "star"))
        assert scene.shape == ("ring", "star")[scene.label]
        labels[scene.label] += 1
    assert set(labels) == {0, 1}


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"size": 16}, UsageError),
        ({"size": 128.0}, UsageError),
        ({"classes": ()}, UsageError),
        ({"classes": ("circle", "circle")}, UsageError),
        ({"classes": "circle"}, UsageError),
        ({"classes": ("circle", "oval")}, UnknownNameError),
    ],
)
def test_bad_arguments_are_refused(kwargs, error) -> None:
    with pytest.raises(error):
        make_scene(0, **kwargs)


# --- shapes and strokes ---------------------------------------------------------------------------------------


def test_canonical_shapes_are_distinct() -> None:
    masks = {name: shape_mask(name, 96, (48, 48), 40) for name in SHAPES}
    for name, mask in masks.items():
        assert mask.any() and not touches_border(mask), name
    for a, b in combinations(SHAPES, 2):
        union = (masks[a] | masks[b]).sum()
        assert (masks[a] & masks[b]).sum() / union < 0.9, (a, b)
    assert not masks["ring"][48, 48] and masks["circle"][48, 48]  # the ring has its hole


def test_shape_mask_rejects_unknown_names() -> None:
    with pytest.raises(UnknownNameError, match="oval"):
        shape_mask("oval", 32, (16, 16), 10)


def test_strokes_are_open_curves() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        stroke = random_stroke(rng, 128)
        assert stroke.kind in ("line", "arc", "scribble")
        if stroke.kind == "arc":
            assert 30 <= stroke.end - stroke.start <= 220


# --- detection scenes -----------------------------------------------------------------------------------------


def test_detection_object_counts(detection_scenes) -> None:
    counts = Counter(len(scene.objects) for scene in detection_scenes)
    assert min(counts) >= 1 and max(counts) <= 6
    assert len(counts) >= 4
    assert all(len(make_detection_scene(seed, 128, max_objects=2).objects) <= 2 for seed in range(10))


def test_detection_sizes_span_small_to_large(detection_scenes) -> None:
    sides = [max(o.box[2] - o.box[0], o.box[3] - o.box[1]) for s in detection_scenes for o in s.objects]
    assert min(sides) < 16
    assert max(sides) >= 0.3 * 256


def test_detection_boxes_tight_and_apart(detection_scenes) -> None:
    for scene in detection_scenes:
        assert scene.image.size == (256, 256)
        for obj in scene.objects:
            assert obj.mask.any() and obj.box == reference_box(obj.mask)
            assert not touches_border(obj.full_mask)
            assert not (obj.mask & ~obj.full_mask).any()
            assert obj.hidden_fraction <= 0.3 + 0.15
            assert obj.shape == SHAPES[obj.label]
        for a, b in combinations(scene.objects, 2):
            assert box_iou(a.box, b.box) <= 0.3
            assert not (a.mask & b.mask).any()  # each pixel belongs to one object at most


def test_detection_main_object_is_the_largest(detection_scenes) -> None:
    for scene in detection_scenes:
        largest = max(scene.objects, key=lambda obj: obj.mask.sum())
        assert scene.mask.sum() == largest.mask.sum() and scene.label == largest.label
        assert scene.box == tight_box(scene.mask)


def test_detection_rejects_bad_arguments() -> None:
    with pytest.raises(UsageError):
        make_detection_scene(0, max_objects=0)
    with pytest.raises(UsageError):
        make_detection_scene(0, 64, min_side=40)


def test_box_helpers() -> None:
    assert tight_box(np.zeros((4, 4), bool)) == (0, 0, 0, 0)
    assert box_iou((0, 0, 2, 2), (1, 0, 3, 2)) == pytest.approx(1 / 3)
    assert box_iou((0, 0, 1, 1), (1, 1, 2, 2)) == 0.0


# --- splits ---------------------------------------------------------------------------------------------------


def test_split_seed_ranges_are_disjoint() -> None:
    n = 10**6
    rng = np.random.default_rng(0)
    spans = []
    for split in SPLITS:
        first = seed_for(split, 0)
        # seed_for(split, i) == first + i over the whole range, so each split's seeds form one interval...
        for index in [*rng.integers(0, n, 50).tolist(), n - 1]:
            assert seed_for(split, index) == first + index
        spans.append((first, first + n - 1))
    # ...and the intervals do not overlap (nor the full 2**40-index ranges).
    for (a0, a1), (b0, b1) in combinations(spans, 2):
        assert a1 < b0 or b1 < a0
    assert seed_for("train", 2**40 - 1) < seed_for("val", 0) < seed_for("test", 0)


@pytest.mark.parametrize(("split", "index"), [("dev", 0), ("train", -1), ("train", 2**40), ("train", 1.0)])
def test_seed_for_refuses_bad_input(split, index) -> None:
    with pytest.raises(UsageError):
        seed_for(split, index)


# --- files ----------------------------------------------------------------------------------------------------


def test_save_sample(tmp_path) -> None:
    scene = make_detection_scene(5, 128)
    paths = save_sample(scene, tmp_path / "out", "scene5")
    assert [p.name for p in paths] == ["scene5.png", "scene5_mask.png", "scene5.json"]
    assert np.array_equal(np.asarray(Image.open(paths[0])), np.asarray(scene.image))
    levels = np.asarray(Image.open(paths[1]))
    record = json.loads(paths[2].read_text())
    assert len(record["objects"]) == len(scene.objects)
    for obj, entry in zip(scene.objects, record["objects"], strict=True):
        assert entry["box"] == list(obj.box) and entry["label"] == obj.label and entry["shape"] == obj.shape
        assert np.array_equal(levels == entry["mask_value"], obj.mask)
    assert not list((tmp_path / "out").glob(".*"))  # no temporary files left behind


def test_save_sample_refuses_paths_as_stems(tmp_path) -> None:
    with pytest.raises(UsageError):
        save_sample(make_scene(0, 64), tmp_path, "a/b")


# --- torch datasets -------------------------------------------------------------------------------------------


def test_importing_the_package_does_not_import_torch() -> None:
    code = "import sys, attnviz.data; attnviz.data.make_scene(0, 64); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_scene_dataset_items() -> None:
    import torch

    from attnviz.data.datasets import SceneDataset
    from attnviz.images import preprocess

    dataset = SceneDataset("val", length=5, size=96)
    assert len(dataset) == 5
    image, label, mask = dataset[3]
    scene = make_scene(seed_for("val", 3), 96)
    assert image.shape == (3, 96, 96) and image.dtype == torch.float32
    assert mask.shape == (96, 96) and mask.dtype == torch.bool
    assert isinstance(label, int) and label == scene.label
    assert torch.equal(mask, torch.from_numpy(scene.mask))
    expected, _ = preprocess(scene.image, size=96)
    assert torch.allclose(image, expected[0], atol=1e-6)
    with pytest.raises(IndexError):
        dataset[5]


def test_scene_dataset_flip_moves_image_and_mask_together() -> None:
    import torch

    from attnviz.data.datasets import SceneDataset

    plain = SceneDataset("train", length=8, size=64, normalise=False)
    flipping = SceneDataset("train", length=8, size=64, normalise=False, augment=True)
    flips = 0
    for i in range(8):
        image, label, mask = plain[i]
        aug_image, aug_label, aug_mask = flipping[i]
        assert aug_label == label and 0 <= float(aug_image.min()) and float(aug_image.max()) <= 1
        if not torch.equal(aug_mask, mask):
            flips += 1
            assert torch.equal(aug_mask, mask.flip(-1)) and torch.equal(aug_image, image.flip(-1))
    assert flips > 0


def test_detection_dataset_and_collate() -> None:
    import torch

    from attnviz.data.datasets import DetectionDataset, collate_detection

    dataset = DetectionDataset("val", length=4, size=128, with_masks=True, augment=True)
    batch = [dataset[i] for i in range(4)]
    images, targets = collate_detection(batch)
    assert images.shape == (4, 3, 128, 128) and images.dtype == torch.float32
    for i, target in enumerate(targets):
        scene = make_detection_scene(seed_for("val", i), 128)
        n = len(scene.objects)
        assert target["boxes"].shape == (n, 4) and target["boxes"].dtype == torch.float32
        assert target["labels"].tolist() == [obj.label for obj in scene.objects]
        assert target["masks"].shape == (n, 128, 128) and target["masks"].dtype == torch.bool
        for box, mask in zip(target["boxes"].tolist(), target["masks"], strict=True):
            assert tuple(int(v) for v in box) == tight_box(mask.numpy())  # flipped or not, boxes follow masks
    with pytest.raises(UsageError):
        collate_detection([])
