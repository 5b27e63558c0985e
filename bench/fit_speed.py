"""fit's training speed vs a plain PyTorch loop on the same model and data (goal: fit >= 0.95x images/s).

Both run the same number of steps over the same pre-generated scenes (so scene generation is not measured), with
the same optimizer; fit's loop adds what it does per step (progress callback, metrics), the plain loop nothing.
Usage: python bench/fit_speed.py [--block cbam] [--size 96] [--steps 30]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from attnviz.data.datasets import SceneDataset
from attnviz.models.backbones import build_model
from attnviz.training.classifier import run_epoch


def batches(images: torch.Tensor, labels: torch.Tensor, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(images[i : i + size], labels[i : i + size]) for i in range(0, len(labels), size)]


def plain_loop(model: nn.Module, data: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.05)
    model.train()
    start = time.perf_counter()
    for images, labels in data:
        loss = criterion(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return sum(len(y) for _, y in data) / (time.perf_counter() - start)


def fit_loop(model: nn.Module, data: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    _, _, rate = run_epoch(
        model, iter(data), optimizer=optimizer, device=torch.device("cpu"), on_batch=lambda stats: None
    )
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--block", default="cbam")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    dataset = SceneDataset("train", args.batch_size * args.steps, args.size)
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    labels = torch.tensor([dataset[i][1] for i in range(len(dataset))])
    data = batches(images, labels, args.batch_size)
    plain_rates, fit_rates = [], []
    for _ in range(args.rounds):  # interleaved, so machine noise hits both alike
        torch.manual_seed(0)
        plain_rates.append(plain_loop(build_model("resnet18", args.block, num_classes=10), data))
        torch.manual_seed(0)
        fit_rates.append(fit_loop(build_model("resnet18", args.block, num_classes=10), data))
    plain, fitted = max(plain_rates), max(fit_rates)
    print(
        f"resnet18 + {args.block}, {args.size} px, batch {args.batch_size}, {args.steps} steps, best of {args.rounds}"
    )
    print(f"plain PyTorch loop: {plain:.1f} images/s")
    print(f"attnviz fit loop:   {fitted:.1f} images/s")
    print(f"ratio: {fitted / plain:.3f}x (goal >= 0.95x) -> {'PASS' if fitted / plain >= 0.95 else 'FAIL'}")


if __name__ == "__main__":
    main()
