"""Folder runs (attnviz.pipeline, attnviz.batch, cli/batch.py): the same files as one photo at a time, every photo
its own maps in a batch, unique names, no silent overwrite, no drawing of attnviz's own outputs, and bad files
reported one line each while the others are drawn."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.cli_utils import run

FAST = ["--size", "64", "--device", "cpu"]


def _photo(path: Path, size: tuple[int, int], seed: int) -> Path:
    """A photo-like picture: a gradient with a bright disk somewhere, different for each seed."""
    rng = np.random.default_rng(seed)
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    cx, cy = rng.integers(width // 4, 3 * width // 4), rng.integers(height // 4, 3 * height // 4)
    rgb = np.stack([xx / width * 255, yy / height * 255, np.full_like(xx, 60 + 20 * seed)], axis=-1)
    rgb[(xx - cx) ** 2 + (yy - cy) ** 2 < (min(size) // 5) ** 2] = (250, 240, 30)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb.astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four photos of different sizes and aspects."""
    root = tmp_path_factory.mktemp("photos")
    for seed, size in enumerate([(96, 64), (64, 96), (120, 80), (80, 80)]):
        _photo(root / f"photo{seed}.png", size, seed)
    return root


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (hidden temporary files too), by name, with its bytes."""
    return {p.name: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} if folder.exists() else {}


def _arrays(npz: Path) -> dict[str, np.ndarray]:
    with np.load(npz) as data:
        return {name: data[name] for name in data.files}


def test_folder_run_writes_the_files_of_one_photo_at_a_time(folder: Path, tmp_path: Path) -> None:
    code, _, err = run("show", "cbam", str(folder), *FAST, "--out", str(tmp_path / "all"), "--workers", "2")
    assert code == 0, err
    assert "show: 4 of 4 images drawn in" in err and "img/s" in err  # the summary line
    for photo in sorted(folder.iterdir()):
        code, _, err = run("show", "cbam", str(photo), *FAST, "--out", str(tmp_path / "one"))
        assert code == 0, err
    together, alone = _files(tmp_path / "all"), _files(tmp_path / "one")
    assert sorted(together) == [f"photo{i}_cbam_show.png" for i in range(4)]
    assert together == alone  # byte for byte


def test_channels_folder_matches_single_runs(folder: Path, tmp_path: Path) -> None:
    code, out, err = run("channels", "se", str(folder), "--layer", "3", *FAST, "--out", str(tmp_path / "all"), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert [Path(r["image"]).name for r in result["results"]] == [f"photo{i}.png" for i in range(4)]
    assert result["skipped"] == []
    photo = folder / "photo2.png"
    code, out, err = run("channels", "se", str(photo), "--layer", "3", *FAST, "--out", str(tmp_path / "one"), "--json")
    assert code == 0, err
    assert "files" in json.loads(out) and "results" not in json.loads(out)  # one image: its result as before
    name = "photo2_se_channels_stage3.png"
    assert (tmp_path / "all" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()


def test_a_batch_gives_each_photo_its_own_maps(folder: Path, tmp_path: Path) -> None:
    args = ["show", "cbam", str(folder), *FAST, "--save-raw", "--json"]
    code, out, err = run(*args, "--out", str(tmp_path / "batched"), "--batch-size", "3")
    assert code == 0, err
    code, _, err = run(*args, "--out", str(tmp_path / "single"), "--batch-size", "1", "--workers", "0")
    assert code == 0, err
    maps = {Path(r["image"]).name: r["maps"] for r in json.loads(out)["results"]}
    assert len(maps) == 4 and all(m[0]["shape"][0] == 1 for m in maps.values())  # one photo per map
    for index in range(4):
        batched = _arrays(tmp_path / "batched" / f"photo{index}_cbam_raw.npz")
        single = _arrays(tmp_path / "single" / f"photo{index}_cbam_raw.npz")
        assert batched.keys() == single.keys()
        for name, values in single.items():
            np.testing.assert_allclose(batched[name], values, atol=1e-5, err_msg=f"photo{index} {name}")
    first = _arrays(tmp_path / "batched" / "photo0_cbam_raw.npz")
    other = _arrays(tmp_path / "batched" / "photo1_cbam_raw.npz")
    assert any(not np.allclose(first[name], other[name], atol=1e-3) for name in first)  # not one photo's maps twice


def test_a_bad_file_first_in_a_folder_is_reported_and_the_rest_drawn(folder: Path, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    shutil.copytree(folder, photos)
    (photos / "a_notes.png").write_text("not a picture")
    (photos / "b_empty.jpg").write_bytes(b"")
    out_dir = tmp_path / "out"
    code, _, err = run("show", "cbam", str(photos), *FAST, "--out", str(out_dir))
    assert code == 2, err
    lines = err.splitlines()
    assert [line for line in lines if line.startswith("skipped ")] == [
        f"skipped {photos / 'a_notes.png'}: {photos / 'a_notes.png'} is not an image Pillow can read",
        f"skipped {photos / 'b_empty.jpg'}: image file is empty: {photos / 'b_empty.jpg'}",
    ]
    assert "show: 4 of 6 images drawn in" in err
    assert "error: 2 of 6 images could not be drawn" in lines[-1]
    assert sorted(_files(out_dir)) == [f"photo{i}_cbam_show.png" for i in range(4)]  # no temporary files either


def test_a_failing_photo_of_a_folder_does_not_stop_the_others(folder: Path, tmp_path: Path) -> None:
    code, out, err = run("matrix", "mhsa", str(folder), "--query", "90,10", *FAST, "--out", str(tmp_path), "--json")
    assert code == 2, err
    result = json.loads(out)
    assert sorted(Path(s["image"]).name for s in result["skipped"]) == ["photo1.png", "photo3.png"]  # 64 and 80 wide
    assert all("outside the image" in s["error"] for s in result["skipped"])
    assert sorted(_files(tmp_path)) == ["photo0_mhsa_matrix.png", "photo2_mhsa_matrix.png"]


def test_colliding_stems_get_unique_names(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    paths = [
        _photo(inputs / "d1" / "same.png", (64, 48), 1),
        _photo(inputs / "d2" / "same.png", (64, 48), 2),
        _photo(inputs / "x.png", (64, 48), 3),
        _photo(inputs / "x.jpg", (64, 48), 4),
    ]
    out_dir = tmp_path / "out"
    code, _, err = run("show", "cbam", *map(str, paths), *FAST, "--out", str(out_dir), "--save-raw")
    assert code == 0, err
    written = _files(out_dir)
    stems = ["d1-same", "d2-same", "x-png", "x-jpg"]
    assert sorted(written) == sorted(f"{s}_cbam_{what}" for s in stems for what in ("show.png", "raw.npz", "raw.json"))
    assert len({written[f"{s}_cbam_show.png"] for s in stems}) == 4  # four different pictures
    assert err.count("wrote ") == 12


def test_files_from_before_the_run_are_replaced_with_a_notice(folder: Path, tmp_path: Path) -> None:
    mine = tmp_path / "photo0_cbam_show.png"
    mine.write_bytes(b"the user's own file")
    code, _, err = run("show", "cbam", str(folder / "photo0.png"), *FAST, "--out", str(tmp_path))
    assert code == 0, err
    assert f"replaced {mine}, written before this run" in err
    assert mine.read_bytes() != b"the user's own file"
    code, _, err = run("coords", "coord", str(folder / "photo0.png"), *FAST, "--out", str(tmp_path))
    assert code == 0, err
    assert "replaced" not in err  # a new name replaces nothing


def test_outputs_in_the_input_folder_are_not_drawn_again(folder: Path, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    shutil.copytree(folder, photos)
    code, _, err = run("show", "cbam", str(photos), *FAST, "--out", str(photos))
    assert code == 0, err
    after_first = _files(photos)
    assert len(after_first) == 8
    code, out, err = run("show", "cbam", str(photos), *FAST, "--out", str(photos), "--json")
    assert code == 0, err
    assert len(json.loads(out)["results"]) == 4
    assert sorted(_files(photos)) == sorted(after_first)  # no photo0_cbam_show_cbam_show.png
    code, _, err = run("show", "cbam", str(photos), *FAST, "--out", str(photos))
    assert "left out 4 pictures attnviz drew in" in err and "replaced" in err


def test_every_drawing_command_takes_folders(folder: Path, tmp_path: Path) -> None:
    code, _, err = run("coords", "coord", str(folder), *FAST, "--out", str(tmp_path / "coords"))
    assert code == 0, err
    assert sorted(_files(tmp_path / "coords")) == [f"photo{i}_coord_coords.png" for i in range(4)]
    pair = [str(folder / "photo0.png"), str(folder / "photo1.png")]
    code, out, err = run("asff-weights", "demo", *pair, "--out", str(tmp_path / "asff"), "--device", "cpu", "--json")
    assert code == 0, err
    assert [Path(r["image"]).name for r in json.loads(out)["results"]] == ["photo0.png", "photo1.png"]
    assert {name.split("_det_")[0] for name in _files(tmp_path / "asff")} == {"photo0", "photo1"}


def test_jpg_and_webp_are_written_and_known_as_attnviz_pictures(folder: Path, tmp_path: Path) -> None:
    from attnviz.render.save import drawn_by_attnviz

    for fmt, kind in (("jpg", "JPEG"), ("webp", "WEBP")):
        code, _, err = run("show", "cbam", str(folder / "photo0.png"), *FAST, "--out", str(tmp_path), "-f", fmt)
        assert code == 0, err
        written = tmp_path / f"photo0_cbam_show.{fmt}"
        with Image.open(written) as image:
            assert image.format == kind and image.size[0] > 300
        assert drawn_by_attnviz(written)
    assert not drawn_by_attnviz(folder / "photo0.png")
    code, _, err = run("show", "cbam", str(folder), *FAST, "--out", str(tmp_path / "x"), "-f", "jpg", "--heat-only")
    assert code == 2 and "a JPEG cannot hold" in err
    assert not (tmp_path / "x").exists()


def test_fast_png_holds_the_very_pixels(tmp_path: Path) -> None:
    import io

    from attnviz.render.save import png_bytes

    rng = np.random.default_rng(0)
    for mode, shape in (("RGB", (37, 23, 3)), ("RGBA", (5, 41, 4)), ("L", (1, 9)), ("LA", (8, 8, 2))):
        image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)
        with Image.open(io.BytesIO(png_bytes(image))) as back:
            assert back.mode == mode and np.array_equal(np.asarray(back), np.asarray(image))
            assert back.info["Software"] == "attnviz"


def test_batch_options_are_checked(folder: Path, tmp_path: Path) -> None:
    code, _, err = run("show", "cbam", str(folder), *FAST, "--out", str(tmp_path), "--batch-size", "0")
    assert code == 2 and "--batch-size must be between 1 and 1024, got 0" in err
    code, _, err = run("show", "cbam", str(folder), *FAST, "--out", str(tmp_path), "--workers", "-1")
    assert code == 2 and "--workers must be between 0 and 64" in err
    assert not any(tmp_path.iterdir())


def test_python_draws_a_folder_as_the_cli_does(folder: Path, tmp_path: Path) -> None:
    import attnviz
    from attnviz.batch import ShowTask, Writing, draw_all

    loaded = attnviz.load("cbam", size=64, device="cpu")
    task = ShowTask(loaded, Writing(tmp_path / "py"), size=64)
    outcomes = list(draw_all(task, [folder], out=tmp_path / "py", workers=0))
    assert [o.path.name for o in outcomes] == [f"photo{i}.png" for i in range(4)]
    assert all(o.error is None and len(o.files) == 1 for o in outcomes)
    view = attnviz.show(loaded, folder / "photo3.png", size=64)
    with Image.open(outcomes[3].files[0]) as written:
        assert np.array_equal(np.asarray(written), np.asarray(view.image))
