"""Tests for attnviz.images: loading awkward files, preprocessing, and mapping maps back to original pixels."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attnviz.errors import ImageError
from attnviz.images import (
    MODES,
    Geometry,
    cell_centre_to_original,
    map_to_original,
    original_to_cell,
    preprocess,
    preprocess_batch,
)
from attnviz.io.photos import load_image

SHAPES = {"square": (200, 200), "wide": (300, 120), "tall": (120, 300)}
GRIDS = [(224, 7, 7), (100, 5, 3)]  # (input size, grid_h, grid_w); 100 / 3 is not a whole number of pixels


def expected_axis(lo: float, hi: float, orig: int, size: int, mode: str, long_side: int, short_side: int):
    """Original-image interval [a, b) that input interval [lo, hi) shows, from each mode's arithmetic alone."""
    if mode == "resize":
        return lo * orig / size, hi * orig / size
    fitted_side = short_side if mode == "crop" else long_side
    resized = round(orig * size / fitted_side)
    if mode == "crop":
        start = (resized - size) // 2  # pixels of the resized image cut off before the input starts
        return (lo + start) * orig / resized, (hi + start) * orig / resized
    pad = (size - resized) // 2
    a, b = (lo - pad) * orig / resized, (hi - pad) * orig / resized
    return max(a, 0.0), min(b, float(orig))


def expected_cell_box(row: int, col: int, shape, size: int, grid_h: int, grid_w: int, mode: str):
    width, height = shape
    long_side, short_side = max(shape), min(shape)
    x0, x1 = expected_axis(col * size / grid_w, (col + 1) * size / grid_w, width, size, mode, long_side, short_side)
    y0, y1 = expected_axis(row * size / grid_h, (row + 1) * size / grid_h, height, size, mode, long_side, short_side)
    return x0, y0, x1, y1


def one_hot(grid_h: int, grid_w: int, row: int, col: int) -> np.ndarray:
    grid = np.zeros((grid_h, grid_w), dtype=np.float32)
    grid[row, col] = 1.0
    return grid


def corner_and_middle_cells(grid_h: int, grid_w: int) -> list[tuple[int, int]]:
    last_r, last_c = grid_h - 1, grid_w - 1
    return [(0, 0), (0, last_c), (last_r, 0), (last_r, last_c), (grid_h // 2, grid_w // 2)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape_name", SHAPES)
@pytest.mark.parametrize(("size", "grid_h", "grid_w"), GRIDS)
def test_one_hot_cell_lands_on_expected_original_pixels(mode, shape_name, size, grid_h, grid_w):
    shape = SHAPES[shape_name]
    geometry = Geometry.fit(shape, size, mode)
    for row, col in corner_and_middle_cells(grid_h, grid_w):
        x0, y0, x1, y1 = expected_cell_box(row, col, shape, size, grid_h, grid_w, mode)
        nearest = map_to_original(one_hot(grid_h, grid_w, row, col), geometry, resample="nearest")
        assert nearest.shape == (shape[1], shape[0])
        hot = np.nan_to_num(nearest) > 0.5
        if x1 - x0 < 0.5 or y1 - y0 < 0.5:  # the cell lies in the letterbox padding: nothing of it is drawn
            assert not hot.any(), (row, col)
            continue
        rows, cols = np.nonzero(hot)
        got = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
        assert got == pytest.approx((x0, y0, x1, y1), abs=1.0), (row, col)
        assert hot.sum() == (got[2] - got[0]) * (got[3] - got[1]), "the hot region is a filled rectangle"

        smooth = np.nan_to_num(map_to_original(one_hot(grid_h, grid_w, row, col), geometry), nan=-1.0)
        peak_y, peak_x = np.unravel_index(np.argmax(smooth), smooth.shape)
        assert x0 - 1 <= peak_x + 0.5 <= x1 + 1 and y0 - 1 <= peak_y + 0.5 <= y1 + 1, (row, col)
        unclipped = expected_cell_box(row, col, shape, size, grid_h, grid_w, "crop" if mode == "crop" else "resize")
        if mode != "letterbox" or (x0, y0, x1, y1) == unclipped:  # the cell centre is in the picture
            # the peak (a plateau out to the edge for border cells, as align_corners=False clamps) is at the centre
            at_centre = smooth[int((y0 + y1) / 2), int((x0 + x1) / 2)]
            assert at_centre >= smooth.max() - 0.05 and smooth.max() > 0.9, (row, col)


@pytest.mark.parametrize("shape", [(224, 224), (300, 120), (97, 413)])
def test_bilinear_matches_torch_interpolate_in_resize_mode(shape):
    import torch
    import torch.nn.functional as F

    attention = np.random.default_rng(1).random((7, 5)).astype(np.float32)
    reference = F.interpolate(
        torch.from_numpy(attention)[None, None], size=(shape[1], shape[0]), mode="bilinear", align_corners=False
    )[0, 0].numpy()
    mapped = map_to_original(attention, Geometry.fit(shape, 224, "resize"))
    np.testing.assert_allclose(mapped, reference, atol=1e-5)


@pytest.mark.parametrize("shape_name", SHAPES)
def test_crop_marks_unseen_strips_as_nan(shape_name):
    width, height = SHAPES[shape_name]
    mapped = map_to_original(np.ones((7, 7)), Geometry.fit((width, height), 224, "crop"))
    resized_w, resized_h = (round(side * 224 / min(width, height)) for side in (width, height))
    seen_x0 = (resized_w - 224) // 2 * width / resized_w
    seen_y0 = (resized_h - 224) // 2 * height / resized_h
    seen_x1, seen_y1 = seen_x0 + 224 * width / resized_w, seen_y0 + 224 * height / resized_h
    cols_seen = (np.arange(width) + 0.5 >= seen_x0) & (np.arange(width) + 0.5 < seen_x1)
    rows_seen = (np.arange(height) + 0.5 >= seen_y0) & (np.arange(height) + 0.5 < seen_y1)
    seen = rows_seen[:, None] & cols_seen[None, :]
    assert np.isnan(mapped[~seen]).all()
    assert np.allclose(mapped[seen], 1.0)
    assert (shape_name == "square") == seen.all()


@pytest.mark.parametrize("mode", ["resize", "letterbox"])
def test_resize_and_letterbox_leave_no_unseen_pixels(mode):
    for shape in SHAPES.values():
        assert not np.isnan(map_to_original(np.random.rand(7, 7), Geometry.fit(shape, 224, mode))).any()


def test_geometry_boxes_for_wide_image():
    letterbox = Geometry.fit((300, 120), 224, "letterbox")
    assert letterbox.input_valid_box() == (0, 67, 224, 157)  # 120 * 224 / 300 = 89.6 -> 90 rows, 67 above
    assert letterbox.original_visible_box() == (0, 0, 300, 120)
    crop = Geometry.fit((300, 120), 224, "crop")
    assert crop.input_valid_box() == (0, 0, 224, 224)
    assert crop.original_visible_box() == pytest.approx((90, 0, 210, 120))  # 560 wide, 168 cut on each side


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", [*SHAPES.values(), (301, 97)])
def test_to_input_and_to_original_are_inverse(mode, shape):
    geometry = Geometry.fit(shape, 224, mode)
    for point in [(0.0, 0.0), (0.5, 0.5), (shape[0] / 3, shape[1] * 0.8), (float(shape[0]), float(shape[1]))]:
        assert geometry.to_original(*geometry.to_input(*point)) == pytest.approx(point)
        assert geometry.to_input(*geometry.to_original(*point)) == pytest.approx(point)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape_name", SHAPES)
def test_original_to_cell_agrees_with_cell_centres_and_nearest_map(mode, shape_name):
    shape = SHAPES[shape_name]
    geometry = Geometry.fit(shape, 224, mode)
    for row, col in corner_and_middle_cells(7, 7):
        x, y = cell_centre_to_original(row, col, geometry, 7, 7)
        inside = 0 <= x < shape[0] and 0 <= y < shape[1]
        assert original_to_cell(x, y, geometry, 7, 7) == ((row, col) if inside else None)
    labels = np.arange(49, dtype=np.float32).reshape(7, 7)
    drawn = map_to_original(labels, geometry, resample="nearest")
    for px, py in [(0, 0), (shape[0] - 1, shape[1] - 1), (shape[0] // 2, shape[1] // 3), (17, 41)]:
        cell = original_to_cell(px + 0.5, py + 0.5, geometry, 7, 7)
        assert (cell is None) == math.isnan(drawn[py, px])
        if cell is not None:
            assert drawn[py, px] == cell[0] * 7 + cell[1]


def test_original_to_cell_outside_the_image_or_the_crop_is_none():
    crop = Geometry.fit((300, 120), 224, "crop")
    assert original_to_cell(10.5, 60.5, crop, 7, 7) is None  # in the strip cut off on the left
    assert original_to_cell(150.5, 60.5, crop, 7, 7) == (3, 3)
    assert original_to_cell(-1, 5, crop, 7, 7) is None
    assert original_to_cell(5, 120, Geometry.fit((300, 120), 224, "resize"), 7, 7) is None


def test_preprocess_shapes_values_and_letterbox_padding():
    red = Image.new("RGB", (300, 120), (255, 0, 0))
    for mode in MODES:
        tensor, geometry = preprocess(red, 224, mode)
        assert tuple(tensor.shape) == (1, 3, 224, 224) and geometry.mode == mode
    tensor, geometry = preprocess(red, 224, "letterbox")
    x0, y0, x1, y1 = (int(v) for v in geometry.input_valid_box())
    assert (tensor[..., :y0, :] == 0).all() and (tensor[..., y1:, :] == 0).all()
    assert tensor[0, 0, y0:y1, x0:x1].min() == pytest.approx((1 - 0.485) / 0.229, abs=1e-4)
    grey_mean = Image.new("RGB", (40, 40), (124, 116, 104))  # ImageNet mean in 0..255
    assert preprocess(grey_mean, 32)[0].abs().max() < 0.02


def test_preprocess_crop_keeps_the_centre():
    image = Image.new("RGB", (300, 100), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 50, 100))  # red only in the left sixth, which crop cuts off
    tensor, _ = preprocess(image, 64, "crop", mean=(0, 0, 0), std=(1, 1, 1))
    assert tensor[0, 0].max() < 0.05 and tensor[0, 2].min() > 0.95


def test_preprocess_batch_stacks():
    images = [Image.new("RGB", (50, 30)), Image.new("L", (30, 50))]
    batch, geometries = preprocess_batch(images, 32, "letterbox")
    assert tuple(batch.shape) == (2, 3, 32, 32)
    assert [g.original_size for g in geometries] == [(50, 30), (30, 50)]


def assert_one_line_error(excinfo, *words: str) -> None:
    text = str(excinfo.value)
    assert "\n" not in text
    for word in words:
        assert word.lower() in text.lower(), (word, text)


@pytest.mark.parametrize("size", [0, -1, 8, 4097, 22.5, "224", True])
def test_bad_size_is_rejected(size):
    with pytest.raises(ImageError) as excinfo:
        preprocess(Image.new("RGB", (32, 32)), size)
    assert_one_line_error(excinfo, "size", str(size))
    assert excinfo.value.exit_code == 2


def test_unknown_mode_is_rejected_listing_modes():
    with pytest.raises(ImageError) as excinfo:
        preprocess(Image.new("RGB", (32, 32)), 32, "squash")
    assert_one_line_error(excinfo, "squash", *MODES)


def test_unknown_resample_is_rejected():
    with pytest.raises(ImageError) as excinfo:
        map_to_original(np.ones((2, 2)), Geometry.fit((32, 32), 32, "resize"), resample="cubic")
    assert_one_line_error(excinfo, "cubic", "nearest")


def save(image: Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


def test_exif_orientation_is_applied(tmp_path):
    stored = Image.new("RGB", (40, 20), (255, 0, 0))
    stored.paste((0, 0, 255), (0, 10, 40, 20))  # top half red, bottom half blue
    exif = stored.getexif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    image = load_image(save(stored, tmp_path / "rotated.jpg", exif=exif, quality=95))
    assert image.size == (20, 40)
    left, right = image.getpixel((3, 20)), image.getpixel((16, 20))
    assert right[0] > 200 and right[2] < 60  # the top of the stored image is now on the right
    assert left[2] > 200 and left[0] < 60


def test_greyscale_becomes_rgb(tmp_path):
    image = load_image(save(Image.new("L", (8, 6), 90), tmp_path / "grey.png"))
    assert image.mode == "RGB" and image.getpixel((2, 2)) == (90, 90, 90)
    assert load_image(save(Image.new("1", (8, 6), 1), tmp_path / "bw.png")).getpixel((0, 0)) == (255, 255, 255)


def test_palette_with_transparency_goes_on_white(tmp_path):
    palette = Image.new("P", (10, 10), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.paste(1, (5, 0, 10, 10))
    image = load_image(save(palette, tmp_path / "palette.png", transparency=0))
    assert image.mode == "RGB"
    assert image.getpixel((1, 1)) == (255, 255, 255) and image.getpixel((8, 1)) == (255, 0, 0)


def test_rgba_is_composited_on_white(tmp_path):
    image = load_image(save(Image.new("RGBA", (6, 6), (255, 0, 0, 128)), tmp_path / "rgba.png"))
    red, green, blue = image.getpixel((3, 3))
    assert red == 255 and 120 <= green <= 135 and green == blue
    la = load_image(save(Image.new("LA", (6, 6), (0, 0)), tmp_path / "la.png"))
    assert la.getpixel((0, 0)) == (255, 255, 255)


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    image = load_image(save(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), tmp_path / "cmyk.jpg"))
    red, green, blue = image.getpixel((8, 8))
    assert image.mode == "RGB" and red > 200 and green < 60 and blue < 60


def test_16_bit_png_is_stretched_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 32).astype(np.uint16).reshape(32, 64)
    source = Image.fromarray(ramp)
    assert source.mode == "I;16"
    values = np.asarray(load_image(save(source, tmp_path / "deep.png")))
    assert values.min() <= 2 and values.max() >= 253 and len(np.unique(values)) > 100


@pytest.mark.parametrize("dtype", [">u2", "<i4", "<f4"])  # Pillow modes I;16B, I and F
def test_other_high_depth_modes_use_their_range(tmp_path, dtype):
    narrow = (np.arange(16 * 16).reshape(16, 16) * 8 + 1000).astype(dtype)  # 1000..3040
    values = np.asarray(load_image(save(Image.fromarray(narrow), tmp_path / "deep.tif")))
    assert values.min() <= 2 and values.max() >= 253


def test_animated_gif_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), colour) for colour in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert load_image(path).getpixel((4, 4)) == (255, 0, 0)


def test_tiny_image_is_rejected(tmp_path):
    with pytest.raises(ImageError) as excinfo:
        load_image(save(Image.new("RGB", (1, 1)), tmp_path / "dot.png"))
    assert_one_line_error(excinfo, "dot.png", "too small")


def test_empty_file_is_rejected(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError) as excinfo:
        load_image(tmp_path / "empty.png")
    assert_one_line_error(excinfo, "empty.png", "empty")


def test_text_file_named_png_is_rejected(tmp_path):
    (tmp_path / "notes.png").write_text("not a picture\nat all\n")
    with pytest.raises(ImageError) as excinfo:
        load_image(tmp_path / "notes.png")
    assert_one_line_error(excinfo, "notes.png", "not an image")


def test_truncated_jpeg_is_rejected_now(tmp_path):
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    whole = save(Image.fromarray(noise), tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "half.jpg").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ImageError) as excinfo:
        load_image(tmp_path / "half.jpg")
    assert_one_line_error(excinfo, "half.jpg", "truncated")


def test_directory_is_rejected(tmp_path):
    with pytest.raises(ImageError) as excinfo:
        load_image(tmp_path)
    assert_one_line_error(excinfo, str(tmp_path), "directory")


def test_missing_file_is_rejected(tmp_path):
    with pytest.raises(ImageError) as excinfo:
        load_image(tmp_path / "nowhere.jpg")
    assert_one_line_error(excinfo, "nowhere.jpg", "not found")
    assert excinfo.value.exit_code == 2


@pytest.mark.parametrize("limit", [1000, 6000])  # 10000 pixels: Pillow's error (> 2x limit) and its warning
def test_decompression_bomb_limit_from_env(tmp_path, monkeypatch, limit):
    path = save(Image.new("RGB", (100, 100)), tmp_path / "big.png")
    before = Image.MAX_IMAGE_PIXELS
    monkeypatch.setenv("ATTNVIZ_MAX_PIXELS", str(limit))
    with pytest.raises(ImageError) as excinfo:
        load_image(path)
    assert_one_line_error(excinfo, "big.png", "10000", str(limit), "ATTNVIZ_MAX_PIXELS")
    assert Image.MAX_IMAGE_PIXELS == before


def test_env_limit_can_raise_pillows_limit(tmp_path, monkeypatch):
    path = save(Image.new("RGB", (100, 100)), tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    monkeypatch.setenv("ATTNVIZ_MAX_PIXELS", "20000")
    assert load_image(path).size == (100, 100)
    assert Image.MAX_IMAGE_PIXELS == 1000
    monkeypatch.setenv("ATTNVIZ_MAX_PIXELS", "lots")
    with pytest.raises(ImageError) as excinfo:
        load_image(path)
    assert_one_line_error(excinfo, "ATTNVIZ_MAX_PIXELS", "lots")


def test_importing_images_does_not_import_torch():
    code = "import sys, attnviz.images; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_bad_mean_std_attention_and_cell_are_rejected():
    image = Image.new("RGB", (32, 32))
    with pytest.raises(ImageError) as excinfo:
        preprocess(image, 32, std=(0.2, 0.0, 0.2))
    assert_one_line_error(excinfo, "std")
    with pytest.raises(ImageError) as excinfo:
        preprocess(Image.new("RGB", (1, 5)), 32)
    assert_one_line_error(excinfo, "too small")
    geometry = Geometry.fit((32, 32), 32, "resize")
    with pytest.raises(ValueError, match="2-D"):
        map_to_original(np.ones((1, 7, 7)), geometry)
    with pytest.raises(ValueError, match="NaN"):
        map_to_original(np.full((7, 7), np.nan), geometry)
    with pytest.raises(ValueError, match="outside"):
        cell_centre_to_original(7, 0, geometry, 7, 7)
