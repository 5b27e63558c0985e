"""`--save-raw`: every captured tensor of an analysis to .npz, with a JSON summary beside it."""

from __future__ import annotations

from pathlib import Path

from attnviz.pipeline import Analysis


def save_recording(analysis: Analysis, stem: Path) -> list[Path]:
    """Write `<stem>.npz` (one array per map, keyed by map name) and `<stem>.json`; return both paths."""
    from attnviz.render.save import save_raw

    arrays = {m.name: m.tensor.float().numpy() for m in analysis.recording}
    summary = {
        "image": str(analysis.path),
        "original_size": list(analysis.geometry.original_size),
        "input_size": list(analysis.geometry.input_size),
        "maps": [m.summary() for m in analysis.recording],
    }
    return list(save_raw(arrays, summary, stem))
