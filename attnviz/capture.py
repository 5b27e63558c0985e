"""Capture: hook every Tap of a model and record what it emits, as a context manager that always cleans up.

    with capture(model, layers=["layer3"], kinds=["spatial"]) as rec:
        model(x)
    for m in rec:
        print(m.name, m.shape)

Every call of every tap is recorded (a module called twice gives two maps numbered 0 and 1), detached, copied to
the CPU (a copy even there, so later in-place ops cannot change it), optionally in fp16. Matrices over image tokens
can be bounded to chosen query rows and heads; a full matrix over the memory budget is refused with a message saying
how to ask for rows. On exit, also after an exception, every hook is removed and every module's train/eval mode is
restored. Hooks never change a module's output, so the model's outputs are bit-identical with and without capture.

Taps on modules attnviz did not build (`attnviz.models.foreign.ForeignTap`) are not called by their module's code;
such a tap has a `connect(parent)` method that hooks the parent's submodule producing the attention and calls the
tap from there. Capture connects the taps it records and removes those hooks on exit like its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from attnviz.blocks.base import AttentionBlock, Tap
from attnviz.budget import guard_matrices
from attnviz.errors import CaptureError, UsageError, option
from attnviz.maps import AttentionMap

DEFAULT_MAX_BYTES = 256 * 2**20


@dataclass
class Recording:
    """What a capture recorded: the maps in call order, plus lookups."""

    maps: list[AttentionMap] = field(default_factory=list)
    taps: dict[str, Tap] = field(default_factory=dict)

    def __iter__(self) -> Iterator[AttentionMap]:
        return iter(self.maps)

    def __len__(self) -> int:
        return len(self.maps)

    def __getitem__(self, index: int) -> AttentionMap:
        return self.maps[index]

    def of_kind(self, *kinds: str) -> list[AttentionMap]:
        return [m for m in self.maps if m.kind in kinds]

    def layers(self) -> list[str]:
        """Block paths that emitted something, in first-call order."""
        return list(dict.fromkeys(m.layer for m in self.maps))

    def by_layer(self) -> dict[str, list[AttentionMap]]:
        grouped: dict[str, list[AttentionMap]] = {}
        for m in self.maps:
            grouped.setdefault(m.layer, []).append(m)
        return grouped


def find_taps(model: nn.Module) -> dict[str, tuple[Tap, str, str]]:
    """Every Tap in `model`: path -> (tap, path of the block it belongs to, block name).

    The block is the nearest enclosing `AttentionBlock`; a tap attached to a foreign module (no AttentionBlock
    around it) belongs to its parent module, named by the parent's class.
    """
    modules = dict(model.named_modules())
    found: dict[str, tuple[Tap, str, str]] = {}
    for path, module in modules.items():
        if not isinstance(module, Tap):
            continue
        parts = path.split(".")
        owner_path = ".".join(parts[:-1])
        block = type(modules[owner_path]).__name__
        for cut in range(len(parts) - 1, -1, -1):
            prefix = ".".join(parts[:cut])
            if isinstance(modules.get(prefix), AttentionBlock):
                owner_path, block = prefix, modules[prefix].block_name
                break
        found[path] = (module, owner_path, block)
    return found


def _selected(layer: str, layers: Sequence[str] | None) -> bool:
    if layers is None:
        return True
    return any(layer == want or layer.startswith(want + ".") for want in layers)


@dataclass(frozen=True)
class QueryPoints:
    """Query points for matrices over image tokens, and how to find the cell each falls in on any grid.

    Attributes:
        points: (x, y) fractions of the model input (0..1).
        placement: Where the model's cells sit on its input (attnviz.images.PLACEMENTS).
        input_size: (width, height) of the input in pixels; the "aligned" placement needs it.
    """

    points: tuple[tuple[float, float], ...]
    placement: str = "tiled"
    input_size: tuple[int, int] | None = None

    def rows(self, grid: tuple[int, int]) -> list[int]:
        """Token indices (row-major) of the cells whose centres are nearest the points, on a (h, w) grid."""
        from attnviz.images import first_centre

        h, w = grid
        extent_w, extent_h = self.input_size or (w, h)
        indices = []
        for fx, fy in self.points:  # in cells from cell 0's centre; the nearest centre, ties to the right
            col = math.floor((fx * extent_w - first_centre(extent_w, w, self.placement)) * w / extent_w + 0.5)
            row = math.floor((fy * extent_h - first_centre(extent_h, h, self.placement)) * h / extent_h + 0.5)
            indices.append(min(h - 1, max(0, row)) * w + min(w - 1, max(0, col)))
        return list(dict.fromkeys(indices))


def query_points(queries: QueryPoints | Sequence[tuple[float, float]] | None) -> QueryPoints | None:
    """`queries` as QueryPoints (plain (x, y) fractions are taken with the "tiled" placement)."""
    if queries is None or isinstance(queries, QueryPoints):
        return queries
    return QueryPoints(tuple((float(x), float(y)) for x, y in queries))


def _plain_copy(value: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A CPU copy that is an ordinary tensor even when the model ran under torch.inference_mode()."""
    if not value.is_inference():
        return value.to(device="cpu", dtype=dtype, copy=True)
    with torch.inference_mode(False):
        return value.to(device="cpu", dtype=dtype, copy=True)


class _Recorder:
    """The hook body: turns one tap call into an AttentionMap appended to the recording."""

    def __init__(
        self,
        recording: Recording,
        *,
        dtype: torch.dtype,
        queries: QueryPoints | None,
        heads: Sequence[int] | None,
        max_bytes: int,
    ) -> None:
        self.recording = recording
        self.dtype = dtype
        self.queries = queries
        self.heads = list(heads) if heads is not None else None
        self.max_bytes = max_bytes
        self.calls: dict[str, int] = {}

    def hook(self, tap_path: str, tap: Tap, layer: str, block: str) -> Any:
        def on_call(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: torch.Tensor) -> None:
            grid = kwargs.get("grid", args[1] if len(args) > 1 else None)
            self.record(tap_path, tap, layer, block, output, grid, kwargs.get("rows"))

        return on_call

    def record(
        self,
        tap_path: str,
        tap: Tap,
        layer: str,
        block: str,
        value: torch.Tensor,
        grid: tuple[int, int] | None,
        rows: Sequence[int] | None = None,
    ) -> None:
        """Record one tap call; `rows`: the grid tokens `value`'s query axis holds when the tap kept only those."""
        value = value.detach()
        kept_queries = kept_heads = None
        if tap.kind == "matrix" and "head" in tap.axes and self.heads is not None:
            count = value.shape[tap.axes.index("head")]
            kept_heads = list(self.heads)
            beyond = [h for h in kept_heads if not 0 <= h < count]
            if beyond:  # a usage error: the heads asked for are not there (never dropped in silence)
                raise UsageError(
                    f"{option('heads')} asks for head {','.join(map(str, beyond))}, but the attention matrix at "
                    f"{layer} ({tap.label}) has {count} head{'s' if count > 1 else ''}",
                    f"give head numbers from 0 to {count - 1}",
                )
            index = torch.tensor(kept_heads, dtype=torch.long, device=value.device)
            value = value.index_select(tap.axes.index("head"), index)
        if rows is not None:  # a tap that computed only the asked rows (a foreign self-attention recomputed)
            kept_queries = list(rows)
        elif tap.tokens == "grid" and grid is not None and self.queries is not None:
            kept_queries = self.queries.rows(tuple(grid))
            index = torch.tensor(kept_queries, device=value.device)
            value = value.index_select(tap.axes.index("query"), index)
        nbytes = value.numel() * self.dtype.itemsize
        if tap.kind == "matrix" and nbytes > self.max_bytes:
            raise CaptureError(
                f"the attention matrix at {layer} ({tap.label}) would take {nbytes / 2**20:.0f} MB "
                f"(shape {tuple(value.shape)}), over the {self.max_bytes / 2**20:.0f} MB budget",
                "ask for query rows instead (--query X,Y on the command line, queries=[(x, y)] in Python) "
                "or fewer heads, or raise the budget",
            )
        call = self.calls.get(tap_path, 0)
        self.calls[tap_path] = call + 1
        self.recording.maps.append(
            AttentionMap(
                layer=layer,
                tap=tap_path,
                label=tap.label,
                call=call,
                kind=tap.kind,
                axes=tap.axes,
                norm=tap.norm,
                over=tap.over,
                tokens=tap.tokens,
                tensor=_plain_copy(value, self.dtype),
                grid=tuple(grid) if grid is not None else None,
                queries=kept_queries,
                heads=kept_heads,
                block=block,
                branches=getattr(tap, "branches", ()),
            )
        )


@contextmanager
def evaluating(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Eval mode while the block runs, touching only the modules that were training (so frozen parts stay as they
    are); their modes come back on exit, also after an exception."""
    training = [module for module in model.modules() if module.training] if enabled else []
    for module in training:
        module.training = False
    try:
        yield
    finally:
        for module in training:
            module.training = True


@contextmanager
def capture(
    model: nn.Module,
    *,
    layers: Sequence[str] | None = None,
    kinds: Iterable[str] | None = None,
    queries: QueryPoints | Sequence[tuple[float, float]] | None = None,
    heads: Sequence[int] | None = None,
    dtype: torch.dtype = torch.float32,
    max_bytes: int = DEFAULT_MAX_BYTES,
    eval_mode: bool = True,
    find: bool = True,
) -> Iterator[Recording]:
    """Record every call of every Tap in `model` while the with-block runs.

    Args:
        model: Any module: one with attnviz's blocks or with taps attached (`attnviz.load` attaches them), or any
            other network, whose attention modules are then found (see `find`).
        layers: Keep only blocks whose path equals or lies under one of these ("layer3", "layer3.1.attn").
        kinds: Keep only these kinds of attention.
        queries: For matrices over image tokens, keep only the rows of these query points, given as (x, y)
            fractions of the model input (0..1), or as QueryPoints that also say where the model's cells sit;
            each layer maps them to its own grid.
        heads: For matrices with a head axis, keep only these heads.
        dtype: Storage dtype of the recorded tensors (torch.float16 halves memory).
        max_bytes: A single matrix larger than this is refused with a CaptureError.
        eval_mode: Put the model in eval mode for the capture (its previous modes are restored on exit).
        find: When `model` holds no tap at all, find its attention modules at its first forward in the block
            (`attnviz.models.foreign.attach_taps`, one dummy forward at the size of that input) and tap them; the
            taps are removed on exit, leaving the model as it was.

    Yields:
        The Recording, filled as the model runs.
    """
    if isinstance(model, torch.jit.ScriptModule):  # its code runs outside Python: hooks would record nothing
        raise CaptureError(
            f"cannot capture inside the TorchScript module {type(model).__name__} (torch.jit.trace or script)",
            "capture the model itself, before it is traced or scripted",
        )
    wanted_kinds = set(kinds) if kinds is not None else None
    recording = Recording()

    def kinds_or(tap: Tap) -> set[str]:
        return wanted_kinds if wanted_kinds is not None else {tap.kind}

    queries = query_points(queries)
    recorder = _Recorder(recording, dtype=dtype, queries=queries, heads=heads, max_bytes=max_bytes)
    handles: list[torch.utils.hooks.RemovableHandle] = []
    attached: list[bool] = []

    def hook_taps() -> bool:
        """Hook every selected tap; whether the model holds any tap at all."""
        taps = find_taps(model)
        recorded = {p for p, (tap, layer, _) in taps.items() if _selected(layer, layers) and tap.kind in kinds_or(tap)}
        handles.extend(guard_matrices(model, taps, max_bytes, recorded=recorded, rows_asked=queries is not None))
        for path, (tap, layer, block) in taps.items():
            if not _selected(layer, layers) or (wanted_kinds is not None and tap.kind not in wanted_kinds):
                continue
            recording.taps[path] = tap
            handles.append(tap.register_forward_hook(recorder.hook(path, tap, layer, block), with_kwargs=True))
            connect = getattr(tap, "connect", None)
            if connect is not None:  # a tap on a foreign module, fed by hooks it puts on its parent's submodules
                select = getattr(tap, "select_queries", None)
                if select is not None:  # it recomputes a matrix: only the asked rows, when rows are asked
                    select(queries)
                handles.extend(connect(model.get_submodule(path.rpartition(".")[0])))
        return bool(taps)

    def find_at_first_call(_module: nn.Module, args: tuple[Any, ...]) -> None:
        finder.remove()
        image = args[0] if args and isinstance(args[0], torch.Tensor) and args[0].dim() == 4 else None
        if image is None:
            return
        from attnviz.models.foreign import attach_taps

        attach_taps(model, size=(image.shape[-1], image.shape[-2]))
        attached.append(True)
        hook_taps()

    try:
        if not hook_taps() and find:
            finder = model.register_forward_pre_hook(find_at_first_call)
            handles.append(finder)
        with evaluating(model, eval_mode):
            yield recording
    finally:
        for handle in handles:
            handle.remove()
        if attached:
            from attnviz.models.foreign import detach_taps

            detach_taps(model)
