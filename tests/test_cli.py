"""The commands end to end through typer's CliRunner: files written, exit codes, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from attnviz.cli.app import app

runner = CliRunner()
FAST = ["--size", "64", "--device", "cpu"]


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wide photo-like image: a gradient with a bright disk right of centre."""
    folder = tmp_path_factory.mktemp("photos")
    yy, xx = np.mgrid[0:90, 0:160]
    rgb = np.stack([xx / 160 * 255, yy / 90 * 255, np.full_like(xx, 80)], axis=-1)
    rgb[(xx - 110) ** 2 + (yy - 45) ** 2 < 300] = (250, 250, 40)
    path = folder / "wide photo.png"
    Image.fromarray(rgb.astype(np.uint8)).save(path)
    return path


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_version_and_list() -> None:
    code, out, _ = run("--version")
    assert code == 0 and out.startswith("attnviz ")
    code, out, _ = run("list", "--json")
    names = [row["name"] for row in json.loads(out)]
    assert code == 0 and len(names) == 22 and "cbam" in names and "additive" in names


def test_show_writes_overlay_at_original_aspect(photo: Path, tmp_path: Path) -> None:
    code, _, err = run("show", "cbam", str(photo), *FAST, "--out", str(tmp_path))
    assert code == 0, err
    (written,) = _files(tmp_path)
    assert written.name == "wide photo_cbam_show.png"
    assert "demo weights" in err and "cbam_resnet18.safetensors" in err and str(written) in err
    with Image.open(written) as picture:
        assert picture.width > picture.height  # tiles keep the photo's wide aspect


def test_stages_narrow_what_weights_placed(photo: Path, tmp_path: Path) -> None:
    """The demo weights put cbam in stages 1-4 and gam in 1-3; --stages picks among those, never moves the blocks."""
    code, out, err = run("show", "cbam", str(photo), *FAST, "--stages", "2", "--out", str(tmp_path), "--json")
    assert code == 0, err
    layers = {m["layer"] for m in json.loads(out)["results"][0]["maps"]}
    assert layers == {"layer2.0.attn", "layer2.1.attn"}
    code, out, err = run("show", "cbam", str(photo), *FAST, "--out", str(tmp_path), "--json")
    assert code == 0, err
    assert {m["layer"][:6] for m in json.loads(out)["results"][0]["maps"]} == {"layer1", "layer2", "layer3", "layer4"}
    before = _files(tmp_path)
    code, _, err = run("show", "gam", str(photo), *FAST, "--stages", "3,4", "--out", str(tmp_path))
    assert code == 2 and "--stages 4: the weights gam_resnet18.safetensors put gam in stages 1, 2, 3 only" in err
    code, _, err = run("channels", "gam", str(photo), *FAST, "--layer", "4", "--out", str(tmp_path))
    assert code == 2 and "--layer 4 is not a stage with gam blocks (stages with blocks: 1, 2, 3)" in err
    code, _, err = run("channels", "se", str(photo), *FAST, "--stages", "2,3", "--layer", "4", "--out", str(tmp_path))
    assert code == 2 and "stages with blocks picked by --stages: 2, 3" in err
    assert _files(tmp_path) == before  # the refused commands wrote nothing


def test_show_batch_folder_and_json(photo: Path, tmp_path: Path) -> None:
    folder = photo.parent
    Image.open(photo).resize((60, 100)).save(folder / "tall.jpg")
    code, out, err = run("show", "triplet", str(folder), *FAST, "--out", str(tmp_path), "--json", "--save-raw")
    assert code == 0, err
    result = json.loads(out)
    assert {Path(r["image"]).name for r in result["results"]} == {"wide photo.png", "tall.jpg"}
    labels = {m["label"] for m in result["results"][0]["maps"]}
    assert labels == {"cw", "hc", "hw"}
    names = {p.suffix for p in _files(tmp_path)}
    assert names == {".png", ".npz", ".json"}


def test_channels_se_layer3_chart(photo: Path, tmp_path: Path) -> None:
    code, out, err = run("channels", "se", str(photo), "--layer", "3", *FAST, "--out", str(tmp_path), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert [m["map"] for m in result["maps"]] == ["layer3.0.attn:channel", "layer3.1.attn:channel"]
    assert all(m["channels"] == 256 for m in result["maps"])
    assert [Path(f).name for f in result["files"]] == ["wide photo_se_channels_stage3.png"]


def test_channels_without_image_uses_bundled_sample(tmp_path: Path) -> None:
    code, out, err = run("channels", "eca", "--layer", "4", *FAST, "--out", str(tmp_path), "--json")
    assert code == 0, err
    assert Path(json.loads(out)["image"]).name == "chelsea.png"


def test_channels_draws_sk_selection(photo: Path, tmp_path: Path) -> None:
    code, out, err = run("channels", "sk", str(photo), "--layer", "2", *FAST, "--out", str(tmp_path), "--json")
    assert code == 0, err
    maps = json.loads(out)["maps"]
    assert all(abs(sum(m["branch_means"]) - 1) < 1e-4 for m in maps)
    assert all(m["branches"] == ["3x3", "5x5 (dilated 3x3)"] for m in maps)  # the legend says what each branch is


def test_branch_names_need_a_branch_axis() -> None:
    from attnviz.blocks.base import Tap
    from attnviz.blocks.s2mlp import SpatialShiftAttention
    from attnviz.blocks.sk import SelectiveKernel

    with pytest.raises(ValueError, match="without a 'branch' axis"):
        Tap("channel", ("batch", "channel"), branches=("a", "b"))
    assert SelectiveKernel(32, kernels=(3, 5, 7)).tap.branches == ("3x3", "5x5 (dilated 3x3)", "7x7 (dilated 3x3)")
    assert SelectiveKernel(32, kernels=iter((3, 5))).tap.branches == ("3x3", "5x5 (dilated 3x3)")
    assert len(SpatialShiftAttention(32).tap.branches) == SpatialShiftAttention.num_branches


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet_v2"])
def test_coords_matrix_inspect_on_backbones(photo: Path, tmp_path: Path, backbone: str) -> None:
    code, _, err = run("coords", "coord", str(photo), "-b", backbone, *FAST, "--out", str(tmp_path))
    assert code == 0, err
    code, out, err = run(
        "matrix", "mhsa", str(photo), "-b", backbone, "--query", "110,45", *FAST, "--out", str(tmp_path), "--json"
    )
    assert code == 0, err
    maps = json.loads(out)["maps"]
    assert maps and all(len(m["queries"]) == 1 for m in maps)
    code, out, err = run("inspect", "cbam", "-b", backbone, "--size", "96", "--json")
    assert code == 0, err
    blocks = json.loads(out)["blocks"]
    assert {b["stage"] for b in blocks} == {1, 2, 3, 4}
    spatial = [m for b in blocks for m in b["maps"] if m["kind"] == "spatial"]
    assert {tuple(m["shape"]) for m in spatial} >= {(24, 24), (3, 3)}
    assert len(_files(tmp_path)) == 2


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["show", "nosuch", "IMG"], 2, "unknown block 'nosuch'"),
        (["show", "cbam", "IMG", "--backbone", "vgg16"], 2, "unknown backbone 'vgg16'"),
        (["show", "se", "IMG"], 2, "attnviz channels se"),
        (["show", "asff", "IMG"], 2, "does not fit inside a backbone"),
        (["channels", "se", "IMG", "--layer", "7"], 2, "--layer 7"),
        (["show", "cbam", "missing.png"], 2, "image not found"),
        (["show", "cbam", "IMG", "--size", "0"], 2, "--size"),
        (["show", "cbam", "IMG", "--stages", "0"], 2, "stage 0"),
        (["show", "cbam", "IMG", "--alpha", "2"], 2, "--alpha"),
        (["show", "cbam", "IMG", "--size", "abc"], 2, "--size"),
        (["matrix", "mhsa", "IMG", "--query", "5000,3"], 2, "outside the image"),
        (["show", "cbam", "NOTIMAGE"], 2, "NOTIMAGE"),
    ],
)
def test_bad_input_one_line_and_no_output(photo: Path, tmp_path: Path, args: list[str], code: int, needle: str) -> None:
    notimage = tmp_path / "notes.png"
    notimage.write_text("not an image")
    args = [str(photo) if a == "IMG" else str(notimage) if a == "NOTIMAGE" else a for a in args]
    out_dir = tmp_path / "out"
    exit_code, _, err = run(*args, "--out", str(out_dir), "--device", "cpu")
    message = err.strip()
    assert exit_code == code, message
    assert needle.replace("NOTIMAGE", "notes.png") in message
    assert "Traceback" not in message and len(message.splitlines()) == 1, message
    assert _files(out_dir) == []


def test_weights_for_another_block_is_a_runtime_error(photo: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from attnviz.models.backbones import build_model

    weights = tmp_path / "se.safetensors"
    save_file(build_model("resnet18", "se").state_dict(), str(weights))
    out_dir = tmp_path / "out"
    code, _, err = run("show", "cbam", str(photo), "--weights", str(weights), *FAST, "--out", str(out_dir))
    assert code == 1
    assert "does not fit this model" in err and "missing" in err and len(err.strip().splitlines()) == 1
    assert _files(out_dir) == []
    code, _, err = run("show", "se", str(photo), "--weights", str(weights), *FAST, "--out", str(out_dir))
    assert code == 2  # se has no spatial maps: refused before loading


@pytest.mark.parametrize("command", [["--help"], ["list"], ["show", "--help"]])
def test_help_and_list_never_import_torch(command: list[str]) -> None:
    import subprocess
    import sys

    probe = (
        "import sys, runpy\n"
        "sys.argv = ['attnviz', *sys.argv[1:]]\n"
        "try:\n    runpy.run_module('attnviz', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'CLEAN', file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe, *command], capture_output=True, text=True, check=False)
    assert result.stderr.strip().endswith("CLEAN"), result.stderr[-500:]
