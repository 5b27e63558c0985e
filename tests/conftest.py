"""Shared fixtures and helpers for the test suite."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """Every test starts from the same torch seed, so failures reproduce."""
    import torch

    torch.manual_seed(0)
