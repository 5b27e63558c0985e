"""Capture overhead: resnet50 + CBAM at 224, batch 1, forward with capture vs without (goal: at most 1.05x).

Runs the two variants interleaved, many times, and compares medians, so machine noise hits both alike.
Usage: python bench/capture_overhead.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from attnviz.capture import capture
from attnviz.models.backbones import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--block", default="cbam")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build_model(args.backbone, args.block).eval()
    x = torch.randn(1, 3, 224, 224)
    plain, captured = [], []
    with torch.inference_mode():
        for _ in range(3):  # warm-up: oneDNN primitives, allocator
            model(x)
        for _ in range(args.repeats):
            start = time.perf_counter()
            model(x)
            plain.append(time.perf_counter() - start)
            start = time.perf_counter()
            with capture(model) as rec:
                model(x)
            captured.append(time.perf_counter() - start)
    ratio = statistics.median(captured) / statistics.median(plain)
    print(f"{args.backbone} + {args.block}, 224x224, batch 1, {args.repeats} interleaved runs, {len(rec)} maps")
    print(f"forward without capture: {statistics.median(plain) * 1000:.1f} ms (median)")
    print(f"forward with capture:    {statistics.median(captured) * 1000:.1f} ms (median, hooks installed and removed)")
    print(f"ratio: {ratio:.3f}x (goal <= 1.05x) -> {'PASS' if ratio <= 1.05 else 'FAIL'}")


if __name__ == "__main__":
    main()
