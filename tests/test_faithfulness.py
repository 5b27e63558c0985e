"""Every eval protocol on hand-made maps with known answers; gate ablation and deletion/insertion on toy models
where the answer is known; `eval --export-scenes` and `eval --maps` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from attnviz.blocks.base import Tap, block_class, create_block
from attnviz.blocks.catalog import CATALOG
from attnviz.errors import UsageError
from attnviz.evaluation.ablation import ABLATIONS, ablated, gate_ablation
from attnviz.evaluation.baselines import centre_prior, to_scene
from attnviz.evaluation.curves import area, deletion_insertion
from attnviz.evaluation.external import load_maps
from attnviz.evaluation.protocols import (
    Scores,
    Target,
    auroc,
    energy_ratio,
    energy_share,
    pointing_hit,
    standard_tolerance,
)
from tests.cli_utils import run


def _square(size: int, top: int, left: int, side: int) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[top : top + side, left : left + side] = True
    return mask


# ---------------------------------------------------------------------------------------------- protocols


def test_pointing_game_hits_inside_the_tolerance_and_misses_beyond_it() -> None:
    mask = _square(20, 8, 8, 4)  # rows and columns 8..11
    heat = np.zeros((20, 20), dtype=np.float32)
    heat[9, 9] = 1.0
    assert pointing_hit(heat, Target.of(mask, 0).tolerant)
    heat[:] = 0
    heat[9, 14] = 1.0  # 3 px right of the mask
    assert not pointing_hit(heat, Target.of(mask, 2).tolerant)
    assert pointing_hit(heat, Target.of(mask, 3).tolerant)


def test_any_maximal_pixel_counts_where_the_first_maximum_would_miss() -> None:
    mask = _square(20, 12, 12, 4)
    heat = np.zeros((20, 20), dtype=np.float32)
    heat[0, 0] = heat[13, 13] = 1.0  # a tie: the first in raster order is off the object
    assert int(np.argmax(heat)) == 0
    assert pointing_hit(heat, Target.of(mask, 0).tolerant)
    strip = np.tile(np.linspace(0, 1, 20, dtype=np.float32), (20, 1))  # flat down each column, peak in the last
    assert not pointing_hit(strip, Target.of(mask, 0).tolerant)  # the object does not reach the last column
    assert pointing_hit(strip, Target.of(_square(20, 12, 16, 4), 0).tolerant)


def test_a_constant_map_is_never_a_hit_even_when_the_object_covers_the_scene() -> None:
    mask = np.ones((10, 10), dtype=bool)
    mask[0, 0] = False
    for value in (0.0, 0.5, 1e6):
        heat = np.full((10, 10), value, dtype=np.float32)
        assert not pointing_hit(heat, Target.of(mask, 4).tolerant)
        assert energy_share(heat, mask) == pytest.approx(mask.mean())  # spread evenly
        assert energy_ratio(heat, mask) == pytest.approx(1.0)
        assert auroc(heat, mask) == pytest.approx(0.5)


def test_empty_masks_are_left_out_and_counted() -> None:
    scores = Scores()
    hit_mask = _square(16, 4, 4, 4)
    heat = hit_mask.astype(np.float32)
    scores.add(heat, Target.of(hit_mask, 0))
    scores.add(heat, Target.of(np.zeros((16, 16), dtype=bool), 0))  # object wholly hidden
    miss = np.zeros((16, 16), dtype=np.float32)
    miss[15, 15] = 1.0
    scores.add(miss, Target.of(hit_mask, 0))
    summary = scores.summary()
    assert summary["n"] == 2 and summary["empty_masks"] == 1
    assert summary["pointing"] == pytest.approx(0.5)
    assert scores.summary(slice(0, 2))["pointing"] == pytest.approx(1.0)  # a part of the scenes, by index
    assert scores.summary(slice(1, 2))["n"] == 0 and np.isnan(scores.summary(slice(1, 2))["pointing"])


def test_energy_and_auroc_on_known_maps() -> None:
    mask = _square(10, 0, 0, 5)  # a quarter of the scene
    perfect = mask.astype(np.float32)
    assert energy_share(perfect, mask) == pytest.approx(1.0)
    assert energy_ratio(perfect, mask) == pytest.approx(4.0)
    assert auroc(perfect, mask) == pytest.approx(1.0)
    assert auroc(1 - perfect, mask) == pytest.approx(0.0)
    half_in = perfect + (~mask) * 1.0 / 3  # mass 25 inside, 75 * 1/3 = 25 outside, before the min is subtracted
    assert energy_share(half_in, mask) == pytest.approx(1.0)  # the min (1/3) is subtracted first
    stray = perfect.copy()
    stray[9, 9] = 1.0  # one pixel of mass off the object
    assert energy_share(stray, mask) == pytest.approx(25 / 26)


def test_standard_tolerance_is_15_px_at_224_scaled_to_the_scene() -> None:
    assert [standard_tolerance(side) for side in (224, 448, 96, 64)] == [15, 30, 6, 4]
    target = Target.of(_square(96, 40, 40, 10), 4)
    heat = np.zeros((96, 96), dtype=np.float32)
    heat[45, 55] = 1.0  # 6 px right of the mask: a hit with 6 px, not with 4
    scores = Scores()
    scores.add(heat, target)
    assert scores.summary()["pointing"] == 0.0 and scores.summary()["pointing_std"] == 1.0


def test_the_centre_prior_ties_its_four_central_pixels() -> None:
    prior = centre_prior((8, 8))
    peaks = np.argwhere(prior == prior.max())
    assert sorted(map(tuple, peaks)) == [(3, 3), (3, 4), (4, 3), (4, 4)]
    assert pointing_hit(prior, _square(8, 4, 4, 1))  # only one of the four lies on the object


def test_upsampling_conventions_place_cell_centres_where_they_say() -> None:
    cells = np.array([[0.0, 1.0]], dtype=np.float32)  # 1 x 2 cells over 8 x 8 pixels
    aligned = to_scene(cells, (8, 8), "aligned")  # cell j centred on pixel 4 j
    tiled = to_scene(cells, (8, 8), "tiled")  # cell j centred on 4 j + 2
    assert aligned[0, 0] == 0.0 and aligned[0, 4] == 1.0 and aligned[0, 2] == pytest.approx(0.5)
    assert tiled[0, 1] == 0.0 and tiled[0, 6] == 1.0 and tiled[0, 4] == pytest.approx(0.625)
    assert np.array_equal(to_scene(np.eye(8, dtype=np.float32), (8, 8), "tiled"), np.eye(8))  # scene size: as is


# ---------------------------------------------------------------------------------------------- curves


def test_area_of_known_curves() -> None:
    assert area(np.linspace(1, 0, 11)) == pytest.approx(0.5)
    assert area(np.ones(5)) == pytest.approx(1.0)
    assert area(np.array([1.0, 0.0, 0.0])) == pytest.approx(0.25)


class _RegionReader(nn.Module):
    """Logits (10 * mean of channel 0 over the top-left 4 x 4 of an 8 x 8 scene, 0): only that region matters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        evidence = 10 * x[:, 0, :4, :4].mean(dim=(1, 2))
        return torch.stack([evidence, torch.zeros_like(evidence)], dim=1)


def test_deletion_follows_the_map_that_finds_the_evidence() -> None:
    images = torch.zeros(3, 3, 8, 8)
    images[:, 0, :4, :4] = 1.0
    labels = torch.zeros(3, dtype=torch.long)
    right = np.broadcast_to(_square(8, 0, 0, 4).astype(np.float32), (3, 8, 8))
    maps = {"right": right, "reversed": 1 - right}
    result = deletion_insertion(_RegionReader(), images, labels, maps, steps=4, batch_size=2)
    full = float(torch.sigmoid(torch.tensor(10.0)))
    # the region is the first quarter of the right order and the last quarter of the reversed one
    assert result["right"]["deletion"] == pytest.approx(((full + 0.5) / 2 + 3 * 0.5) / 4, abs=1e-5)
    assert result["reversed"]["deletion"] == pytest.approx((3 * full + (full + 0.5) / 2) / 4, abs=1e-5)
    assert result["right"]["deletion_curve"][1] == pytest.approx(0.5, abs=1e-4)
    assert result["right"]["insertion"] > result["reversed"]["insertion"]
    assert result["right"]["insertion_curve"][-1] == pytest.approx(full, abs=1e-4)


# ---------------------------------------------------------------------------------------------- ablation


class _GatedNet(nn.Module):
    """x * gate, gate = sigmoid(weight * channel 0 + bias), then a head reading channel 0's mean."""

    def __init__(self, weight: float, bias: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, 0] = weight
            self.conv.bias.fill_(bias)
        self.tap = Tap("spatial", ("batch", "height", "width"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.tap(torch.sigmoid(self.conv(x)).squeeze(1))
        evidence = 4 * (x * gate[:, None])[:, 0].mean(dim=(1, 2))
        return torch.stack([evidence, -evidence], dim=1)


def _scenes() -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.zeros(4, 3, 6, 6)
    images[:, 0, 1:4, 1:4] = 1.0
    return images, torch.zeros(4, dtype=torch.long)


def test_ablating_a_gate_that_is_always_open_changes_nothing() -> None:
    images, labels = _scenes()
    result = gate_ablation(_GatedNet(0.0, 100.0), images, labels, batch_size=3)  # sigmoid(100) == 1 in float32
    assert set(result["layers"]) == {""} and result["modes"] == list(ABLATIONS)
    for drops in (*result["layers"].values(), result["all"]):
        for mode in ABLATIONS:
            assert drops[mode] == {"prob_drop": 0.0, "acc_drop": 0.0}


def test_ablating_a_gate_that_hides_the_evidence_raises_the_true_class() -> None:
    images, labels = _scenes()
    net = _GatedNet(-20.0, 5.0)  # closes on the object (channel 0 = 1), open on the background
    result = gate_ablation(net, images, labels, batch_size=4)
    assert result["all"]["one"]["prob_drop"] < -0.2  # opening the gate shows the object: the probability rises
    assert result["all"]["mean"]["prob_drop"] < 0
    with ablated(net, None, "shuffle", seed=1) as paths, torch.no_grad():
        shuffled = net(images)
    assert paths == ["tap"] and not torch.equal(shuffled, net(images))


@pytest.mark.parametrize("name", [n for n in CATALOG if CATALOG[n].kinds])
def test_every_block_applies_what_its_taps_return(name: str) -> None:
    """A forward hook that replaces a tap's output changes the block's output: the block uses the tapped value."""
    block = create_block(name, 16).eval()
    inputs = block_class(name).example_inputs(2, 16, 8, 8)
    with torch.no_grad():
        for parameter in block.parameters():  # gains that start at 0 (DANet's alpha, beta) hide what is applied
            if parameter.numel() == 1 and float(parameter) == 0.0:
                parameter.fill_(0.5)
        plain = _flat(block(*inputs))
        changed = []
        for mode in ABLATIONS:
            with ablated(block, None, mode, seed=3):
                changed.append(not torch.allclose(_flat(block(*inputs)), plain, atol=1e-6))
    assert any(changed), f"{name}: replacing its gates never changed the output"


def _flat(output: object) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output.flatten()
    return torch.cat([_flat(part) for part in (output.values() if isinstance(output, dict) else output)])


def test_an_unknown_ablation_is_refused() -> None:
    with pytest.raises(UsageError, match="unknown ablation 'zero'"), ablated(_GatedNet(0, 0), None, "zero"):
        pass


# ---------------------------------------------------------------------------------------------- other tools' maps


def test_maps_files_are_checked(tmp_path: Path) -> None:
    good = tmp_path / "good.npz"
    np.savez(good, tool=np.zeros((3, 4, 4)))
    assert load_maps(good, 3)["tool"].shape == (3, 4, 4)
    with pytest.raises(UsageError, match=r"expected \(5, h, w\)"):
        load_maps(good, 5)
    bad = tmp_path / "bad.npz"
    np.savez(bad, tool=np.full((3, 4, 4), np.nan))
    with pytest.raises(UsageError, match="NaN"):
        load_maps(bad, 3)


def test_eval_json_carries_ablation_curves_protocols_and_scores_other_tools_maps(tmp_path: Path) -> None:
    scenes = tmp_path / "scenes.npz"
    code, _, err = run("eval", "cbam", "--n", "6", "--export-scenes", str(scenes))
    assert code == 0, err
    with np.load(scenes) as data:
        assert data["inputs"].shape == (6, 3, 96, 96) and data["images"].dtype == np.uint8
        masks, labels, fifth = data["masks"], data["labels"], data["inputs"][5]
        assert masks.shape == (6, 96, 96) and labels.shape == (6,) and len(data["classes"]) == 10
    from attnviz.data.datasets import SceneDataset

    image, label, mask = SceneDataset("test", 6, 96)[5]
    assert label == labels[5] and np.array_equal(mask.numpy(), masks[5]) and np.array_equal(image.numpy(), fifth)
    maps = tmp_path / "maps.npz"
    np.savez(maps, masks=masks.astype(np.float32), flat=np.ones((6, 7, 7)))
    args = ["--n", "6", "--faith-n", "3", "--steps", "2", "--batch-size", "3", "--maps", str(maps), "--json"]
    code, stdout, err = run("eval", "cbam", *args)
    assert code == 0, err
    result = json.loads(stdout)
    external = result["external"]
    assert external["masks"]["pointing"] == 1.0 and external["masks"]["auroc"] == 1.0
    assert external["flat"]["pointing"] == 0.0 and external["flat"]["pointing_std"] == 0.0  # constant: no hit
    assert result["protocols"]["pointing"]["tolerance_px"] == 4
    assert result["protocols"]["pointing_std"]["tolerance_px"] == 6
    assert result["protocols"]["upsample"] == "aligned"
    best = result["best"]
    assert best["scored_on"] == [3, 6] and {"pointing", "pointing_std", "energy_pointing"} <= set(best)
    assert best["gradcam"] is not None and best["centre"]["n"] == 3
    ablation = result["ablation"]
    assert ablation["scenes"] == 3 and len(ablation["layers"]) == 8
    assert all(set(drops) == set(ABLATIONS) for drops in ablation["layers"].values())
    sources = result["curves"]["sources"]
    assert {"centre", "random", "external masks", "external flat", f"attention {best['map']}"} <= set(sources)
    assert all(0 <= s["deletion"] <= 1 and 0 <= s["insertion"] <= 1 for s in sources.values())
    assert all("input_probe_accuracy" in c for c in result["channel"].values())


def test_nam_taps_the_gate_it_applies_beside_its_static_weights() -> None:
    block = create_block("nam", 6).eval()
    with torch.no_grad():
        block.norm.weight.copy_(torch.tensor([1.0, -2.0, 0.5, -0.5, 0.1, 3.0]))
        block.norm.running_mean.normal_()
    x = torch.randn(2, 6, 4, 5)
    with ablated(block, None, "mean") as paths:  # a no-op hook first, to know both taps are there
        assert paths == ["tap", "gate_tap"]
    from attnviz.capture import capture

    with torch.no_grad(), capture(block) as rec:
        out = block(x)
    static, gate = rec.maps
    assert (static.label, gate.label, gate.kind) == ("channel", "gate", "spatial")
    weights = static.tensor[:, :, None, None]
    torch.testing.assert_close(gate.tensor, torch.sigmoid(block.norm(x) * weights))
    torch.testing.assert_close(out, gate.tensor * x)
    assert gate.tensor.std() > 0  # unlike the static weights, the applied gate varies with the input
    with ablated(block, None, "one"), torch.no_grad():
        torch.testing.assert_close(block(x), x)  # gate = 1: the block passes its input through
