"""Drawing a detector's fusion weights: categorical level maps, boxes with level shares, share charts.

Source levels always use the same three colours (Okabe-Ito blue, bluish green, vermillion: distinct for
colour-blind readers too), fine to coarse, in every picture and chart. Arrays and PIL images in, PIL images or
matplotlib Figures out, as in `attnviz.render`.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

from attnviz.render.layout import RGB
from attnviz.render.overlay import desaturate
from attnviz.render.text import load_font, text_size

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LEVEL_COLORS: tuple[RGB, RGB, RGB] = ((0, 114, 178), (0, 158, 115), (213, 94, 0))
BOX_COLOR: RGB = (255, 221, 0)


def _hex(rgb: RGB) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def category_overlay(
    image: Image.Image, labels: np.ndarray, colors: Sequence[RGB], *, alpha: float = 0.55, outline: bool = True
) -> Image.Image:
    """Colour each pixel of a photo by its category, over the photo in grey (so the photo's own colours cannot be
    mistaken for categories).

    Args:
        image: The photo.
        labels: (H, W) ints at the photo's size: the index into `colors`, or -1 where the model saw nothing
            (drawn as the greyed-out photo).
        colors: One RGB colour per category.
        alpha: Weight of the colour over the photo.
        outline: Draw a thin dark line where the category changes, so regions read apart on busy photos.

    Returns:
        An RGB image of the photo's size.

    Raises:
        ValueError: `labels` is not (H, W) of the photo.
    """
    labels = np.asarray(labels)
    if labels.shape != (image.height, image.width):
        raise ValueError(f"labels are {labels.shape[::-1]} (WxH) but the image is {image.width}x{image.height}")
    photo = np.asarray(image.convert("L").convert("RGB"), dtype=np.float32)  # grey: only the tint carries colour
    palette = np.asarray(colors, dtype=np.float32)
    seen = labels >= 0
    tint = palette[np.clip(labels, 0, len(colors) - 1)]
    pixels = photo * (1 - alpha) + tint * alpha
    if outline:
        edge = np.zeros(labels.shape, dtype=bool)
        edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
        edge[1:, :] |= labels[1:, :] != labels[:-1, :]
        pixels[edge & seen] = pixels[edge & seen] * 0.35
    out = np.clip(pixels + 0.5, 0, 255).astype(np.uint8)
    if not seen.all():
        out[~seen] = np.asarray(desaturate(image))[~seen]
    return Image.fromarray(out, "RGB")


def draw_boxes(
    image: Image.Image,
    boxes: Sequence[Sequence[float]],
    captions: Sequence[str],
    *,
    shares: Sequence[Sequence[float]] | None = None,
    share_colors: Sequence[RGB] = LEVEL_COLORS,
    color: RGB = BOX_COLOR,
) -> Image.Image:
    """Draw boxes with a caption each and, optionally, a bar of shares (e.g. level weights) under the caption.

    Args:
        image: The picture to draw on (not modified).
        boxes: x0, y0, x1, y1 in the picture's pixels.
        captions: One text per box ("#1 star 0.91").
        shares: Per box, non-negative values drawn as one bar split in proportion, coloured by `share_colors`.
        share_colors: Colour of each share.
        color: Box and caption colour (drawn with a black rim so it shows on any photo).

    Returns:
        An RGB copy with the boxes.
    """
    out = image.convert("RGB")
    draw = ImageDraw.Draw(out)
    size = max(11, min(24, round(min(out.size) / 30)))
    font = load_font(size)
    width = max(2, round(min(out.size) / 250))
    for box in boxes:
        x0, y0, x1, y1 = (float(v) for v in box)
        draw.rectangle([x0 - 1, y0 - 1, x1 + 1, y1 + 1], outline="black", width=width + 2)
        draw.rectangle([x0, y0, x1, y1], outline=color, width=width)
    line = round(size * 1.3)
    bar = max(5, size // 2) if shares is not None else 0
    placed: list[tuple[float, float, float, float]] = []
    for i, (box, caption) in enumerate(zip(boxes, captions, strict=True)):  # captions last: no box line crosses one
        x0, y0, _, y1 = (float(v) for v in box)
        tag_w, tag_h = text_size(font, caption)[0] + 6, line + bar
        others = [tuple(float(v) for v in b) for j, b in enumerate(boxes) if j != i]
        left, top = _label_place(x0, y0, y1, (tag_w, tag_h), out.size, placed, others)
        placed.append((left, top, left + tag_w, top + tag_h))
        draw.rectangle([left, top, left + tag_w, top + tag_h], fill=(0, 0, 0))
        draw.text((left + 3, top + line / 2), caption, fill=color, font=font, anchor="lm")
        if shares is not None:
            _share_bar(draw, shares[i], share_colors, (left + 1, top + line, left + tag_w - 1, top + tag_h - 1))
    return out


def _label_place(
    x0: float,
    y0: float,
    y1: float,
    tag: tuple[float, float],
    size: tuple[int, int],
    placed: list[tuple[float, float, float, float]],
    others: Sequence[tuple[float, ...]] = (),
) -> tuple[float, float]:
    """Top-left corner of a box's label: above the box, else inside its top, else below it, else stacked further
    above or below; the first spot that overlaps neither a label placed before nor another box, else the first that
    overlaps no label (the first spot when all do), kept inside the picture."""
    tag_w, tag_h = tag
    left = min(max(0.0, x0), max(0.0, size[0] - tag_w))
    spots = [y0 - tag_h, y0, y1]
    for step in range(1, 8):
        spots += [y0 - tag_h * (step + 1), y1 + tag_h * step]
    spots = [min(max(0.0, top), max(0.0, size[1] - tag_h)) for top in spots]

    def clear(top: float, rects: Sequence[tuple[float, ...]]) -> bool:
        return not any(left < r and left + tag_w > a and top < b and top + tag_h > t for a, t, r, b in rects)

    for rects in ([*placed, *others], placed):
        for top in spots:
            if clear(top, rects):
                return left, top
    return left, spots[0]


def _share_bar(
    draw: ImageDraw.ImageDraw, values: Sequence[float], colors: Sequence[RGB], box: tuple[float, float, float, float]
) -> None:
    x0, y0, x1, y1 = box
    total = float(sum(max(0.0, float(v)) for v in values)) or 1.0
    x = x0
    for value, colour in zip(values, colors, strict=True):
        step = (x1 - x0) * max(0.0, float(value)) / total
        if step > 0:
            draw.rectangle([x, y0, x + step, y1], fill=colour)
        x += step


def level_share_chart(
    buckets: Sequence[tuple[str, int, Sequence[float] | None]],
    level_names: Sequence[str],
    *,
    title: str = "",
    note: str = "",
) -> Figure:
    """A 100% stacked bar per size bucket: the mean share of each source level inside the boxes of that size.

    Args:
        buckets: (name, number of boxes, mean weight per level or None when there are no boxes) per bucket.
        level_names: Legend text of each level, fine to coarse.
        title: Figure title.
        note: A line under the bars (e.g. how boxes were bucketed).
    """
    from attnviz.render.charts import new_figure

    fig = new_figure(7.5, 2.2 + 0.7 * len(buckets))
    ax = fig.add_subplot()
    names = [f"{name}\n({count} box{'es' if count != 1 else ''})" for name, count, _ in buckets]
    rows = np.arange(len(buckets))[::-1]
    for level, (label, colour) in enumerate(zip(level_names, LEVEL_COLORS, strict=False)):
        left = np.array([sum(shares[:level]) if shares is not None else 0.0 for _, _, shares in buckets])
        width = np.array([shares[level] if shares is not None else 0.0 for _, _, shares in buckets])
        bars = ax.barh(rows, width, left=left, color=_hex(colour), edgecolor="white", label=label, height=0.6)
        for bar, value in zip(bars, width, strict=True):
            if value >= 0.08:
                ax.text(
                    bar.get_x() + value / 2, bar.get_y() + bar.get_height() / 2, f"{value:.2f}",
                    ha="center", va="center", color="white", fontsize=9, fontweight="bold",
                )  # fmt: skip
    for row, (_, _, shares) in zip(rows, buckets, strict=True):
        if shares is None:
            ax.text(0.5, row, "no boxes of this size", ha="center", va="center", color="#777777", fontsize=9)
    ax.set_yticks(rows, names)
    ax.set_xlim(0, 1)
    ax.set_xlabel("mean fusion weight inside the boxes (the three sum to 1)")
    if note:
        fig.supxlabel(textwrap.fill(note, 110), fontsize=8, color="#555555")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(level_names), frameon=False, fontsize=9)
    ax.spines[["top", "right"]].set_visible(False)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig
