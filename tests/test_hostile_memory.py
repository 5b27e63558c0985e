"""Hostile and extreme inputs that would spend memory or give internal errors: strips, zip bombs, huge detector
configs, attention matrices too large to compute, non-finite or non-float weights, damaged resume checkpoints,
pickles --trust cannot load, TorchScript and compiled models. Each case: its message, exit code and the files left;
and for the strip, the zip bomb and the huge config, the peak memory of the whole CLI run, measured in a child
process. Every hostile file is built here, small on disk."""

from __future__ import annotations

import collections
import io
import pickle
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch._utils
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from attnviz.cli.app import app

FAST = ["--size", "64", "--device", "cpu"]
PEAK_LIMIT_MB = 1536
BOMB_BYTES = 2 << 30  # what the bomb inflates to: past the limit above on its own


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def files_in(folder: Path) -> list[Path]:
    """Every file under `folder`, hidden temporary files included."""
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def assert_one_line(code: int, err: str, expected_code: int, *needles: str) -> None:
    """Exit `expected_code` with one error line, last (after the line naming the model, where one is printed)."""
    message = err.strip()
    assert code == expected_code, message
    assert "Traceback" not in message and "internal error" not in message and "\x1b" not in message, message
    lines = message.splitlines()
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], message
    assert all(line.startswith(("model:", "error:")) for line in lines), message
    for needle in needles:
        assert needle in lines[-1], message


def save_photo(path: Path, width: int, height: int) -> Path:
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([xx * 255 // max(1, width - 1), yy * 255 // max(1, height - 1), np.full_like(xx, 90)], axis=-1)
    Image.fromarray(rgb.astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_photo(tmp_path_factory.mktemp("photo") / "photo.png", 80, 48)


# ------------------------------------------------------------------------------------------------ hostile files


class _Storage:
    """Stands for a storage in a hand-written torch pickle."""


class _Tensor:
    """Pickles as torch.save pickles a float32 tensor of `count` values in storage "0"."""

    def __init__(self, count: int) -> None:
        self.count, self.storage = count, _Storage()

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return torch._utils._rebuild_tensor_v2, (self.storage, 0, (self.count,), (1,), False, collections.OrderedDict())


def write_zip_bomb(path: Path, inflated: int) -> Path:
    """A torch.save-format archive whose one tensor (`inflated` bytes of zeros) is deflated to a few MB."""
    count = inflated // 4

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj: object) -> object:
            return ("storage", torch.FloatStorage, "0", "cpu", count) if isinstance(obj, _Storage) else None

    data = io.BytesIO()
    Pickler(data, protocol=2).dump({"conv1.weight": _Tensor(count)})
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:  # 1: fastest
        archive.writestr("archive/data.pkl", data.getvalue(), compress_type=zipfile.ZIP_STORED)
        archive.writestr("archive/byteorder", "little", compress_type=zipfile.ZIP_STORED)
        archive.writestr("archive/version", "3\n", compress_type=zipfile.ZIP_STORED)
        chunk = bytes(64 << 20)
        with archive.open("archive/data/0", "w", force_zip64=True) as entry:
            for start in range(0, inflated, len(chunk)):
                entry.write(chunk[: min(len(chunk), inflated - start)])
    return path


def write_detector(path: Path, **config: object) -> Path:
    """A small attnviz detector file (mobilenet_v2, 8 channels, fp16) whose config then gets `config`."""
    from attnviz.detection.files import detector_checkpoint
    from attnviz.detection.model import Detector, DetectorConfig

    model = Detector(DetectorConfig(backbone="mobilenet_v2", channels=8, num_classes=2, input_size=64))
    contents = detector_checkpoint(model, metrics={}, half=True)
    contents["config"].update(config)
    torch.save(contents, path)
    return path


def cbam_state() -> dict[str, torch.Tensor]:
    from attnviz.models.backbones import build_model

    return {k: v.clone() for k, v in build_model("resnet18", "cbam").state_dict().items()}


# ------------------------------------------------------------------------------------------------------ strips


@pytest.mark.parametrize("size", [(10, 100_000), (10, 3000), (3000, 10)])
def test_a_strip_too_thin_to_draw_is_refused(size: tuple[int, int], tmp_path: Path) -> None:
    strip = save_photo(tmp_path / "strip.png", *size)
    out = tmp_path / "out"
    code, _, err = run("show", "cbam", str(strip), *FAST, "--out", str(out))
    assert_one_line(code, err, 2, f"{size[0]}x{size[1]} pixels", "at most 50 times")
    assert files_in(out) == []


@pytest.mark.parametrize("size", [(10, 500), (40, 300), (500, 10)])
def test_an_extreme_strip_within_the_limit_is_drawn_at_a_bounded_size(size: tuple[int, int], tmp_path: Path) -> None:
    strip = save_photo(tmp_path / "strip.png", *size)
    out = tmp_path / "out"
    code, _, err = run("show", "cbam", str(strip), *FAST, "--out", str(out), "--each")
    assert code == 0, err
    pictures = files_in(out)
    assert len(pictures) == 5  # the picture and one full-resolution overlay per stage
    for picture in pictures:
        with Image.open(picture) as drawn:
            assert max(drawn.size) <= 2000 and drawn.width * drawn.height <= 2_000_000, (picture.name, drawn.size)


@pytest.mark.parametrize("size", [(2, 100), (10, 500), (300, 200), (720, 10), (4000, 80)])
def test_tiles_fit_in_720_pixels_for_every_aspect(size: tuple[int, int]) -> None:
    from attnviz.views.common import MAX_TILE_HEIGHT, MAX_TILE_WIDTH, tile_width

    width = tile_width(size)
    height = round(size[1] * width / size[0])
    assert 1 <= width <= MAX_TILE_WIDTH and 1 <= height <= MAX_TILE_HEIGHT + 1


def test_full_resolution_pictures_are_bounded_in_pixels() -> None:
    from attnviz.views.common import MAX_FULL_PIXELS, full_width

    assert full_width((4000, 3000)) is None  # a 12 MP photo keeps its own resolution
    width = full_width((20_000, 10_000))
    assert width is not None and width * (width // 2) <= MAX_FULL_PIXELS and width > 5000


# ------------------------------------------------------------------------------------------- weights archives


def test_a_deflated_weights_archive_is_refused_unread(photo: Path, tmp_path: Path) -> None:
    bomb = write_zip_bomb(tmp_path / "bomb.pt", 64 << 20)
    assert bomb.stat().st_size < 1 << 20
    out = tmp_path / "out"
    code, _, err = run("show", "cbam", str(photo), "--weights", str(bomb), *FAST, "--out", str(out))
    assert_one_line(code, err, 1, "compressed entry", "refused unread")
    assert files_in(out) == []


def test_a_safetensors_header_of_absurd_length_is_refused(photo: Path, tmp_path: Path) -> None:
    weights = tmp_path / "w.safetensors"
    weights.write_bytes((2**63).to_bytes(8, "little") + b"{}")
    code, _, err = run("show", "cbam", str(photo), "--weights", str(weights), *FAST, "--out", str(tmp_path / "o"))
    assert_one_line(code, err, 1, "header too large")


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_a_torchscript_file_is_refused_with_a_message(photo: Path, tmp_path: Path) -> None:
    scripted = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Conv2d(3, 4, 3)), str(scripted))
    out = tmp_path / "out"
    code, _, err = run("show", "--model", str(scripted), str(photo), *FAST, "--out", str(out))
    assert_one_line(code, err, 2, "TorchScript", "torch.save(model.state_dict())")
    code, _, err = run("show", "cbam", str(photo), "--weights", str(scripted), *FAST, "--out", str(out))
    assert_one_line(code, err, 2, "TorchScript")
    assert files_in(out) == []


# ------------------------------------------------------------------------------------------- detector configs


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({"channels": 200_000}, "channels=200000, outside 8..2048"),
        ({"num_classes": 10**9}, "num_classes=1000000000"),
        ({"compress": -1}, "compress=-1"),
        ({"channels": 2048}, "MB of weights, but the file stores"),
    ],
)
def test_a_detector_config_beyond_its_file_is_refused_before_building(
    config: dict[str, object], needle: str, photo: Path, tmp_path: Path
) -> None:
    det = write_detector(tmp_path / "det.pt", **config)
    out = tmp_path / "out"
    code, _, err = run("asff-weights", str(det), str(photo), "--device", "cpu", "--out", str(out))
    assert_one_line(code, err, 1, needle)
    assert files_in(out) == []


# -------------------------------------------------------------------------------------------- matrix budgets


def test_a_matrix_too_large_to_compute_is_refused_before_the_block_runs() -> None:
    from attnviz.blocks.mhsa import MultiHeadSelfAttention2d
    from attnviz.capture import capture
    from attnviz.errors import CaptureError

    block = MultiHeadSelfAttention2d(8, heads=2).eval()
    entered: list[bool] = []
    block.query.register_forward_hook(lambda *_: entered.append(True))
    features = torch.zeros(1, 8, 64, 64)  # 4096 positions: 2 x 4096^2 floats = 128 MB
    with pytest.raises(CaptureError, match=r"128 MB \(4,096 positions\) at the input size 64x64, over the 2 MB"):
        with capture(block, max_bytes=1 << 20, queries=[(0.5, 0.5)]):
            block(features)
    assert entered == []  # refused before even the query projection ran
    with capture(block, max_bytes=64 << 20, queries=[(0.5, 0.5)]) as rec:
        block(features)
    assert rec[0].shape == (1, 2, 1, 4096)


def test_matrix_at_a_huge_size_says_the_size_and_the_limit(photo: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, _, err = run("matrix", "mhsa", str(photo), "--size", "1300", "--device", "cpu", "--out", str(out))
    assert_one_line(code, err, 1, "at the input size 1300x1300", "over the 512 MB", "--size")
    assert files_in(out) == []


# ----------------------------------------------------------------------------------------- non-finite weights


@pytest.mark.parametrize(
    ("broken", "needle"),
    [
        (lambda t: t.index_fill_(0, torch.tensor([0]), float("nan")), "layer1.0.conv1.weight holds NaN or infinite"),
        (lambda t: t.index_fill_(0, torch.tensor([0]), float("inf")), "layer1.0.conv1.weight holds NaN or infinite"),
        (lambda t: t > 0, "layer1.0.conv1.weight holds bool values where the model has floating-point"),
        (lambda t: t.long(), "layer1.0.conv1.weight holds int64 values"),
    ],
    ids=["nan", "inf", "bool", "int64"],
)
def test_weights_that_cannot_compute_are_refused_when_loading(
    broken: object, needle: str, photo: Path, tmp_path: Path
) -> None:
    state = cbam_state()
    state["layer1.0.conv1.weight"] = broken(state["layer1.0.conv1.weight"])  # type: ignore[operator]
    weights = tmp_path / "w.safetensors"
    save_file(state, str(weights))
    out = tmp_path / "out"
    code, _, err = run("show", "cbam", str(photo), "--weights", str(weights), *FAST, "--out", str(out))
    assert_one_line(code, err, 1, needle)
    assert files_in(out) == []


@pytest.mark.parametrize("command", ["show", "channels"])
def test_a_forward_that_overflows_names_the_first_layer(command: str, photo: Path, tmp_path: Path) -> None:
    state = cbam_state()
    for key in ("layer2.0.conv1.weight", "layer2.0.conv2.weight"):
        state[key] = state[key] * 1e30  # finite weights whose products overflow float32
    weights = tmp_path / "w.safetensors"
    save_file(state, str(weights))
    out = tmp_path / "out"
    extra = ["--layer", "3"] if command == "channels" else []
    code, _, err = run(command, "cbam", str(photo), "--weights", str(weights), *extra, *FAST, "--out", str(out))
    assert_one_line(code, err, 1, "layer2.0.conv2 (Conv2d) is the first layer whose output is not finite")
    assert "RuntimeWarning" not in err and "nan" not in err.replace("NaN", "")
    assert files_in(out) == []


def test_a_trusted_pickled_model_with_nan_is_refused(photo: Path, tmp_path: Path) -> None:
    from attnviz.models.backbones import build_model

    model = build_model("resnet18", "cbam")
    with torch.no_grad():
        model.fc.bias[0] = float("nan")
    pickled = tmp_path / "model.pt"
    torch.save(model, pickled)
    out = tmp_path / "out"
    code, _, err = run("show", "--model", str(pickled), "--trust", str(photo), *FAST, "--out", str(out))
    assert_one_line(code, err, 1, "fc.bias holds NaN or infinite values")
    assert files_in(out) == []


# ------------------------------------------------------------------------------------ resume and --trust hints


def _resume_files(tmp_path: Path) -> dict[str, Path]:
    """Files put where a resumed run looks for its checkpoint: a pickled model, a truncated checkpoint, a plain state
    dict."""
    pickled, truncated, plain = tmp_path / "pickled.ckpt", tmp_path / "truncated.ckpt", tmp_path / "plain.ckpt"
    torch.save(torch.nn.Linear(2, 2), pickled)
    torch.save({"model": {"w": torch.zeros(64)}, "config": {}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    torch.save({"w": torch.zeros(2)}, plain)
    return {"pickled": pickled, "truncated": truncated, "plain": plain}


@pytest.mark.parametrize(
    ("kind", "code", "needle"),
    [
        ("pickled", 2, "pickled Python object"),
        ("truncated", 1, "damaged zip archive"),
        ("plain", 1, "is not a checkpoint --resume can continue (no 'model'"),
    ],
)
@pytest.mark.parametrize("command", ["fit", "fit-det"])
def test_resume_reads_checkpoints_like_every_weights_file(
    command: str, kind: str, code: int, needle: str, tmp_path: Path
) -> None:
    out = tmp_path / ("w.safetensors" if command == "fit" else "det.pt")
    out.with_suffix(".ckpt").write_bytes(_resume_files(tmp_path)[kind].read_bytes())
    args = ["fit", "se"] if command == "fit" else ["fit-det", "--backbone", "mobilenet_v2"]
    tiny = ["--size", "64", "--train-size", "32", "--val-size", "16", "--batch-size", "16", "--device", "cpu"]
    got, _, err = run(*args, "--out", str(out), "--resume", *tiny)
    assert_one_line(got, err, code, needle)
    assert "--trust" not in err  # neither command offers it
    assert sorted(p.name for p in files_in(tmp_path) if p.parent == tmp_path and p.suffix != ".ckpt") == []


def test_trust_is_suggested_only_where_it_would_load_the_file(photo: Path, tmp_path: Path) -> None:
    script = tmp_path / "saver.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys, torch
            class Net(torch.nn.Module):
                def __init__(self):
                    super().__init__()
                    self.fc = torch.nn.Linear(2, 2)
            torch.save(Net(), sys.argv[1])
            """
        )
    )
    own_class = tmp_path / "net.pt"
    subprocess.run([sys.executable, str(script), str(own_class)], check=True)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x80\x04\x95garbage that is no pickle")
    loadable = tmp_path / "linear.pt"
    torch.save(torch.nn.Linear(2, 2), loadable)
    out = tmp_path / "out"
    for path, code, needle in (
        (own_class, 1, "needs __main__.Net, which does not exist here, so it cannot be loaded even with --trust"),
        (garbage, 1, "is a damaged or truncated pickle"),
        (loadable, 2, "pass --trust only if you trust where the file came from"),
    ):
        got, _, err = run("show", "cbam", str(photo), "--weights", str(path), *FAST, "--out", str(out))
        assert_one_line(got, err, code, needle)
        if path != loadable:
            assert "pass --trust" not in err
    assert files_in(out) == []


# --------------------------------------------------------------------------------- compiled and scripted models


def test_compiled_models_are_analysed_through_the_module_they_wrap(photo: Path) -> None:
    import attnviz
    from attnviz.models.backbones import build_model

    module = build_model("resnet18", "cbam").eval()
    plain = attnviz.analyse(attnviz.load(model=module, size=64, device="cpu"), photo, size=64).recording
    loaded = attnviz.load(model=torch.compile(module), size=64, device="cpu")
    assert loaded.model is module  # compiled lazily, never run: the wrapped module is hooked
    compiled = attnviz.analyse(loaded, photo, size=64).recording
    assert len(compiled.of_kind("spatial")) == len(plain.of_kind("spatial")) > 0
    assert [m.layer for m in compiled] == [m.layer for m in plain]


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_scripted_models_are_refused_with_a_message() -> None:
    import attnviz
    from attnviz.capture import capture
    from attnviz.errors import CaptureError, UsageError

    scripted = torch.jit.script(torch.nn.Conv2d(3, 4, 3))
    with pytest.raises(UsageError, match="TorchScript module"):
        attnviz.load(model=scripted, device="cpu")
    with pytest.raises(CaptureError, match="TorchScript"), capture(scripted):
        pass


# ------------------------------------------------------------------------------------------------- peak memory


def peak_mb(*args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Peak resident memory (MB) of `attnviz ARGS...` in a child process, read by a fresh parent whose only child it
    is (RUSAGE_CHILDREN of this test process would hold every child it ever ran)."""
    code = (
        "import json, resource, subprocess, sys\n"
        "done = subprocess.run([sys.executable, '-m', 'attnviz', *sys.argv[1:]], capture_output=True, text=True)\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
        "print(json.dumps([peak, done.returncode, done.stderr]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    import json

    peak, returncode, stderr = json.loads(result.stdout)
    return peak, subprocess.CompletedProcess(args, returncode, "", stderr)


def test_hostile_inputs_stay_under_the_memory_limit(photo: Path, tmp_path: Path) -> None:
    strip = save_photo(tmp_path / "strip.png", 10, 100_000)
    bomb = write_zip_bomb(tmp_path / "bomb.pt", BOMB_BYTES)
    det = write_detector(tmp_path / "det.pt", channels=200_000)
    assert max(p.stat().st_size for p in (strip, bomb, det)) < 16 << 20  # small on disk
    out = str(tmp_path / "out")
    runs = {
        "strip": ("show", "cbam", str(strip), *FAST, "--out", out),
        "zip bomb": ("show", "cbam", str(photo), "--weights", str(bomb), *FAST, "--out", out),
        "huge config": ("asff-weights", str(det), str(photo), "--device", "cpu", "--out", out),
    }
    for name, args in runs.items():
        peak, done = peak_mb(*args)
        assert done.returncode in (1, 2) and "internal error" not in done.stderr, (name, done.stderr)
        assert peak < PEAK_LIMIT_MB, f"{name}: peak {peak:.0f} MB"
    assert files_in(tmp_path / "out") == []
