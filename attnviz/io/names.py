"""Which photos a run draws and what their pictures are called: folders expanded, attnviz's own pictures in the
output folder left out, and a unique piece of file name per photo even when two photos share a name."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from attnviz.errors import ImageError


def folder_images(folder: Path) -> list[Path]:
    """The image files of `folder` (not its sub-folders), sorted by name."""
    from attnviz.io.photos import IMAGE_SUFFIXES

    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def run_inputs(inputs: Sequence[Path], out_dir: Path) -> tuple[list[Path], list[Path]]:
    """(the photos to draw, the pictures left out): folders expanded into their images, files kept as given, each
    file once. In a folder that is also the output folder, the pictures attnviz drew (an earlier run's outputs)
    are left out.

    Raises:
        ImageError: a path does not exist, or a folder holds no images (or only attnviz's pictures).
    """
    from attnviz.render.save import drawn_by_attnviz

    photos: list[Path] = []
    left_out: list[Path] = []
    for item in inputs:
        path = Path(item)
        if not path.is_dir():
            if not path.exists():
                raise ImageError(f"image not found: {path}", "check the path")
            photos.append(path)
            continue
        images = folder_images(path)
        if _same_folder(path, out_dir):
            outputs = [p for p in images if drawn_by_attnviz(p)]
            left_out += outputs
            images = [p for p in images if p not in outputs]
            if outputs and not images:
                raise ImageError(f"folder {path} holds only pictures attnviz drew", "give the folder of your photos")
        if not images:
            from attnviz.io.photos import IMAGE_SUFFIXES

            raise ImageError(
                f"folder {path} holds no images", f"expected files ending in {', '.join(sorted(IMAGE_SUFFIXES))}"
            )
        photos += images
    return _once(photos), left_out


def _same_folder(folder: Path, other: Path) -> bool:
    try:
        return other.exists() and os.path.samefile(folder, other)
    except OSError:
        return False


def _once(paths: list[Path]) -> list[Path]:
    """`paths` without repeats of one file (named twice, or by two spellings)."""
    seen: set[str] = set()
    kept = []
    for path in paths:
        key = os.path.normcase(os.path.realpath(path))
        if key not in seen:
            seen.add(key)
            kept.append(path)
    return kept


def output_stems(paths: Sequence[Path]) -> list[str]:
    """The piece of output file names for each photo: its file name without suffix, unless another photo of the run
    has that stem (compared ignoring case, as some filesystems do). Then what tells them apart is added: the folders
    below the one they share (`d1/same.png`, `d2/same.png` -> "d1-same", "d2-same") and, when their suffixes differ,
    the suffix (`x.png`, `x.jpg` -> "x-png", "x-jpg"). A name still taken gets "-2", "-3"...
    """
    stems = [p.stem for p in paths]
    groups: dict[str, list[int]] = {}
    for index, stem in enumerate(stems):
        groups.setdefault(stem.casefold(), []).append(index)
    for members in groups.values():
        if len(members) > 1:
            for index, stem in zip(members, _told_apart([paths[i] for i in members]), strict=True):
                stems[index] = stem
    return _numbered(stems)


def _told_apart(paths: list[Path]) -> list[str]:
    parents = [os.path.abspath(p.parent) for p in paths]
    common = os.path.commonpath(parents)
    suffixes_differ = len({p.suffix.casefold() for p in paths}) > 1
    stems = []
    for path, parent in zip(paths, parents, strict=True):
        below = os.path.relpath(parent, common)
        parts = [] if below == "." else Path(below).parts
        tail = [path.suffix.lstrip(".")] if suffixes_differ and path.suffix else []
        stems.append("-".join([*parts, path.stem, *tail]))
    return stems


def _numbered(stems: list[str]) -> list[str]:
    taken: set[str] = set()
    unique = []
    for stem in stems:
        name, count = stem, 1
        while name.casefold() in taken:
            count += 1
            name = f"{stem}-{count}"
        taken.add(name.casefold())
        unique.append(name)
    return unique
