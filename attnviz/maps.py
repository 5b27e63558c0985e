"""AttentionMap: one captured attention tensor with what is needed to read it, and the reductions renderers use.

A map keeps the batch axis and the axis names its Tap declared, so every reduction here is by axis name:
`plane` gives an (B, h, w) picture for overlays, `channel_vector` a (B, C) vector for bar charts, and so on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class AttentionMap:
    """One call of one Tap, as captured.

    Attributes:
        layer: Module path of the attention block the tap belongs to, e.g. "layer3.1.attn".
        tap: Module path of the tap itself, e.g. "layer3.1.attn.spatial.tap".
        label: The tap's label inside its block ("channel", "spatial", "h", "w", "cw", "position"...).
        call: 0-based index of this call of this tap during the capture (a block called twice gives 0 and 1).
        kind: One of catalog.KINDS.
        axes: Name of every axis of `tensor`, batch first.
        norm: How the values were produced ("sigmoid", "softmax", "sum_to_one", "none").
        over: Axes a softmax/sum_to_one map sums to 1 over.
        tokens: For matrices: what the query/key tokens are ("grid", "channel", "sequence", "row_col").
        grid: For grid-token matrices: the (h, w) of the token grid.
        tensor: The captured values, detached, on the CPU.
        queries: For grid matrices captured with query points: the token index each kept query row came from.
        heads: For matrices captured with a head selection: the original index of each kept head.
        block: Registry name (or foreign class name) of the block the tap belongs to.
        branches: For maps with a "branch" axis, what each branch is when the block says (else empty).
    """

    layer: str
    tap: str
    label: str
    call: int
    kind: str
    axes: tuple[str, ...]
    norm: str
    over: tuple[str, ...]
    tensor: torch.Tensor
    tokens: str | None = None
    grid: tuple[int, int] | None = None
    queries: list[int] | None = None
    heads: list[int] | None = None
    block: str = ""
    branches: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """Unique, readable name: "layer3.1.attn:spatial" (with "#1" appended for a second call)."""
        suffix = f"#{self.call}" if self.call else ""
        return f"{self.layer}:{self.label}{suffix}"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.tensor.shape)

    def size_of(self, axis: str) -> int | None:
        """Length of the named axis, or None when the map has no such axis."""
        return self.tensor.shape[self.axes.index(axis)] if axis in self.axes else None

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (no values)."""
        return {
            "name": self.name,
            "layer": self.layer,
            "tap": self.tap,
            "label": self.label,
            "call": self.call,
            "kind": self.kind,
            "block": self.block,
            "axes": list(self.axes),
            "shape": list(self.shape),
            "norm": self.norm,
            "over": list(self.over),
            "tokens": self.tokens,
            "grid": list(self.grid) if self.grid else None,
            "queries": self.queries,
            "heads": self.heads,
        }


def _float(t: torch.Tensor) -> torch.Tensor:
    return t.float() if t.dtype != torch.float32 else t


def reduce_to(m: AttentionMap, keep: tuple[str, ...]) -> torch.Tensor:
    """Mean over every axis not in `keep`; the result's axes are batch followed by `keep` in that order.

    Axes of `keep` the map does not have are inserted with length 1 (so a width-only map becomes (B, 1, W)).
    """
    t = _float(m.tensor)
    drop = [i for i, a in enumerate(m.axes) if a != "batch" and a not in keep]
    if drop:
        t = t.mean(dim=drop)
    remaining = [a for a in m.axes if a == "batch" or a in keep]
    order = ["batch", *keep]
    for axis in keep:
        if axis not in remaining:
            t = t.unsqueeze(-1)
            remaining.append(axis)
    return t.permute([remaining.index(a) for a in order]).clone()  # never a view of the recording


def plane(m: AttentionMap) -> np.ndarray:
    """A (B, h, w) picture of a spatial-type map for overlays.

    spatial: mean over every non-spatial axis (a Triplet C-W map becomes a 1 x W strip);
    coordinate: the channel mean of a_h or a_w as a strip; level: not a single plane (use `level_planes`).
    """
    if m.kind in ("spatial", "coordinate", "gate"):
        return reduce_to(m, ("height", "width")).numpy()
    raise ValueError(f"{m.name} is a {m.kind} map, which has no single spatial plane")


def channel_vector(m: AttentionMap) -> np.ndarray:
    """(B, C) per-channel weights: the map averaged over every axis but channel."""
    if "channel" not in m.axes:
        raise ValueError(f"{m.name} has no channel axis (axes {m.axes})")
    return reduce_to(m, ("channel",)).numpy()


def coordinate_outer(h_map: AttentionMap, w_map: AttentionMap) -> np.ndarray:
    """(B, H, W): Coordinate Attention's combined gate, the channel mean of a_h[c, i] * a_w[c, j]."""
    a_h = reduce_to(h_map, ("channel", "height"))
    a_w = reduce_to(w_map, ("channel", "width"))
    return torch.einsum("bch,bcw->bhw", a_h, a_w).div(a_h.shape[1]).numpy()


def level_planes(m: AttentionMap) -> np.ndarray:
    """(B, L, H, W) per-level fusion weights of an ASFF map."""
    return reduce_to(m, ("level", "height", "width")).numpy()


def selection_weights(m: AttentionMap) -> np.ndarray:
    """(B, K, C) per-branch, per-channel weights of a selection map (SK, S2-MLPv2)."""
    return reduce_to(m, ("branch", "channel")).numpy()


def matrix_rows(m: AttentionMap) -> np.ndarray:
    """(B, heads, queries, keys) of a matrix map; a map without a head axis gets one of length 1."""
    if m.tokens == "row_col":
        raise ValueError(f"{m.name} holds criss-cross rows; use criss_cross_rows")
    t = _float(m.tensor)
    if "head" not in m.axes:
        t = t.unsqueeze(1)
    return t.numpy()


def query_plane(m: AttentionMap, query: int) -> np.ndarray:
    """(B, heads, h, w): where grid token `query` looks. `query` is a token index of the full grid."""
    if m.tokens != "grid" or m.grid is None:
        raise ValueError(f"{m.name} is not attention over an image grid")
    rows = matrix_rows(m)
    kept = m.queries if m.queries is not None else list(range(rows.shape[2]))
    if query not in kept:
        raise ValueError(f"query token {query} was not captured for {m.name}; captured: {kept}")
    h, w = m.grid
    return rows[:, :, kept.index(query)].reshape(rows.shape[0], rows.shape[1], h, w)


def criss_cross_plane(m: AttentionMap, row: int, col: int) -> np.ndarray:
    """(B, H, W): a criss-cross map's weights of pixel (row, col) scattered onto its column and row."""
    t = _float(m.tensor)
    b, h, w, _ = t.shape
    weights = t[:, row, col]
    out = torch.zeros(b, h, w)
    out[:, :, col] += weights[:, :h]
    out[:, row, :] += weights[:, h:]
    return out.numpy()


def entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy (nats) of non-negative weights along `axis`, normalised to sum 1 first."""
    p = np.clip(p, 0, None)
    p = p / np.clip(p.sum(axis=axis, keepdims=True), 1e-12, None)
    return -(p * np.log(np.clip(p, 1e-12, None))).sum(axis=axis)
