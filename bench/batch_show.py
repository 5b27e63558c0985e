"""Batch throughput: a folder of 32 photos through `attnviz show` vs a bare forward of the same model
(goal: show runs at >= 0.8x the images/s of the bare forward).

The bare forward is the model alone on already-preprocessed tensors, batch 1, one image after another. The show
run is the whole command in this process (imports already paid): reading each photo, preprocessing, forward under
capture, mapping every map back onto the photo, drawing the overlays with Pillow and writing one PNG per photo.
Usage: python bench/batch_show.py [--block cbam] [--backbone resnet18] [--photos 32]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from typer.testing import CliRunner

from attnviz.cli.app import app
from attnviz.images import preprocess
from attnviz.io.photos import load_image
from attnviz.loading import load_native as load_model

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def make_photos(folder: Path, count: int) -> list[Path]:
    """`count` JPEG photos of varied size and aspect, cut from the bundled sample photos."""
    rng = random.Random(0)
    sources = [Image.open(p).convert("RGB") for p in sorted(SAMPLES.glob("*.*")) if p.suffix in (".png", ".jpg")]
    paths = []
    for index in range(count):
        source = sources[index % len(sources)]
        w, h = source.size
        cw, ch = rng.randint(w // 2, w), rng.randint(h // 2, h)
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        scale = rng.uniform(0.8, 1.6)
        photo = source.crop((x, y, x + cw, y + ch)).resize((int(cw * scale), int(ch * scale)))
        path = folder / f"photo_{index:02d}.jpg"
        photo.save(path, quality=90)
        paths.append(path)
    return paths


def bare_forward_rate(block: str, backbone: str, paths: list[Path], size: int) -> float:
    loaded = load_model(block, backbone=backbone, device="cpu")
    tensors = [preprocess(load_image(p), size)[0] for p in paths]
    with torch.inference_mode():
        for tensor in tensors[:3]:
            loaded.model(tensor)
        start = time.perf_counter()
        for tensor in tensors:
            loaded.model(tensor)
    return len(tensors) / (time.perf_counter() - start)


def show_rate(block: str, backbone: str, folder: Path, out: Path, size: int) -> float:
    runner = CliRunner()
    args = [
        "show",
        block,
        str(folder),
        "--backbone",
        backbone,
        "--size",
        str(size),
        "--out",
        str(out),
        "--device",
        "cpu",
    ]
    runner.invoke(app, [*args[:2], str(next(folder.iterdir())), *args[3:]])  # warm-up: first forward, fonts
    start = time.perf_counter()
    result = runner.invoke(app, args)
    elapsed = time.perf_counter() - start
    if result.exit_code != 0:
        raise SystemExit(f"show failed: {result.stderr}")
    return len(list(folder.iterdir())) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--block", default="cbam")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--photos", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder, out = Path(tmp) / "photos", Path(tmp) / "out"
        folder.mkdir()
        paths = make_photos(folder, args.photos)
        bare = bare_forward_rate(args.block, args.backbone, paths, args.size)
        show = show_rate(args.block, args.backbone, folder, out, args.size)
    ratio = show / bare
    print(f"{args.photos} photos, {args.backbone} + {args.block} at {args.size}, CPU threads {torch.get_num_threads()}")
    print(f"bare forward:  {bare:.1f} images/s")
    print(f"attnviz show:  {show:.1f} images/s (read, preprocess, capture, overlays, PNG per photo)")
    print(f"ratio: {ratio:.2f}x (goal >= 0.8x) -> {'PASS' if ratio >= 0.8 else 'FAIL'}")


if __name__ == "__main__":
    main()
