"""A user's first bad input gets a clear answer: the CLI over a catalogue of bad (and odd but valid) inputs.

Every error case checks the exit code (2 for a request that cannot be carried out, 1 for a failure while carrying
it out, see attnviz/errors.py), one stderr line naming the problem, no traceback, and nothing left in --out, not
even a temporary file. The odd but valid inputs (16-bit, CMYK, palette with transparency, EXIF-rotated, animated,
a path with spaces and non-ASCII characters) must work. Writes that fail or are interrupted halfway leave nothing.
"""

from __future__ import annotations

import errno
import io
import json
import pathlib
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image, ImageOps
from typer.testing import CliRunner

from attnviz.cli.app import app
from attnviz.errors import AttnvizError

runner = CliRunner()
FAST = ["--size", "64", "--device", "cpu"]
WIDTH, HEIGHT = 80, 48


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def files_in(folder: Path) -> list[Path]:
    """Every file under `folder`, hidden temporary files included."""
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def assert_one_line_error(code: int, err: str, expected_code: int, needle: str) -> None:
    message = err.strip()
    assert code == expected_code, message
    assert "Traceback" not in message, message
    assert len(message.splitlines()) == 1, message
    assert needle in message, message


class TouchesAFile:
    """Unpickling this creates `target`: what a malicious checkpoint could do."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (pathlib.Path.touch, (pathlib.Path(self.target),))


def _photo_pixels() -> np.ndarray:
    """A wide gradient with a bright disk: an 80 x 48 RGB photo stand-in."""
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    rgb = np.stack([xx / WIDTH * 255, yy / HEIGHT * 255, np.full_like(xx, 80)], axis=-1)
    rgb[(xx - 55) ** 2 + (yy - 24) ** 2 < 120] = (250, 250, 40)
    return rgb.astype(np.uint8)


def _blocks(seed: int) -> Image.Image:
    """An image of four flat colours in 8 x 8 blocks: exactly representable in a GIF palette."""
    colours = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [240, 240, 240]], dtype=np.uint8)
    cells = np.random.default_rng(seed).integers(0, 4, size=(HEIGHT // 8, WIDTH // 8))
    return Image.fromarray(colours[np.kron(cells, np.ones((8, 8), dtype=int))])


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every input file of the catalogue, made once."""
    from safetensors.torch import save_file

    from attnviz.models.backbones import build_model

    folder = tmp_path_factory.mktemp("inputs")
    photo = Image.fromarray(_photo_pixels())
    paths = {name: folder / name for name in ("photo.png", "empty.png", "notes.png", "tiny.png", "big.png")}
    photo.save(paths["photo.png"])
    paths["empty.png"].write_bytes(b"")
    paths["notes.png"].write_text("this is not an image\n")
    Image.new("RGB", (1, 1), "red").save(paths["tiny.png"])
    Image.new("RGB", (100, 100)).save(paths["big.png"])

    jpeg = io.BytesIO()
    photo.save(jpeg, format="JPEG")
    paths["truncated.jpg"] = folder / "truncated.jpg"
    paths["truncated.jpg"].write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])

    paths["deep.png"] = folder / "deep.png"
    Image.fromarray((np.arange(WIDTH * HEIGHT).reshape(HEIGHT, WIDTH) * 17).astype(np.uint16)).save(paths["deep.png"])
    paths["cmyk.jpg"] = folder / "cmyk.jpg"
    photo.convert("CMYK").save(paths["cmyk.jpg"])
    paths["palette.png"] = folder / "palette.png"
    photo.convert("P").save(paths["palette.png"], transparency=0)
    paths["rotated.jpg"] = folder / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    photo.save(paths["rotated.jpg"], exif=exif)

    first, second = _blocks(1), _blocks(2)
    paths["animated.gif"] = folder / "animated.gif"
    first.save(paths["animated.gif"], save_all=True, append_images=[second], duration=100, loop=0)
    paths["frame0.png"], paths["frame1.png"] = folder / "frame0.png", folder / "frame1.png"
    first.save(paths["frame0.png"])
    second.save(paths["frame1.png"])

    odd = folder / "my photos ü" / "Ünïcödé 猫 [red] x.png"
    odd.parent.mkdir()
    photo.save(odd)
    paths["odd"] = odd
    paths["markup"] = folder / "a[" / "]missing.png"  # "[/]" in the path: Rich markup must not eat it
    paths["no_images"] = folder / "no images"
    paths["no_images"].mkdir()
    (paths["no_images"] / "readme.txt").write_text("nothing to see")
    paths["file.txt"] = folder / "file.txt"
    paths["file.txt"].write_text("a regular file, so nothing can be created under it\n")

    paths["se.safetensors"] = folder / "se.safetensors"
    save_file(build_model("resnet18", "se").state_dict(), str(paths["se.safetensors"]))
    paths["cbam.safetensors"] = folder / "cbam.safetensors"
    save_file(build_model("resnet18", "cbam").state_dict(), str(paths["cbam.safetensors"]))
    whole = paths["cbam.safetensors"].read_bytes()
    paths["truncated.safetensors"] = folder / "truncated.safetensors"
    paths["truncated.safetensors"].write_bytes(whole[: len(whole) // 2])
    paths["model.pt"] = folder / "model.pt"
    torch.save(build_model("resnet18", "cbam"), paths["model.pt"])
    paths["empty.pt"] = folder / "empty.pt"
    paths["empty.pt"].write_bytes(b"")
    return paths


# --------------------------------------------------------------------------------------------------- catalogue


@dataclass(frozen=True)
class Case:
    """One bad input: the command line (NAME placeholders are input files), the exit code and the message."""

    args: tuple[str, ...]
    code: int
    needle: str
    env: dict[str, str] = field(default_factory=dict)


def _case(args: str, code: int, needle: str, **env: str) -> Case:
    return Case(tuple(args.split("|")), code, needle, env)


CATALOGUE = {
    # files that are not usable images
    "missing file": _case("show|cbam|@nowhere.png", 2, "image not found"),
    "missing file, single-image command": _case("coords|coord|@nowhere.png", 2, "image file not found"),
    "a directory": _case("coords|coord|@no_images", 2, "holds no images"),  # coords takes folders
    "a folder without images": _case("show|cbam|@no_images", 2, "holds no images"),
    "an empty file": _case("show|cbam|@empty.png", 2, "image file is empty"),
    "a truncated JPEG": _case("show|cbam|@truncated.jpg", 2, "truncated or corrupt"),
    "a text file named .png": _case("show|cbam|@notes.png", 2, "is not an image Pillow can read"),
    "a 1x1 image": _case("channels|se|@tiny.png", 2, "is 1x1 pixels, too small"),
    "over the decompression-bomb limit": _case(
        "show|cbam|@big.png", 2, "10000 pixels, more than the limit of 5000", ATTNVIZ_MAX_PIXELS="5000"
    ),
    "a bad pixel limit": _case("show|cbam|@photo.png", 2, "ATTNVIZ_MAX_PIXELS must be", ATTNVIZ_MAX_PIXELS="lots"),
    "a path with Rich markup": _case("show|cbam|@markup", 2, "a[/]missing.png"),
    # where the pictures go
    "an unwritable --out": _case("show|cbam|@photo.png|--out|@file.txt/sub", 2, "cannot create output directory"),
    "an --out that is a file": _case("channels|se|@photo.png|--out|@file.txt", 2, "is a file, not a folder"),
    # names
    "unknown block": _case("show|nosuch|@photo.png", 2, "unknown block 'nosuch'"),
    "unknown backbone": _case("show|cbam|@photo.png|--backbone|vgg16", 2, "unknown backbone 'vgg16'"),
    "a block that cannot sit in a backbone": _case("show|asff|@photo.png", 2, "does not fit inside a backbone"),
    "stage 0": _case("show|cbam|@photo.png|--stages|0", 2, "stage 0 does not exist"),
    "stage 9": _case("show|cbam|@photo.png|--stages|2,9", 2, "stage 9 does not exist"),
    "--layer 9": _case("channels|se|@photo.png|--layer|9", 2, "--layer 9 is not a stage"),
    # values
    "--query right of the image": _case("matrix|mhsa|@photo.png|--query|80,10", 2, "outside the image (80x48"),
    "--query above the image": _case("matrix|mhsa|@photo.png|--query|10,-1", 2, "lies outside the image"),
    "--size 0": _case("show|cbam|@photo.png|--size|0", 2, "--size must be between 16 and 4096 pixels, got 0"),
    "--size negative": _case("show|cbam|@photo.png|--size|-64", 2, "--size must be between 16 and 4096"),
    "--alpha out of range": _case("show|cbam|@photo.png|--alpha|1.5", 2, "--alpha must be between 0 and 1"),
    "non-numeric --size": _case("show|cbam|@photo.png|--size|big", 2, "Invalid value for '--size'"),
    "non-numeric --alpha": _case("coords|coord|@photo.png|--alpha|half", 2, "Invalid value for '--alpha'"),
    "non-numeric --layer": _case("channels|se|@photo.png|--layer|last", 2, "Invalid value for '--layer'"),
    "non-numeric --top-k": _case("channels|se|@photo.png|--top-k|1.5", 2, "Invalid value for '--top-k'"),
    "non-numeric --stages": _case("show|cbam|@photo.png|--stages|two", 2, "--stages must be comma-separated"),
    "non-numeric --query": _case("matrix|mhsa|@photo.png|--query|centre", 2, "--query must be X,Y"),
    "non-numeric --heads": _case("matrix|mhsa|@photo.png|--heads|all", 2, "--heads must be comma-separated"),
    # weights
    "weights for another block": _case("show|cbam|@photo.png|--weights|@se.safetensors", 1, "does not fit this model"),
    "a truncated safetensors": _case(
        "show|cbam|@photo.png|--weights|@truncated.safetensors", 1, "as safetensors (Error while deserializing"
    ),
    "an empty weights file": _case("show|cbam|@photo.png|--weights|@empty.pt", 1, "is empty"),
    "a text file as weights": _case("show|cbam|@photo.png|--weights|@file.txt", 1, "is not a weights file"),
    "an image as weights": _case("show|cbam|@photo.png|--weights|@photo.png", 1, "is not a weights file"),
    "a missing weights file": _case("show|cbam|@photo.png|--weights|@nowhere.pt", 2, "weights file not found"),
    "a pickled model without --trust": _case("show|cbam|@photo.png|--weights|@model.pt", 2, "pass --trust only if"),
}


def _resolve(args: tuple[str, ...], inputs: dict[str, Path], folder: Path) -> list[str]:
    """ "@name" is an input file (or, when there is none of that name, a path in `folder` that does not exist)."""
    resolved = []
    for arg in args:
        if arg.startswith("@"):
            name, _, rest = arg[1:].partition("/")
            path = inputs.get(name, folder / name)
            arg = str(path / rest if rest else path)
        resolved.append(arg)
    return resolved


@pytest.mark.parametrize("case", list(CATALOGUE.values()), ids=list(CATALOGUE))
def test_bad_input_gets_one_line_and_leaves_nothing(
    case: Case, inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    out_dir = tmp_path / "out"
    args = _resolve(case.args, inputs, tmp_path)
    command, rest = args[:3], args[3:]
    if "--out" not in rest:
        rest += ["--out", str(out_dir)]
    code, _, err = run(*command, *FAST, *rest)  # the case's own --size comes after FAST's and wins
    assert_one_line_error(code, err, case.code, case.needle)
    assert files_in(out_dir) == []


def test_catalogue_is_complete() -> None:
    assert len(CATALOGUE) >= 25


@pytest.mark.parametrize("saver", ["torch.save", "pickle"])
def test_pickle_that_creates_a_file_never_runs_without_trust(
    saver: str, inputs: dict[str, Path], tmp_path: Path
) -> None:
    marker = tmp_path / "created_by_unpickling"
    weights = tmp_path / "evil.pt"
    payload = {"conv1.weight": TouchesAFile(marker)}
    if saver == "torch.save":
        torch.save(payload, weights)
    else:
        weights.write_bytes(pickle.dumps(payload))
    out_dir = tmp_path / "out"
    photo = str(inputs["photo.png"])
    code, _, err = run("show", "cbam", photo, "--weights", str(weights), *FAST, "--out", str(out_dir))
    assert_one_line_error(code, err, 2, "--trust")
    assert not marker.exists()
    assert files_in(out_dir) == []
    # control: the payload is real, it does create the file once the user trusts it
    code, _, err = run("show", "cbam", photo, "--weights", str(weights), "--trust", *FAST, "--out", str(out_dir))
    assert marker.exists()
    assert_one_line_error(code, err, 1, "")
    assert files_in(out_dir) == []


def test_trusted_pickled_model_works(inputs: dict[str, Path], tmp_path: Path) -> None:
    photo = str(inputs["photo.png"])
    code, _, err = run(
        "show", "cbam", photo, "--weights", str(inputs["model.pt"]), "--trust", *FAST, "--out", str(tmp_path)
    )
    assert code == 0, err
    assert [p.name for p in files_in(tmp_path)] == ["photo_cbam_show.png"]


# ------------------------------------------------------------------------------------ odd inputs that must work


def _show_raw(image: Path, out_dir: Path, *extra: str) -> dict[str, Any]:
    """`attnviz show cbam IMAGE --json --save-raw`: the JSON result of the one image, plus its raw summary."""
    code, out, err = run("show", "cbam", str(image), *FAST, "--out", str(out_dir), "--json", "--save-raw", *extra)
    assert code == 0, err
    (result,) = json.loads(out)["results"]
    picture, npz, summary = (Path(f) for f in result["files"])
    assert picture.suffix == ".png" and picture.exists() and npz.suffix == ".npz"
    result["raw"] = json.loads(summary.read_text())
    with np.load(npz) as arrays:
        result["arrays"] = {name: arrays[name] for name in arrays.files}
    return result


@pytest.mark.parametrize("name", ["deep.png", "cmyk.jpg", "palette.png"])
def test_unusual_image_modes_work(name: str, inputs: dict[str, Path], tmp_path: Path) -> None:
    result = _show_raw(inputs[name], tmp_path)
    assert result["raw"]["original_size"] == [WIDTH, HEIGHT]
    assert all(np.isfinite(a).all() for a in result["arrays"].values())
    assert [p for p in files_in(tmp_path) if p.name.startswith(".")] == []


def test_exif_rotated_jpeg_is_drawn_upright(inputs: dict[str, Path], tmp_path: Path) -> None:
    weights = ("--weights", str(inputs["cbam.safetensors"]))
    result = _show_raw(inputs["rotated.jpg"], tmp_path / "rotated", *weights)
    assert result["raw"]["original_size"] == [HEIGHT, WIDTH]  # stored 80 x 48, displayed 48 x 80
    with Image.open(inputs["rotated.jpg"]) as stored:
        assert stored.size == (WIDTH, HEIGHT)
        upright_path = tmp_path / "upright.png"
        ImageOps.exif_transpose(stored).save(upright_path)
    rotated = result["arrays"]
    expected = _show_raw(upright_path, tmp_path / "upright", *weights)["arrays"]  # the same maps, bit for bit
    assert rotated.keys() == expected.keys()
    assert all(np.array_equal(rotated[k], expected[k]) for k in rotated)


def test_animated_gif_gives_its_first_frame(inputs: dict[str, Path], tmp_path: Path) -> None:
    weights = ("--weights", str(inputs["cbam.safetensors"]))
    gif = _show_raw(inputs["animated.gif"], tmp_path / "gif", *weights)["arrays"]
    first = _show_raw(inputs["frame0.png"], tmp_path / "first", *weights)["arrays"]
    second = _show_raw(inputs["frame1.png"], tmp_path / "second", *weights)["arrays"]
    assert all(np.array_equal(gif[k], first[k]) for k in gif)
    assert not all(np.array_equal(gif[k], second[k]) for k in gif)


def test_path_with_spaces_non_ascii_and_brackets_works(inputs: dict[str, Path], tmp_path: Path) -> None:
    out_dir = tmp_path / "Ausgabe ä 出力"
    code, _, err = run("show", "cbam", str(inputs["odd"]), *FAST, "--out", str(out_dir))
    assert code == 0, err
    (written,) = files_in(out_dir)
    assert written.name == "Ünïcödé 猫 [red] x_cbam_show.png"
    assert f"wrote {written}" in err  # printed as it is, brackets included
    code, out, err = run("coords", "coord", str(inputs["odd"]), *FAST, "--out", str(out_dir), "--json")
    assert code == 0, err
    assert json.loads(out)["image"] == str(inputs["odd"])


# ------------------------------------------------------------------------------- failing and interrupted writes


def _writes_half_then(exc: BaseException, started: list[Path]) -> Callable[..., None]:
    """A stand-in for PIL's Image.save / matplotlib's savefig: writes some bytes to the file, then raises `exc`.

    The path of every file it began to write is appended to `started`.
    """

    def save(_self: object, fp: IO[bytes], *args: Any, **kwargs: Any) -> None:
        started.append(Path(fp.name))
        fp.write(b"\x89PNG half")
        fp.flush()
        raise exc

    return save


FAILURES = {
    "disk full": (OSError(errno.ENOSPC, "No space left on device"), 1, "No space left on device"),
    "Ctrl-C": (KeyboardInterrupt(), 130, "interrupted"),
}


@pytest.mark.parametrize("failure", list(FAILURES), ids=list(FAILURES))
@pytest.mark.parametrize(
    ("command", "patched"),
    [
        (("show", "cbam"), (Image.Image, "save")),  # pictures from PIL, written on a second thread
        (("channels", "se"), (Figure, "savefig")),  # figures from matplotlib
    ],
    ids=["show", "channels"],
)
def test_write_failing_midway_leaves_nothing(
    failure: str,
    command: tuple[str, str],
    patched: tuple[Any, str],
    inputs: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exc, expected_code, needle = FAILURES[failure]
    started: list[Path] = []
    monkeypatch.setattr(*patched, _writes_half_then(exc, started))
    out_dir = tmp_path / "out"
    code, _, err = run(*command, str(inputs["photo.png"]), *FAST, "--out", str(out_dir), "--json")
    assert_one_line_error(code, err, expected_code, needle)
    assert [p.parent for p in started] == [out_dir]  # the write had begun, in --out
    assert files_in(out_dir) == []


@pytest.mark.parametrize("failure", list(FAILURES), ids=list(FAILURES))
def test_save_failing_midway_keeps_the_old_file(failure: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from attnviz.io.raw import save_raw
    from attnviz.render.save import save

    exc, _, _ = FAILURES[failure]
    target = tmp_path / "picture.png"
    old = Image.new("RGB", (4, 3), "blue")
    save(old, target)
    before = target.read_bytes()
    started: list[Path] = []
    monkeypatch.setattr(Image.Image, "save", _writes_half_then(exc, started))
    expected = AttnvizError if isinstance(exc, OSError) else KeyboardInterrupt
    with pytest.raises(expected):
        save(Image.new("RGB", (4, 3), "red"), target)
    with pytest.raises(expected):
        save(Image.new("RGB", (4, 3), "red"), tmp_path / "new.png")
    assert len(started) == 2
    assert files_in(tmp_path) == [target]
    assert target.read_bytes() == before

    def savez_half(file: IO[bytes], **_arrays: np.ndarray) -> None:
        file.write(b"PK half")
        raise exc

    monkeypatch.setattr(np, "savez_compressed", savez_half)
    with pytest.raises(expected):
        save_raw({"a": np.zeros(3)}, {"k": 1}, tmp_path / "raw")
    assert files_in(tmp_path) == [target]


def test_disk_full_message_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from attnviz.render.save import save

    disk_full = OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(Image.Image, "save", _writes_half_then(disk_full, []))
    with pytest.raises(AttnvizError) as info:
        save(Image.new("RGB", (4, 3)), tmp_path / "x.png")
    assert info.value.exit_code == 1
    assert str(tmp_path / "x.png") in info.value.message and info.value.hint == "No space left on device"
