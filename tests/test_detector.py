"""The ASFF detector end to end: shapes, taps, targets, loss, decode, det.pt, fit-det / eval-det / asff-weights, the
error cases, and ASFF found by structure in a YOLO-style model saved with torch.save(model).

Everything runs on one thread with tiny detectors (16 channels, 64-128 px inputs, a few scenes).
"""

from __future__ import annotations

import json
import pathlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from torch import nn
from typer.testing import CliRunner

from attnviz.capture import capture
from attnviz.cli.app import app
from attnviz.data.datasets import DetectionDataset, collate_detection
from attnviz.detection.files import detector_checkpoint, detector_from_checkpoint
from attnviz.detection.foreign import attach_level_taps
from attnviz.detection.loss import build_targets, detector_loss
from attnviz.detection.metrics import average_precision, mean_in_box, rank_average, spearman
from attnviz.detection.model import Detector, DetectorConfig, assign_level, decode

runner = CliRunner()
TINY = [
    "--size",
    "64",
    "--train-size",
    "4",
    "--val-size",
    "2",
    "--batch-size",
    "2",
    "--workers",
    "0",
    "--device",
    "cpu",
]
SMALL = ["--backbone", "mobilenet_v2", "--channels", "16"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def one_line_error(code: int, err: str, expected_code: int, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == expected_code, err
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    for needle in needles:
        assert needle in lines[0], err


def tiny(backbone: str = "mobilenet_v2", *, asff: bool = True, size: int = 64) -> Detector:
    return Detector(DetectorConfig(backbone=backbone, channels=16, input_size=size, asff=asff)).eval()


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wide photo: a gradient with a bright square and a small dark disk."""
    yy, xx = np.mgrid[0:90, 0:160]
    rgb = np.stack([xx / 160 * 255, yy / 90 * 255, np.full_like(xx, 90)], axis=-1)
    rgb[20:60, 90:130] = (250, 240, 40)
    rgb[(xx - 40) ** 2 + (yy - 60) ** 2 < 60] = (20, 20, 20)
    path = tmp_path_factory.mktemp("photos") / "wide.png"
    Image.fromarray(rgb.astype(np.uint8)).save(path)
    return path


# ------------------------------------------------------------------------------------------------ the network


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet_v2"])
def test_forward_shapes_at_128_and_on_odd_non_square_inputs(backbone: str) -> None:
    model = tiny(backbone, size=128)
    with torch.no_grad():
        outputs = model(torch.randn(2, 3, 128, 128))
        assert [tuple(t.shape) for t in outputs[0]] == [(2, 10, 16, 16), (2, 2, 16, 16), (2, 2, 16, 16)]
        assert [tuple(out[0].shape[-2:]) for out in outputs] == [(16, 16), (8, 8), (4, 4)]
        odd = model(torch.randn(1, 3, 100, 140))
    grids = [tuple(out[0].shape[-2:]) for out in odd]
    assert grids[0] == (13, 18) and all(g[0] >= 1 and g[1] >= 1 for g in grids)
    (found,) = decode(odd, (140, 100), score=0.0, max_detections=50)
    boxes = found["boxes"]
    assert len(boxes) == 50
    assert boxes[:, 0].min() >= 0 and boxes[:, 1].min() >= 0 and boxes[:, 2].max() <= 140 and boxes[:, 3].max() <= 100
    assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()


def test_three_level_taps_fire_and_each_sums_to_one_over_levels() -> None:
    model = tiny(size=128)
    with torch.no_grad(), capture(model) as rec:
        model(torch.randn(2, 3, 96, 128))
    assert [(m.layer, m.kind, m.shape) for m in rec] == [
        ("asff.0", "level", (2, 3, 12, 16)),
        ("asff.1", "level", (2, 3, 6, 8)),
        ("asff.2", "level", (2, 3, 3, 4)),
    ]
    for m in rec:
        assert m.axes == ("batch", "level", "height", "width") and m.norm == "softmax"
        assert (m.tensor >= 0).all()
        torch.testing.assert_close(m.tensor.sum(1), torch.ones(m.shape[0], *m.shape[2:]))


def test_without_asff_nothing_is_tapped() -> None:
    model = tiny(asff=False)
    with torch.no_grad(), capture(model) as rec:
        model(torch.randn(1, 3, 64, 64))
    assert len(rec) == 0 and model.attnviz_blocks == {}


# ------------------------------------------------------------------------------------------ targets and decode


def test_targets_decode_back_to_the_boxes_on_their_levels() -> None:
    config = DetectorConfig(channels=16, input_size=128)
    boxes = torch.tensor([[10.0, 20.0, 22.0, 30.0], [40.0, 40.0, 90.0, 80.0], [2.0, 30.0, 125.0, 110.0]])
    target = {"boxes": boxes, "labels": torch.tensor([3, 1, 7])}
    grids = [(16, 16), (8, 8), (4, 4)]
    levels = build_targets([target], grids, (128, 128), config)
    assert [assign_level(float(max(b[2] - b[0], b[3] - b[1])), config) for b in boxes] == [0, 1, 2]
    assert [len(t.index) for t in levels] == [1, 1, 1]
    outputs = []
    for t in levels:
        heat = torch.where(t.heatmap >= 1, 8.0, -8.0)
        size, offset = torch.zeros(1, 2, *heat.shape[-2:]), torch.zeros(1, 2, *heat.shape[-2:])
        b, row, col = t.index[0]
        size[b, :, row, col], offset[b, :, row, col] = t.size[0], t.offset[0]
        outputs.append((heat, size, offset))
    (found,) = decode(outputs, (128, 128), score=0.5)
    order = found["labels"].argsort(descending=True)  # labels 7, 3, 1 -> the boxes 2, 0, 1
    torch.testing.assert_close(found["boxes"][order], boxes[[2, 0, 1]], atol=1e-3, rtol=0)
    assert found["levels"][order].tolist() == [2, 0, 1]
    loss, parts = detector_loss(outputs, levels)
    assert parts["size"] < 1e-5 and parts["offset"] < 1e-5 and loss.item() < 0.1


def test_decode_suppresses_neighbouring_peaks_and_overlapping_boxes() -> None:
    heat = torch.full((1, 2, 8, 8), -10.0)
    heat[0, 0, 3, 3], heat[0, 0, 3, 4] = 4.0, 3.0  # neighbours: the 3x3 max-pool keeps the stronger only
    heat[0, 1, 3, 3] = 2.0  # same place, another class: kept
    size = torch.full((1, 2, 8, 8), float(np.log(2.0)))
    coarse_heat = torch.full((1, 2, 4, 4), -10.0)
    coarse_heat[0, 0, 1, 1] = 3.5  # the same box from a coarser level, same class: batched NMS drops it
    coarse_offset = torch.full((1, 2, 4, 4), 0.25)  # centre (1.75 cells) * 16 px = 28 px, side 1 cell = 16 px
    outputs = [(heat, size, torch.zeros(1, 2, 8, 8)), (coarse_heat, torch.zeros(1, 2, 4, 4), coarse_offset)]
    (found,) = decode(outputs, (64, 64), score=0.5)
    assert found["labels"].tolist() == [0, 1]
    torch.testing.assert_close(found["boxes"][0], torch.tensor([20.0, 20.0, 36.0, 36.0]))
    assert (found["scores"][:-1] >= found["scores"][1:]).all()
    (one,) = decode(outputs, (64, 64), score=0.5, agnostic_iou=0.7)  # for pictures: one label per object
    assert one["labels"].tolist() == [0] and torch.equal(one["boxes"][0], found["boxes"][0])


def test_loss_decreases_on_two_fixed_scenes() -> None:
    torch.manual_seed(0)
    model = Detector(DetectorConfig(backbone="resnet18", channels=16, input_size=96)).train()
    images, targets = collate_detection([DetectionDataset("train", 2, 96)[i] for i in range(2)])
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(6):
        outputs = model(images)
        loss, _ = detector_loss(
            outputs, build_targets(targets, [o[0].shape[-2:] for o in outputs], (96, 96), model.config)
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses


# ----------------------------------------------------------------------------------------------- metrics


def test_average_precision_ranks_and_spearman() -> None:
    assert average_precision(np.array([0.5, 1.0]), np.array([1.0, 0.5])) == pytest.approx(0.75)
    assert average_precision(np.array([1.0]), np.array([1.0])) == pytest.approx(1.0)
    assert rank_average(np.array([10.0, 20.0, 10.0, 30.0])).tolist() == [1.5, 3.0, 1.5, 4.0]
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4])[0] == pytest.approx(0.8)
    assert spearman([1, 2, 2, 3], [5, 6, 6, 7])[0] == pytest.approx(1.0)
    rho, reason = spearman([1, 2], [3, 4])
    assert np.isnan(rho) and "at least 3" in reason
    rho, reason = spearman([1, 2, 3], [0.5, 0.5, 0.5])
    assert np.isnan(rho) and "weight" in reason


def test_mean_in_box_reads_the_cells_inside_and_sums_to_one() -> None:
    planes = np.zeros((3, 4, 4))
    planes[0, :2, :2] = 1.0  # top-left quarter: all fine
    planes[2] = 1.0 - planes[0]
    np.testing.assert_allclose(mean_in_box(planes, (0, 0, 32, 32), (64, 64)), [1.0, 0.0, 0.0])
    np.testing.assert_allclose(mean_in_box(planes, (0, 0, 64, 64), (64, 64)), [0.25, 0.0, 0.75])
    np.testing.assert_allclose(mean_in_box(planes, (40, 40, 41, 41), (64, 64)), [0.0, 0.0, 1.0])  # no centre inside


# ------------------------------------------------------------------------------------------------- det.pt


def test_det_pt_round_trip_with_weights_only(tmp_path: Path) -> None:
    model = tiny()
    path = tmp_path / "det.pt"
    torch.save(detector_checkpoint(model, metrics={"epochs": 0}), path)
    contents = torch.load(path, weights_only=True)
    assert set(contents) == {"config", "state_dict", "classes", "metrics", "training"}
    rebuilt, metrics = detector_from_checkpoint(contents, str(path))
    assert metrics == {"epochs": 0} and rebuilt.config == model.config and len(rebuilt.classes) == 10
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for ours, theirs in zip(model(x), rebuilt(x), strict=True):
            for a, b in zip(ours, theirs, strict=True):
                torch.testing.assert_close(a, b)
    half = tmp_path / "half.pt"
    torch.save(detector_checkpoint(model, metrics={}, half=True), half)
    assert half.stat().st_size < 0.6 * path.stat().st_size
    detector_from_checkpoint(torch.load(half, weights_only=True), str(half))


# ------------------------------------------------------------------------------------------ fit-det, eval-det


@pytest.fixture(scope="module")
def det_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fitdet") / "det.pt"
    code, _, err = run("fit-det", "--out", str(out), "--epochs", "1", *SMALL, *TINY)
    assert code == 0, err
    return out


def test_fit_det_writes_det_pt_and_a_resumable_checkpoint(det_file: Path, tmp_path: Path) -> None:
    contents = torch.load(det_file, weights_only=True)
    assert contents["config"]["backbone"] == "mobilenet_v2" and contents["config"]["input_size"] == 64
    assert contents["metrics"]["epochs"] == 1 and 0 <= contents["metrics"]["val_map50"] <= 1
    assert contents["training"]["command"].startswith("attnviz fit-det --out")
    assert len(contents["classes"]) == 10
    state = torch.load(det_file.with_suffix(".ckpt"), weights_only=True)
    assert state["epoch"] == 0
    copy = tmp_path / "det.pt"
    shutil.copy(det_file.with_suffix(".ckpt"), copy.with_suffix(".ckpt"))
    code, out, err = run("fit-det", "--out", str(copy), "--epochs", "2", "--resume", "--json", *SMALL, *TINY)
    assert code == 0, err
    assert [h["epoch"] for h in json.loads(out)["history"]] == [0, 1]  # epoch 0 from the checkpoint
    code, _, err = run(
        "fit-det", "--out", str(copy), "--epochs", "3", "--resume", *SMALL[:2], "--channels", "32", *TINY
    )
    assert code == 2 and "channels" in err


def test_fit_det_interrupt_keeps_the_last_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import attnviz.detection.train as det_train

    real = det_train.run_epoch
    calls = {"n": 0}

    def interrupted(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 3:  # epoch 0 train + validation done, then Ctrl-C during epoch 1
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(det_train, "run_epoch", interrupted)
    out = tmp_path / "det.pt"
    code, _, err = run("fit-det", "--out", str(out), "--epochs", "3", *SMALL, *TINY)
    assert code == 130 and "--resume" in err
    assert torch.load(out.with_suffix(".ckpt"), weights_only=True)["epoch"] == 0
    assert not out.exists()


def test_fit_det_rejects_bad_values(tmp_path: Path) -> None:
    code, _, err = run("fit-det", "--out", str(tmp_path / "d.pt"), "--epochs", "0")
    assert code == 2 and "--epochs" in err
    code, _, err = run("fit-det", "--out", str(tmp_path / "d.pt"), "--backbone", "resnet50")
    assert code == 2 and "mobilenet_v2" in err
    code, _, err = run("fit-det", "--out", str(tmp_path / "d.pt"), "--resume", *TINY)
    assert code == 2 and "nothing to resume" in err


def _classifier_file(path: Path, backbone: str, block: str | None) -> Path:
    from attnviz.io.sidecars import WeightsInfo, write_sidecar
    from attnviz.models.backbones import build_model

    torch.manual_seed(1)
    model = build_model(backbone, block, num_classes=10)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    write_sidecar(WeightsInfo(path, block, backbone, (1, 2, 3, 4), 96, [f"c{k}" for k in range(10)]))
    return path


def test_fit_det_starts_the_backbone_from_a_plain_base(tmp_path: Path) -> None:
    from attnviz.detection.train import base_backbone

    base = _classifier_file(tmp_path / "base.safetensors", "mobilenet_v2", None)
    init = base_backbone(base, "mobilenet_v2")
    model = Detector(DetectorConfig(backbone="mobilenet_v2", channels=16, num_classes=10), backbone_init=init)
    fresh = Detector(DetectorConfig(backbone="mobilenet_v2", channels=16, num_classes=10))
    started = model.backbone.stem[0][0].weight
    assert torch.equal(started, init[0]["features.0.0.weight"])
    assert not torch.equal(started, fresh.backbone.stem[0][0].weight)
    out = tmp_path / "det.pt"
    code, _, err = run("fit-det", "--out", str(out), "--epochs", "1", "--base", str(base), *SMALL, *TINY)
    assert code == 0, err
    assert "--base" in torch.load(out, weights_only=True)["training"]["command"]
    blocks = _classifier_file(tmp_path / "se.safetensors", "mobilenet_v2", "se")
    code, _, err = run("fit-det", "--out", str(out), "--base", str(blocks), *SMALL, *TINY)
    assert code == 2 and "plain backbone" in err and "Traceback" not in err
    code, _, err = run("fit-det", "--out", str(out), "--base", str(base), *TINY)  # resnet18 by default
    assert code == 2 and "--backbone mobilenet_v2" in err


def test_eval_det_on_an_untrained_detector(det_file: Path) -> None:
    code, out, err = run("eval-det", str(det_file), "--n", "4", "--batch-size", "2", "--device", "cpu", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["images"] == 4 and result["objects"] >= 4
    assert 0.0 <= result["map50"] <= 1.0
    for key in ("spearman", "spearman_finest"):
        rho, reason = result[key]["rho"], result[key]["reason"]
        assert (rho is not None and -1.0 <= rho <= 1.0) or reason
    for entry in result["level_shares"].values():
        assert sum(entry["weights"]) == pytest.approx(1.0, abs=1e-3)
    code, out, err = run("eval-det", str(det_file), "--n", "2", "--device", "cpu")
    assert code == 0 and "mAP@0.5" in out and "Spearman" in out


# ------------------------------------------------------------------------------------------------ asff-weights


def test_asff_weights_draws_four_pictures_and_reports_every_box(det_file: Path, photo: Path, tmp_path: Path) -> None:
    args = ["asff-weights", str(det_file), str(photo), "--out", str(tmp_path), "--device", "cpu", "--score", "0"]
    code, out, err = run(*args, "--max-detections", "5", "--json")
    assert code == 0, err
    result = json.loads(out)
    names = sorted(Path(f).name for f in result["files"])
    assert names == [f"wide_det_asff_{what}.png" for what in ("detections", "dominant", "levels", "shares")]
    assert [level["layer"] for level in result["levels"]] == ["asff.0", "asff.1", "asff.2"]
    assert [level["grid"] for level in result["levels"]] == [[8, 8], [4, 4], [2, 2]]
    for level in result["levels"]:
        assert sum(level["mean_weights"].values()) == pytest.approx(1.0, abs=1e-3)
    assert 1 <= len(result["detections"]) <= 5
    for box in result["detections"]:
        assert sum(box["level_weights"].values()) == pytest.approx(1.0, abs=1e-3)
        x0, y0, x1, y1 = box["box"]
        assert 0 <= x0 < x1 <= 160 and 0 <= y0 < y1 <= 90  # on the original photo, letterbox undone
    with Image.open(tmp_path / "wide_det_asff_detections.png") as picture:
        assert picture.width > picture.height  # drawn on the photo at its own aspect
    code, out, err = run(*args, "--max-detections", "3")
    assert code == 0, err
    assert "coarse" in out and err.count("wrote ") == 4 and "trained 1 epoch," in err


def test_asff_weights_from_python_draws_the_files_the_cli_writes(det_file: Path, photo: Path, tmp_path: Path) -> None:
    from attnviz.detection import asff_weights
    from attnviz.errors import UsageError

    options = ["--score", "0", "--max-detections", "5", "--size", "64", "--cmap", "magma", "--alpha", "0.4"]
    code, out, err = run(
        "asff-weights", str(det_file), str(photo), "--out", str(tmp_path), "--device", "cpu", *options, "--json"
    )
    assert code == 0, err
    cli = json.loads(out)
    view = asff_weights(det_file, photo, score=0.0, max_detections=5, size=64, cmap="magma", alpha=0.4, device="cpu")
    assert sorted(view.pictures) == ["asff_detections", "asff_dominant", "asff_levels", "asff_shares"]
    assert sorted(str(tmp_path / view.file_name(what)) for what in view.pictures) == sorted(cli.pop("files"))
    for what in view.pictures:
        with Image.open(tmp_path / view.file_name(what)) as written:
            assert np.array_equal(np.asarray(view.images[what]), np.asarray(written)), what
    assert json.loads(json.dumps(view.summary)) == cli
    with pytest.raises(UsageError, match=r"^score= must be in 0\.\.1"):
        asff_weights(det_file, photo, score=2.0)
    with pytest.raises(UsageError, match="not found"):
        asff_weights(tmp_path / "missing.pt", photo)


def test_asff_weights_refuses_what_is_not_an_asff_detector(det_file: Path, photo: Path, tmp_path: Path) -> None:
    from attnviz.io.sidecars import WeightsInfo, write_sidecar

    def refused(path: Path, expected: int, *needles: str) -> None:
        code, _, err = run("asff-weights", str(path), str(photo), "--out", str(tmp_path / "out"), "--device", "cpu")
        one_line_error(code, err, expected, *needles)

    refused(tmp_path / "missing.pt", 2, "not found")
    classifier = tmp_path / "se.safetensors"
    save_file({"fc.weight": torch.zeros(10, 4)}, str(classifier))
    write_sidecar(WeightsInfo(classifier, "se", "resnet18", (1, 2, 3, 4), 128, [f"c{k}" for k in range(10)]))
    refused(classifier, 2, "not a detector checkpoint", "classifier")
    state_dict = tmp_path / "state.pt"
    torch.save({"conv1.weight": torch.zeros(4, 3, 3, 3)}, state_dict)
    refused(state_dict, 2, "not a detector checkpoint")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04" + b"\x00garbage" * 20)
    refused(corrupt, 1, "corrupt.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(det_file.read_bytes()[: det_file.stat().st_size // 2])
    refused(truncated, 1, "truncated.pt")
    plain = tmp_path / "no_asff.pt"
    torch.save(detector_checkpoint(tiny(asff=False), metrics={}), plain)
    refused(plain, 2, "without ASFF")
    assert not (tmp_path / "out").exists()
    code, _, err = run("eval-det", str(classifier), "--n", "2")
    one_line_error(code, err, 2, "not a detector checkpoint")


# ------------------------------------------------------------------------------- a YOLO-style ASFF, by structure


class TouchesAFile:
    """Unpickling this creates `target`: what a malicious model file could do."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (pathlib.Path.touch, (pathlib.Path(self.target),))


def add_conv(cin: int, cout: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.1)
    )


class YoloASFF(nn.Module):
    """ASFF as YOLOv3-ASFF writes it: input 0 is the coarsest map, and the weights come from a functional softmax."""

    def __init__(self, level: int, dims: tuple[int, int, int] = (32, 16, 8), compress: int = 4) -> None:
        super().__init__()
        self.level = level
        inter = dims[level]
        if level == 0:
            self.stride_level_1 = add_conv(dims[1], inter, 3, 2)
            self.stride_level_2 = add_conv(dims[2], inter, 3, 2)
        elif level == 1:
            self.compress_level_0 = add_conv(dims[0], inter, 1, 1)
            self.stride_level_2 = add_conv(dims[2], inter, 3, 2)
        else:
            self.compress_level_0 = add_conv(dims[0], inter, 1, 1)
            self.compress_level_1 = add_conv(dims[1], inter, 1, 1)
        self.weight_level_0 = add_conv(inter, compress, 1, 1)
        self.weight_level_1 = add_conv(inter, compress, 1, 1)
        self.weight_level_2 = add_conv(inter, compress, 1, 1)
        self.weight_levels = nn.Conv2d(compress * 3, 3, 1)
        self.expand = add_conv(inter, inter, 3, 1)

    def forward(self, x_level_0: torch.Tensor, x_level_1: torch.Tensor, x_level_2: torch.Tensor) -> torch.Tensor:
        if self.level == 0:
            l0 = x_level_0
            l1 = self.stride_level_1(x_level_1)
            l2 = self.stride_level_2(F.max_pool2d(x_level_2, 3, stride=2, padding=1))
        elif self.level == 1:
            l0 = F.interpolate(self.compress_level_0(x_level_0), scale_factor=2, mode="nearest")
            l1 = x_level_1
            l2 = self.stride_level_2(x_level_2)
        else:
            l0 = F.interpolate(self.compress_level_0(x_level_0), scale_factor=4, mode="nearest")
            l1 = F.interpolate(self.compress_level_1(x_level_1), scale_factor=2, mode="nearest")
            l2 = x_level_2
        logits = self.weight_levels(
            torch.cat([self.weight_level_0(l0), self.weight_level_1(l1), self.weight_level_2(l2)], dim=1)
        )
        weights = F.softmax(logits, dim=1)
        return self.expand(l0 * weights[:, 0:1] + l1 * weights[:, 1:2] + l2 * weights[:, 2:])


class TinyYolo(nn.Module):
    """A backbone at strides 8, 16, 32, three YOLO-style ASFF modules and YOLO heads."""

    def __init__(self, marker: Path | None = None) -> None:
        super().__init__()
        self.stem = nn.Sequential(add_conv(3, 8, 3, 2), add_conv(8, 8, 3, 2), add_conv(8, 8, 3, 2))
        self.down16 = add_conv(8, 16, 3, 2)
        self.down32 = add_conv(16, 32, 3, 2)
        self.fuse = nn.ModuleList([YoloASFF(level) for level in range(3)])
        self.heads = nn.ModuleList([nn.Conv2d(c, 3 * (5 + 2), 1) for c in (32, 16, 8)])
        self.note = TouchesAFile(marker) if marker is not None else None

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c3 = self.stem(x)
        c4 = self.down16(c3)
        c5 = self.down32(c4)
        return [head(fuse(c5, c4, c3)) for head, fuse in zip(self.heads, self.fuse, strict=True)]


def test_yolo_style_asff_found_by_structure_and_tapped_fine_to_coarse() -> None:
    model = TinyYolo().eval()
    keys = list(model.state_dict())
    found, unmatched = attach_level_taps(model)
    assert [(f.path, f.type, f.how, f.source) for f in found] == [
        (f"fuse.{level}", "YoloASFF", "structure", "weight_levels") for level in range(3)
    ]
    assert unmatched == [] and list(model.state_dict()) == keys
    logits = {}
    handles = [
        model.fuse[k].weight_levels.register_forward_hook(lambda m, a, out, k=k: logits.__setitem__(k, out))
        for k in range(3)
    ]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        plain = model(x)
        with capture(model) as rec:
            tapped = model(x)
    for handle in handles:
        handle.remove()
    assert all(torch.equal(a, b) for a, b in zip(plain, tapped, strict=True))
    assert [(m.layer, m.shape, m.block) for m in rec] == [
        ("fuse.0", (2, 3, 2, 2), "YoloASFF"),
        ("fuse.1", (2, 3, 4, 4), "YoloASFF"),
        ("fuse.2", (2, 3, 8, 8), "YoloASFF"),
    ]
    for k, m in enumerate(rec):
        # the module's input 0 is the coarsest map: attnviz's level axis runs fine to coarse, so it is reversed
        torch.testing.assert_close(m.tensor, F.softmax(logits[k], dim=1).flip(1))
        tap = rec.taps[m.tap]
        assert tap.order == [2, 1, 0] and tap.source_sizes == [(8, 8), (4, 4), (2, 2)]


@pytest.fixture
def yolo_file(tmp_path: Path) -> tuple[Path, Path]:
    """A YOLO-style checkpoint: {"model": the whole model, ...} saved with torch.save, carrying a payload."""
    marker = tmp_path / "created_by_unpickling"
    path = tmp_path / "yolo_asff.pt"
    torch.save({"epoch": 3, "model": TinyYolo(marker).eval()}, path)
    return path, marker


def test_pickled_detector_needs_trust_and_runs_nothing_without(
    yolo_file: tuple[Path, Path], photo: Path, tmp_path: Path
) -> None:
    path, marker = yolo_file
    code, _, err = run("asff-weights", str(path), str(photo), "--out", str(tmp_path), "--size", "64")
    one_line_error(code, err, 2, "--trust")
    assert not marker.exists()
    code, _, err = run("eval-det", str(path), "--n", "2")
    one_line_error(code, err, 2, "pickled model")
    assert not marker.exists()


def test_trusted_yolo_style_model_draws_its_level_maps(
    yolo_file: tuple[Path, Path], photo: Path, tmp_path: Path
) -> None:
    path, marker = yolo_file
    args = ["asff-weights", str(path), str(photo), "--trust", "--size", "64", "--out", str(tmp_path), "--device", "cpu"]
    code, out, err = run(*args, "--json")
    assert code == 0, err
    assert marker.exists()  # control: the payload is real, it runs once the user trusts the file
    result = json.loads(out)
    assert sorted(Path(f).name for f in result["files"]) == [
        "wide_yolo_asff_asff_dominant.png",
        "wide_yolo_asff_asff_levels.png",
    ]
    assert result["detections"] is None and "attnviz detectors" in result["note"]
    assert [(lv["layer"], lv["grid"], lv["source_strides"]) for lv in result["levels"]] == [
        ("fuse.2", [8, 8], [8.0, 16.0, 32.0]),
        ("fuse.1", [4, 4], [8.0, 16.0, 32.0]),
        ("fuse.0", [2, 2], [8.0, 16.0, 32.0]),
    ]
    assert all(lv["order_known"] for lv in result["levels"])
    code, _, err = run(*args)
    assert code == 0 and "detections are drawn only for attnviz detectors" in err


def test_trusted_model_without_asff_is_refused(photo: Path, tmp_path: Path) -> None:
    path = tmp_path / "plain.pt"
    torch.save(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()), path)
    code, _, err = run("asff-weights", str(path), str(photo), "--trust", "--size", "64", "--out", str(tmp_path))
    one_line_error(code, err, 2, "no ASFF-like module")


def test_category_overlay_and_boxes_keep_the_picture_size() -> None:
    from attnviz.detection.drawing import LEVEL_COLORS, category_overlay, draw_boxes, level_share_chart

    photo = Image.new("RGB", (40, 30), (200, 100, 50))
    labels = np.zeros((30, 40), dtype=int)
    labels[:, 20:] = 2
    labels[:5] = -1  # unseen: greyed-out photo, no tint
    drawn = np.asarray(category_overlay(photo, labels, LEVEL_COLORS))
    assert drawn.shape == (30, 40, 3)
    assert drawn[0, 0, 0] == drawn[0, 0, 1] == drawn[0, 0, 2]  # grey
    assert drawn[20, 5, 2] > drawn[20, 5, 0] and drawn[20, 35, 0] > drawn[20, 35, 2]  # fine blue, coarse vermillion
    boxed = draw_boxes(
        photo, [[-5, 2, 50, 28], [3, 3, 10, 10]], ["#1 a 0.9", "#2 b 0.5"], shares=[[1, 0, 0], [0, 0, 1]]
    )
    assert boxed.size == photo.size
    figure = level_share_chart([("small", 2, [0.2, 0.3, 0.5]), ("large", 0, None)], ["fine", "mid", "coarse"])
    assert len(figure.axes) == 1
