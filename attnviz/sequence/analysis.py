"""One input through a sequence model, captured: the additive attention of every output step, or the temporal gates.

The matrices drawn come from `attnviz.capture` (one map per call of the block's Tap), not from the model's return
values, so the picture shows what the Tap saw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from attnviz.capture import Recording, capture
from attnviz.maps import reduce_to
from attnviz.sequence.evaluate import ANALYSED, alignment_scores, dominant_periods
from attnviz.sequence.files import SequenceModel
from attnviz.sequence.models import written
from attnviz.sequence.tasks import TOKENS, Series, reversal, standardise


@dataclass
class SequenceAnalysis:
    """What a sequence model computed on one input.

    Attributes:
        block: "additive" or "temporal_gate".
        stem: The input's piece of the file names.
        recording: Every map captured.
        arrays: The numbers drawn, by name (`--save-raw` writes them).
        facts: JSON-ready findings (the command's `--json` summary).
        series: For temporal_gate, the input series.
        tokens: For additive, the tokens read ("source") and written ("written"), as the axes label them.
    """

    block: str
    stem: str
    recording: Recording
    arrays: dict[str, np.ndarray]
    facts: dict[str, Any]
    series: Series | None = None
    tokens: dict[str, list[str]] = field(default_factory=dict)


def analyse_digits(loaded: SequenceModel, digits: str) -> SequenceAnalysis:
    """Reverse `digits` greedily and capture the attention row of every output step (up to the first </s>)."""
    import torch

    source = torch.tensor([[int(d) for d in digits]])
    with capture(loaded.model, kinds=["matrix"]) as recording:
        tokens, _ = loaded.model.generate(source)
    wrote = written(tokens[0].tolist())
    rows = np.stack([m.tensor[0, 0].float().numpy() for m in recording.maps[: len(wrote)]])
    known = reversal(digits)
    digit_rows = min(len(digits), sum(1 for t in wrote if t < 10))
    scores = alignment_scores([rows], [known.alignment[:digit_rows]])
    text = "".join(TOKENS[t] for t in wrote if t < 10)
    facts = {
        "block": "additive",
        "input": digits,
        "written": text,
        "correct": text == known.target and wrote[-1] == TOKENS.index("</s>"),
        "steps": len(wrote),
        "alignment": {
            "peaks": [int(i) for i in rows.argmax(axis=1)],
            "right": list(known.alignment),
            "accuracy": scores["accuracy"],
            "mass": scores["mass"],
            "uniform": scores["uniform_mass"],
        },
    }
    return SequenceAnalysis(
        "additive",
        f"digits-{digits}",
        recording,
        {"attention": rows, "source": np.array([int(d) for d in digits]), "written": np.array(wrote)},
        facts,
        tokens={"source": list(digits), "written": [TOKENS[t] for t in wrote]},
    )


def analyse_series(loaded: SequenceModel, series: Series) -> SequenceAnalysis:
    """Run the forecaster on `series` (standardised per node) and capture every temporal gate over nodes x time."""
    import torch

    inputs = torch.from_numpy(standardise(series.values))[None]
    with capture(loaded.model, kinds=["gate"]) as recording, torch.no_grad():
        forecast = loaded.model(inputs)[0].numpy()
    arrays: dict[str, np.ndarray] = {"series": series.values}
    layers = []
    dilations = loaded.model.config["dilations"]
    for index, m in enumerate(recording):
        gate = reduce_to(m, ("node", "time"))[0].numpy()
        arrays[f"gate:{m.layer}"] = gate
        layers.append(
            {
                "layer": m.layer,
                "map": m.name,
                "dilation": dilations[index] if index < len(dilations) else None,
                "shape": list(m.shape),
                "channels": m.size_of("channel"),
                "range": [float(gate.min()), float(gate.max())],
                "strongest_period": _periods(settled(gate, loaded.model.receptive_field)),
            }
        )
    mean, spread = series.values.mean(axis=1, keepdims=True), series.values.std(axis=1, keepdims=True)
    arrays["forecast"] = forecast * np.where(spread > 0, spread, 1.0) + mean
    facts = {
        "block": "temporal_gate",
        "input": series.source,
        "nodes": list(series.names),
        "steps": int(series.values.shape[1]),
        "known_periods": list(series.periods) if series.periods else None,
        "input_strongest_period": _periods(settled(series.values, loaded.model.receptive_field)),
        "periods_read_over_last_steps": int(settled(series.values, loaded.model.receptive_field).shape[1]),
        "gates": layers,
        "forecast": arrays["forecast"].round(4).tolist(),
    }
    stem = "multi_sine" if series.periods else _stem(series.source)
    return SequenceAnalysis("temporal_gate", stem, recording, arrays, facts, series=series)


def settled(values: np.ndarray, warm: int) -> np.ndarray:
    """The steps whose periods are read: the last ANALYSED when the series is long enough for every one of them to
    lie past the model's receptive field (as `attnviz eval` reads them), else every step past it, else all."""
    steps = values.shape[-1]
    if steps >= ANALYSED + warm:
        return values[..., -ANALYSED:]
    return values[..., warm:] if steps >= 2 * warm else values


def _periods(values: np.ndarray) -> list[float]:
    return [round(float(p), 2) for p in dominant_periods(values)]


def _stem(source: str) -> str:
    from pathlib import Path

    return Path(source).stem or "series"
