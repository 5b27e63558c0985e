"""Rendering: overlays, grids and captions (Pillow), charts (matplotlib figures), atomic saving."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image

from attnviz.errors import UsageError
from attnviz.io.raw import save_raw
from attnviz.render import (
    caption_tile,
    channel_bars,
    channel_small_multiples,
    colorize,
    colormap_lut,
    coordinate_panel,
    desaturate,
    figure_to_image,
    grid,
    mark_point,
    matrix_heatmaps,
    normalised_entropy,
    overlay,
    save,
    selection_chart,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes

W, H = 64, 48  # not square on purpose


@pytest.fixture
def photo() -> Image.Image:
    yy, xx = np.mgrid[0:H, 0:W]
    rgb = np.stack([40 + 150 * xx / W, 60 + 150 * yy / H, np.full_like(xx, 120.0)], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def top_left_heat() -> np.ndarray:
    heat = np.zeros((H, W))
    heat[: H // 2, : W // 2] = 1.0
    return heat


def gaussian(cx: float, cy: float, sigma: float) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W] + 0.5
    return np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))


# --- overlay ---------------------------------------------------------------------------------------------------


def test_overlay_keeps_size_and_is_rgb(photo: Image.Image) -> None:
    out = overlay(photo.convert("L"), gaussian(20, 20, 8))
    assert out.size == photo.size
    assert out.mode == "RGB"


def test_alpha_zero_is_the_photo(photo: Image.Image) -> None:
    out = overlay(photo, gaussian(20, 20, 8), alpha=0.0)
    assert np.array_equal(np.asarray(out), np.asarray(photo))


def test_alpha_one_is_the_colormap(photo: Image.Image) -> None:
    heat = gaussian(20, 20, 8)
    out = overlay(photo, heat, alpha=1.0, cmap="viridis")
    assert np.array_equal(np.asarray(out), colorize(heat, "viridis")[..., :3])


def test_hot_top_left_is_redder_with_jet(photo: Image.Image) -> None:
    out = np.asarray(overlay(photo, top_left_heat(), cmap="jet"), dtype=float)
    redness = out[..., 0] - out[..., 2]
    # the photo itself is redder bottom-right (red grows with x), so the heat has to win against it
    assert redness[: H // 2, : W // 2].mean() > redness[H // 2 :, W // 2 :].mean() + 50


def test_nan_is_drawn_as_the_desaturated_photo(photo: Image.Image) -> None:
    heat = gaussian(40, 20, 8)
    heat[:, :10] = np.nan
    out = np.asarray(overlay(photo, heat, contour=True))
    grey = np.asarray(desaturate(photo))
    assert np.array_equal(out[:, :10], grey[:, :10])
    assert (grey[..., 0] == grey[..., 2]).all()  # really without colour
    assert not np.array_equal(out[:, 10:], grey[:, 10:])


def test_colorize_marks_nan_transparent() -> None:
    heat = gaussian(20, 20, 8)
    heat[0, 0] = np.nan
    rgba = colorize(heat)
    assert rgba.dtype == np.uint8 and rgba.shape == (H, W, 4)
    assert rgba[0, 0, 3] == 0 and (rgba[1:, 1:, 3] == 255).all()


def test_constant_map_is_mid_colormap_without_crash(photo: Image.Image) -> None:
    with np.errstate(all="raise"):
        rgba = colorize(np.full((H, W), 0.7), "jet")
        out = overlay(photo, np.full((H, W), 0.7), alpha=1.0, contour=True, colorbar=True)
    assert (rgba[..., :3] == colormap_lut("jet")[128]).all()
    assert np.array_equal(np.asarray(out)[:, :W], rgba[..., :3])


def test_explicit_limits_clip(photo: Image.Image) -> None:
    rgba = colorize(np.array([[-5.0, 0.0, 10.0]]), "gray", vmin=0.0, vmax=1.0)
    assert rgba[0, 0, 0] == rgba[0, 1, 0] == 0 and rgba[0, 2, 0] == 255


def test_colorbar_makes_the_image_wider(photo: Image.Image) -> None:
    out = overlay(photo, gaussian(20, 20, 8), colorbar=True)
    assert out.height == H and out.width > W
    assert np.array_equal(np.asarray(out)[:, :W], np.asarray(overlay(photo, gaussian(20, 20, 8))))


def test_contour_draws_white_line_around_the_peak(photo: Image.Image) -> None:
    heat = gaussian(32, 24, 8)
    plain = np.asarray(overlay(photo, heat))
    lined = np.asarray(overlay(photo, heat, contour=True))
    changed = (plain != lined).any(axis=-1)
    assert changed.any()
    white = (lined == 255).all(axis=-1)
    rows, cols = np.nonzero(white)
    # the 50% line of a Gaussian is a circle of radius sigma * sqrt(2 ln 2) ~ 9.4 px around the centre
    radius = np.hypot(cols + 0.5 - 32, rows + 0.5 - 24)
    assert white.any() and radius.max() < 13 and radius.min() > 3


@pytest.mark.parametrize("bad", [np.zeros((H, W + 1)), np.zeros((W, H)), np.zeros((H, W, 3))])
def test_overlay_rejects_wrong_shapes(photo: Image.Image, bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"image|heat"):
        overlay(photo, bad)


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_overlay_rejects_alpha_outside_unit_interval(photo: Image.Image, alpha: float) -> None:
    with pytest.raises(ValueError, match="alpha"):
        overlay(photo, gaussian(20, 20, 8), alpha=alpha)


def test_unknown_cmap_lists_valid_names(photo: Image.Image) -> None:
    with pytest.raises(UsageError, match="viridis") as info:
        overlay(photo, gaussian(20, 20, 8), cmap="virdis")
    assert "virdis" in str(info.value)


# --- captions, grids, markers ------------------------------------------------------------------------------------


def test_caption_tile_adds_a_strip_above(photo: Image.Image) -> None:
    out = caption_tile(photo, "layer3.1.attn:spatial — a long caption that has to wrap onto lines")
    assert out.width == W and out.height > H
    assert np.array_equal(np.asarray(out)[-H:], np.asarray(photo))
    wide = caption_tile(photo, "x", width=128)
    assert wide.width == 128 and wide.height > 96


def test_grid_scales_tiles_of_different_sizes(photo: Image.Image) -> None:
    tiles = [photo, photo.resize((32, 24)), photo.resize((50, 100)), photo.convert("RGBA")]
    out = grid(tiles, columns=2, pad=4)
    height = int(np.median([t.height for t in tiles]))  # 48
    widths = [W, 64, 24, W]  # after scaling to height 48
    col_widths = [max(widths[0], widths[2]), max(widths[1], widths[3])]
    assert out.size == (sum(col_widths) + 3 * 4, 2 * height + 3 * 4)
    assert out.mode == "RGB"
    assert np.asarray(out)[0, 0].tolist() == [255, 255, 255]


def test_grid_default_columns_and_empty() -> None:
    tiles = [Image.new("RGB", (10, 10), "red")] * 5
    assert grid(tiles, pad=0).size == (30, 20)
    with pytest.raises(ValueError, match="tile"):
        grid([])


def test_mark_point_draws_near_the_point_only(photo: Image.Image) -> None:
    out = np.asarray(mark_point(photo, (40.5, 20.5), radius=6))
    changed = (out != np.asarray(photo)).any(axis=-1)
    rows, cols = np.nonzero(changed)
    assert changed.any()
    assert np.abs(cols - 40).max() <= 12 and np.abs(rows - 20).max() <= 12


# --- charts ------------------------------------------------------------------------------------------------------


def plotted_heights(ax: Axes) -> np.ndarray:
    """Bar heights of a channel_bars axes, whether drawn as bars or as one step patch."""
    from matplotlib.container import BarContainer
    from matplotlib.patches import StepPatch

    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    if bars:
        return np.array([p.get_height() for p in bars[0].patches])
    steps = [p for p in ax.patches if isinstance(p, StepPatch)]
    return np.asarray(steps[0].get_data().values)


@pytest.mark.parametrize("channels", [8, 64, 2048])
def test_channel_bars_sorted_descending(channels: int) -> None:
    weights = np.random.default_rng(channels).random(channels)
    fig = channel_bars(weights, top_k=3, title="layer1.0.se")
    ax = fig.axes[0]
    heights = plotted_heights(ax)
    assert heights.shape == (channels,)
    assert np.array_equal(heights, np.sort(weights)[::-1])
    assert ax.get_ylabel() == "weight" and ax.get_xlabel() == "channel (sorted by weight)"
    text = " ".join(t.get_text() for t in ax.texts)
    top = np.argsort(weights)[::-1][: min(3, channels // 4)]
    assert all(str(c) in text for c in top)
    assert "entropy" in text and "mean" in text and "std" in text
    figure_to_image(fig)  # draws without error


@pytest.mark.parametrize("channels", [8, 2048])
def test_channel_bars_channel_order(channels: int) -> None:
    weights = np.random.default_rng(1).random(channels)
    ax = channel_bars(weights, order="channel").axes[0]
    assert np.array_equal(plotted_heights(ax), weights)
    assert ax.get_xlabel() == "channel"


def test_channel_bars_into_given_axes_and_bad_order() -> None:
    fig = channel_small_multiples([("a", np.ones(4)), ("b", np.arange(100.0)), ("c", np.ones(2048))], columns=2)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 3 and [ax.get_title() for ax in visible] == ["a", "b", "c"]
    with pytest.raises(UsageError, match="sorted, channel"):
        channel_bars(np.ones(3), order="random")


def test_normalised_entropy_bounds() -> None:
    assert normalised_entropy(np.ones(16)) == pytest.approx(1.0)
    assert normalised_entropy(np.eye(16)[3]) == pytest.approx(0.0)


def test_coordinate_panel_profiles_align_with_the_image(photo: Image.Image) -> None:
    a_h = np.exp(-((np.arange(H) - 10.0) ** 2) / 20)
    a_w = np.exp(-((np.arange(W) - 40.0) ** 2) / 50)
    a_w[:5] = np.nan  # unseen columns
    fig = coordinate_panel(photo, a_h, a_w, np.outer(a_h, a_w), title="layer3.0.coord")
    ax_img, ax_w, ax_h = fig.axes[:3]
    fig.canvas.draw()
    img_box, w_box, h_box = (ax.get_position() for ax in (ax_img, ax_w, ax_h))
    assert ax_w.get_xlim() == ax_img.get_xlim() == (0.0, W)
    assert ax_h.get_ylim() == ax_img.get_ylim() == (H, 0.0)
    assert w_box.x0 == pytest.approx(img_box.x0) and w_box.width == pytest.approx(img_box.width)
    assert h_box.y0 == pytest.approx(img_box.y0) and h_box.height == pytest.approx(img_box.height)
    # square pixels: the image axes have the photo's aspect on the canvas
    width_px, height_px = img_box.width * fig.bbox.width, img_box.height * fig.bbox.height
    assert width_px / height_px == pytest.approx(W / H, rel=1e-3)
    with pytest.raises(ValueError, match="a_h"):
        coordinate_panel(photo, a_w, a_h, np.outer(a_h, a_w))


def test_selection_chart_and_names() -> None:
    w0 = np.random.default_rng(2).random(64)
    fig = selection_chart(np.stack([w0, 1 - w0]), branch_names=["3x3", "5x5"])
    assert "3x3" in fig.axes[0].get_xlabel()
    image = figure_to_image(fig, dpi=50)
    assert image.size == (round(fig.get_figwidth() * 50), round(fig.get_figheight() * 50))
    with pytest.raises(ValueError, match="names"):
        selection_chart(np.ones((2, 4)), branch_names=["only one"])


def test_matrix_heatmaps_pools_long_axes() -> None:
    matrix = np.random.default_rng(3).random((2, 2100, 10))
    fig = matrix_heatmaps(matrix, title="mhsa", max_tokens=1024)
    shown = fig.axes[0].images[0].get_array()
    assert shown.shape == (700, 10)
    assert np.allclose(shown[0], matrix[0, :3].mean(axis=0))
    assert "averaged" in fig.get_suptitle()
    heads = [ax for ax in fig.axes if ax.images]
    assert len(heads) == 2 and heads[0].get_ylabel() == "query token" and heads[0].get_xlabel() == "key token"
    channels = matrix_heatmaps(np.ones((1, 8, 8)), unit="channel")
    assert channels.axes[0].get_ylabel() == "query channel" and "8 query x 8 key channels" in channels.get_suptitle()


def test_charts_leave_no_pyplot_figures() -> None:
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    matrix_heatmaps(np.ones((3, 4, 4)))
    channel_bars(np.ones(10))
    assert plt.get_fignums() == before


def test_importing_render_does_not_import_matplotlib() -> None:
    code = "import sys, attnviz.render; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


# --- saving ------------------------------------------------------------------------------------------------------

MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "pdf": b"%PDF"}


def assert_format(path: Path, fmt: str) -> None:
    data = path.read_bytes()
    if fmt == "svg":
        assert b"<svg" in data[:2000]
    else:
        assert data.startswith(MAGIC[fmt])


@pytest.mark.parametrize("fmt", ["png", "svg", "pdf"])
def test_save_image_and_figure(tmp_path: Path, photo: Image.Image, fmt: str) -> None:
    written = save(photo, tmp_path / "out" / "overlay.jpg", fmt)
    assert written == tmp_path / "out" / f"overlay.{fmt}"
    assert_format(written, fmt)
    figure = save(channel_bars(np.arange(5.0)), tmp_path / "layer3.1.attn", fmt)
    assert figure == tmp_path / f"layer3.1.attn.{fmt}"  # a dotted layer name is not a suffix
    assert_format(figure, fmt)
    if fmt == "png":
        with Image.open(written) as reread:
            assert np.array_equal(np.asarray(reread.convert("RGB")), np.asarray(photo))
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted([written.name, figure.name])


def test_save_unknown_format(tmp_path: Path, photo: Image.Image) -> None:
    with pytest.raises(UsageError, match="png, svg, pdf"):
        save(photo, tmp_path / "x", "gif")  # jpg and webp are formats now


def test_failed_write_leaves_nothing_behind(
    tmp_path: Path, photo: Image.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    existing = tmp_path / "kept.png"
    save(photo, existing)
    before = existing.read_bytes()

    def broken_save(self: Image.Image, fp: IO[bytes], *args: object, **kwargs: object) -> None:
        fp.write(b"half a file")
        raise RuntimeError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(RuntimeError, match="disk full"):
        save(photo, tmp_path / "new.png")
    with pytest.raises(RuntimeError, match="disk full"):
        save(photo, existing)
    assert [p.name for p in tmp_path.iterdir()] == ["kept.png"]
    assert existing.read_bytes() == before


def test_unwritable_directory_is_a_usage_error(tmp_path: Path, photo: Image.Image) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if not os.access(locked, os.W_OK):  # root can write anyway; the file-as-directory case covers it below
            with pytest.raises(UsageError, match="locked"):
                save(photo, locked / "sub" / "out.png")
            with pytest.raises(UsageError, match="locked"):
                save(photo, locked / "out.png")
    finally:
        locked.chmod(0o700)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(UsageError, match="a_file") as info:
        save(photo, blocker / "sub" / "out.png")
    assert "\n" not in str(info.value)


def test_save_raw_round_trips(tmp_path: Path) -> None:
    arrays = {"plane": np.random.default_rng(4).random((3, 5)).astype(np.float32), "weights": np.arange(7)}
    summary = {"name": "layer3.1.attn:spatial", "shape": [3, 5], "mean": np.float32(0.5)}
    npz, js = save_raw(arrays, summary, tmp_path / "raw" / "layer3.1.attn")
    assert npz.name == "layer3.1.attn.npz" and js.name == "layer3.1.attn.json"
    with np.load(npz) as loaded:
        assert set(loaded.files) == set(arrays)
        for name, value in arrays.items():
            assert np.array_equal(loaded[name], value) and loaded[name].dtype == value.dtype
    assert json.loads(js.read_text()) == {"name": "layer3.1.attn:spatial", "shape": [3, 5], "mean": 0.5}
    assert sorted(p.name for p in npz.parent.iterdir()) == [js.name, npz.name]
