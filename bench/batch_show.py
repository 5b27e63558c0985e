"""Folder throughput: the same photos through a bare forward, `attnviz show` and pytorch-grad-cam's plain loop.

In one run, on the same photos (64 by default, JPEGs of varied size cut from the bundled samples):
- bare forward: the model alone on already-preprocessed tensors, batch 1 and batched (no reading, no pictures);
- `attnviz show BLOCK FOLDER`: the whole command in this process (imports already paid): reading each photo, fitting
  it to the model input, the forward under capture, every map drawn back on the photo with its colour bar, and one
  PNG per photo;
- pytorch-grad-cam's plain loop, as its README shows it: GradCAM on the same model's last stage, for each photo read
  it, resize it to the input, run the CAM, `show_cam_on_image`, write one PNG.
Goals: show >= 0.8x the batch-1 bare forward and >= 2x the grad-cam loop. Then, unless --no-memory, the peak RSS
(the largest process of the run, drawing workers included) of `attnviz show` over 500 photos vs 50, each run in a
fresh subprocess.
Usage: python bench/batch_show.py [--block cbam] [--backbone resnet18] [--photos 64] [--size 224] [--batch 16]
       [--threads N] [--no-memory]
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from typer.testing import CliRunner

from attnviz.cli.app import app
from attnviz.images import preprocess
from attnviz.io.photos import load_image
from attnviz.loading import LoadedModel
from attnviz.loading import load_native as load_model

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def make_photos(folder: Path, count: int) -> list[Path]:
    """`count` JPEG photos of varied size and aspect, cut from the bundled sample photos."""
    rng = random.Random(0)
    sources = [Image.open(p).convert("RGB") for p in sorted(SAMPLES.glob("*.*")) if p.suffix in (".png", ".jpg")]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        source = sources[index % len(sources)]
        w, h = source.size
        cw, ch = rng.randint(w // 2, w), rng.randint(h // 2, h)
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        scale = rng.uniform(0.8, 1.6)
        photo = source.crop((x, y, x + cw, y + ch)).resize((int(cw * scale), int(ch * scale)))
        path = folder / f"photo_{index:03d}.jpg"
        photo.save(path, quality=90)
        paths.append(path)
    return paths


def bare_forward_rate(loaded: LoadedModel, paths: list[Path], size: int, batch: int) -> float:
    """Images/s of the model alone on preprocessed tensors, `batch` at a time."""
    tensors = [preprocess(load_image(p), size)[0] for p in paths]
    batches = [torch.cat(tensors[i : i + batch]) for i in range(0, len(tensors), batch)]
    with torch.inference_mode():
        loaded.model(batches[0])
        start = time.perf_counter()
        for tensor in batches:
            loaded.model(tensor)
    return len(tensors) / (time.perf_counter() - start)


def show_args(block: str, backbone: str, folder: Path, out: Path, size: int) -> list[str]:
    return ["show", block, str(folder), "--backbone", backbone, "--size", str(size), "--out", str(out)]


def show_rate(block: str, backbone: str, folder: Path, out: Path, size: int, *extra: str) -> float:
    """Images/s of `attnviz show` over the folder, in this process (with `extra` options)."""
    runner = CliRunner()
    first = str(next(iter(sorted(folder.iterdir()))))
    args = [*show_args(block, backbone, folder, out, size), "--device", "cpu", *extra]
    runner.invoke(app, [args[0], args[1], first, *args[3:]])  # warm-up: first forward, fonts
    start = time.perf_counter()
    result = runner.invoke(app, args)
    elapsed = time.perf_counter() - start
    if result.exit_code != 0:
        raise SystemExit(f"show failed: {result.stderr}")
    return len(list(folder.iterdir())) / elapsed


def gradcam_rate(loaded: LoadedModel, paths: list[Path], out: Path, size: int) -> float:
    """Images/s of pytorch-grad-cam's plain loop: one GradCAM overlay PNG per photo, on the model's last stage."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import show_cam_on_image

    out.mkdir(parents=True, exist_ok=True)
    last_stage = loaded.stage_outputs()[max(loaded.stage_outputs())]
    with GradCAM(model=loaded.model, target_layers=[last_stage]) as cam:

        def one(path: Path) -> None:
            rgb = np.asarray(Image.open(path).convert("RGB").resize((size, size)), dtype=np.float32) / 255
            tensor = preprocess(Image.fromarray((rgb * 255).astype(np.uint8)), size)[0]
            heat = cam(input_tensor=tensor, targets=None)[0]  # the top class, as in its README
            Image.fromarray(show_cam_on_image(rgb, heat, use_rgb=True)).save(out / f"{path.stem}_gradcam.png")

        one(paths[0])  # warm-up
        start = time.perf_counter()
        for path in paths:
            one(path)
    return len(paths) / (time.perf_counter() - start)


def peak_rss_mb(block: str, backbone: str, folder: Path, out: Path, size: int) -> float:
    """Peak RSS in MB of the largest process of `attnviz show` over `folder` (workers included), run afresh."""
    command = [sys.executable, "-m", "attnviz", *show_args(block, backbone, folder, out, size), "--device", "cpu"]
    probe = (
        "import resource, subprocess, sys\n"
        f"done = subprocess.run({command!r}, capture_output=True)\n"
        "sys.exit(done.returncode) if done.returncode else None\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return int(result.stdout.split()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--block", default="cbam")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--photos", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16, help="batch of the batched bare forward")
    parser.add_argument("--no-memory", action="store_true", help="skip the 500 vs 50 photo memory runs")
    parser.add_argument("--threads", type=int, help="torch threads of every in-process run (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(args.block, backbone=args.backbone, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        folder, out = Path(tmp) / "photos", Path(tmp) / "out"
        paths = make_photos(folder, args.photos)
        bare = bare_forward_rate(loaded, paths, args.size, 1)
        batched = bare_forward_rate(loaded, paths, args.size, args.batch)
        show = show_rate(args.block, args.backbone, folder, out / "show", args.size)
        show_batched = show_rate(
            args.block, args.backbone, folder, out / "batched", args.size, "--batch-size", str(args.batch)
        )
        gradcam = gradcam_rate(loaded, paths, out / "gradcam", args.size)
        memory = None
        if not args.no_memory:
            runs = {}
            for count in (50, 500):
                photos = Path(tmp) / f"photos{count}"
                make_photos(photos, count)
                runs[count] = peak_rss_mb(args.block, args.backbone, photos, Path(tmp) / f"out{count}", args.size)
            memory = runs
    print(f"{args.photos} photos, {args.backbone} + {args.block} at {args.size}, CPU threads {torch.get_num_threads()}")
    print(f"bare forward, batch 1:      {bare:6.1f} images/s")
    print(f"bare forward, batch {args.batch:<2d}:     {batched:6.1f} images/s ({batched / bare:.2f}x batch 1)")
    print(f"attnviz show:               {show:6.1f} images/s (read, fit, capture, overlays, PNG per photo)")
    print(f"attnviz show --batch-size {args.batch:<2d}: {show_batched:6.1f} images/s")
    print(f"pytorch-grad-cam loop:      {gradcam:6.1f} images/s (read, resize, GradCAM, show_cam_on_image, PNG)")
    for name, ratio, goal in (
        ("bare forward, batch 1", show / bare, 0.8),
        ("pytorch-grad-cam loop", show / gradcam, 2),
    ):
        print(f"show / {name}: {ratio:.2f}x (goal >= {goal}x) -> {'PASS' if ratio >= goal else 'FAIL'}")
    if memory is not None:
        print(
            f"peak RSS of show: 50 photos {memory[50]:.0f} MB, 500 photos {memory[500]:.0f} MB "
            f"({memory[500] / memory[50]:.2f}x)"
        )


if __name__ == "__main__":
    main()
