"""How the report's numbers travel inside the HTML file: base64 arrays, quantised to uint8 where they are large.

Every array is a dict the page's script decodes (`report.js`, `values`):

    {"dtype": "f32", "shape": [...], "data": base64 of little-endian float32}
    {"dtype": "u8", "shape": [...], "data": base64 of uint8, "lo": float, "hi": float}
    {"dtype": "u8", "shape": [...], "data": ..., "lo": base64 f32 per row, "hi": base64 f32 per row}

A uint8 value q stands for `lo + q * (hi - lo) / 255`: the error is at most half a step, (hi - lo) / 510. With
ranges per row (the last axis is a row), each attention row keeps its own detail however small its values are.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

LEVELS = 255
"""The top uint8 code: a value is quantised to one of LEVELS + 1 steps of its range."""


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def _finite(values: np.ndarray) -> np.ndarray:
    """float32 copy with NaN and infinities replaced by the nearest finite value (0 for NaN)."""
    return np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0, posinf=np.finfo(np.float32).max)


def exact(values: np.ndarray) -> dict[str, Any]:
    """An array kept as float32, for small things read exactly (channel weights)."""
    array = np.asarray(values, dtype="<f4")
    return {"dtype": "f32", "shape": list(array.shape), "data": _b64(array)}


def quantised(values: np.ndarray) -> dict[str, Any]:
    """An array as uint8 over its own range (one lo/hi for the whole array)."""
    array = _finite(values)
    lo, hi = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    return {"dtype": "u8", "shape": list(array.shape), "data": _b64(_codes(array, lo, hi)), "lo": lo, "hi": hi}


def quantised_rows(values: np.ndarray) -> dict[str, Any]:
    """An array as uint8 with a lo/hi of its own for every row (the last axis)."""
    array = _finite(values)
    rows = array.reshape(-1, array.shape[-1]) if array.size else array.reshape(0, 1)
    lo = rows.min(axis=1, keepdims=True) if rows.size else np.zeros((0, 1), np.float32)
    hi = rows.max(axis=1, keepdims=True) if rows.size else np.zeros((0, 1), np.float32)
    codes = _codes(rows, lo, hi).reshape(array.shape)
    return {
        "dtype": "u8",
        "shape": list(array.shape),
        "data": _b64(codes),
        "lo": _b64(lo.astype("<f4").ravel()),
        "hi": _b64(hi.astype("<f4").ravel()),
    }


def _codes(array: np.ndarray, lo: Any, hi: Any) -> np.ndarray:
    span = np.asarray(hi, dtype=np.float64) - np.asarray(lo, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = np.where(span > 0, (array - lo) / np.where(span > 0, span, 1.0) * LEVELS, 0.0)
    return np.clip(np.rint(scaled), 0, LEVELS).astype(np.uint8)


def dequantised(encoded: dict[str, Any]) -> np.ndarray:
    """What the page reads back from an encoded array (the tests compare the page against it)."""
    raw = base64.b64decode(encoded["data"])
    shape = tuple(encoded["shape"])
    if encoded["dtype"] == "f32":
        return np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)
    codes = np.frombuffer(raw, dtype=np.uint8).astype(np.float64).reshape(-1, shape[-1] if shape else 1)
    lo, hi = encoded["lo"], encoded["hi"]
    if isinstance(lo, str):
        lo = np.frombuffer(base64.b64decode(lo), dtype="<f4").astype(np.float64)[:, None]
        hi = np.frombuffer(base64.b64decode(hi), dtype="<f4").astype(np.float64)[:, None]
    return (lo + codes * (np.asarray(hi) - lo) / LEVELS).reshape(shape).astype(np.float32)


def encoded_bytes(encoded: Any) -> int:
    """Characters the encoded arrays inside `encoded` (a dict, list or array dict) take in the page."""
    if isinstance(encoded, dict):
        return sum(encoded_bytes(v) for v in encoded.values())
    if isinstance(encoded, list):
        return sum(encoded_bytes(v) for v in encoded)
    return len(encoded) if isinstance(encoded, str) else 8
