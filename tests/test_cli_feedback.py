"""What a new user sees while a command runs: help for bare `attnviz`, progress in a log file, honest Ctrl-C messages,
fast refusal of mistyped blocks, and layer paths that stay readable in 80 columns."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from rich.table import Table

import attnviz.cli.common as common
from tests.cli_utils import TINY, run


def captured_stderr(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """Send the CLI's stderr console to a buffer that is not a terminal."""
    buffer = io.StringIO()
    monkeypatch.setattr(common, "err", Console(file=buffer, width=200, color_system=None, highlight=False))
    return buffer


def test_bare_attnviz_prints_the_help_and_no_error() -> None:
    code, out, err = run()
    assert code == 0, err
    assert "Usage" in out and "fit" in out and "inspect" in out
    assert "error" not in err.lower() and "error:" not in out


def test_fit_off_a_terminal_prints_progress_lines_without_nan(tmp_path: Path) -> None:
    code, _, err = run("fit", "se", "--out", str(tmp_path / "se.safetensors"), "--epochs", "2", *TINY)
    assert code == 0, err
    progress = [line for line in err.splitlines() if re.match(r"epoch \d/2  \d+/32 images", line)]
    assert progress[0] == "epoch 1/2  0/32 images", err  # the run has started; no loss yet, and no "loss nan"
    assert all("loss" in line and "acc" in line and "img/s" in line for line in progress[1:]), err
    assert any(line.startswith("epoch 2/2  32/32 images") for line in progress), err
    assert "nan" not in err.lower()


def test_progress_lines_every_tenth_and_no_value_before_the_first(monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = captured_stderr(monkeypatch)
    with common.progress("eval cbam", 100, unit="scenes") as meter:
        assert meter.line() == "eval cbam  0/100 scenes"  # nothing shown before there is a value
        for _ in range(20):
            meter.advance(5, loss=0.5)
        meter.phase("fitting the channel-weight probes")
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 12 and lines[0] == "eval cbam  0/100 scenes"  # started, with no value yet
    assert lines[1].startswith("eval cbam  10/100 scenes  loss 0.500") and "ETA" in lines[1]
    assert lines[10].startswith("eval cbam  100/100 scenes") and "ETA" not in lines[10]
    assert lines[11] == "eval cbam  fitting the channel-weight probes"


def test_quiet_progress_prints_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = captured_stderr(monkeypatch)
    with common.progress("show", 3, enabled=False) as meter:
        for _ in range(3):
            meter.advance()
    assert buffer.getvalue() == "" and meter.done == 3


@pytest.mark.parametrize("stale_checkpoint", [False, True])
def test_ctrl_c_before_the_first_epoch_names_no_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stale_checkpoint: bool
) -> None:
    import attnviz.training.classifier as train

    def interrupted(*args: object, **kwargs: object) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "run_epoch", interrupted)
    out = tmp_path / "se.safetensors"
    if stale_checkpoint:  # left by an earlier run; this one (no --resume) saved nothing into it
        import torch

        from attnviz.training.loop import RESUMABLE_KEYS

        torch.save(
            {k: torch.zeros(1) if t is torch.Tensor else t() for k, t in RESUMABLE_KEYS.items()},
            out.with_suffix(".ckpt"),
        )
    code, _, err = run("fit", "se", "--out", str(out), "--epochs", "2", *TINY)
    assert code == 130, err
    last = err.strip().splitlines()[-1]
    assert "nothing was saved" in last and ".ckpt" not in last
    assert ("will be replaced" in err) == stale_checkpoint  # the earlier run's checkpoint is named before training
    assert out.with_suffix(".ckpt").exists() == stale_checkpoint


def test_interrupted_names_the_checkpoint_only_when_it_holds_epochs(tmp_path: Path) -> None:
    checkpoint = tmp_path / "se.ckpt"
    buffer = io.StringIO()
    console = Console(file=buffer, width=200, color_system=None)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(common, "err", console)
        assert common.training_interrupted(checkpoint, 1, resumed=False).exit_code == 130  # no file: not named
        checkpoint.write_bytes(b"epochs")
        common.training_interrupted(checkpoint, 2, resumed=False)
        common.training_interrupted(checkpoint, None, resumed=True)
    first, second, third = buffer.getvalue().splitlines()
    assert "nothing was saved" in first and "se.ckpt" not in first
    assert "epoch 2 is saved in" in second and str(checkpoint) in second and "--resume" in second
    assert "as it was" in third and str(checkpoint) in third


TORCH_FREE_REFUSAL = (
    "import sys\n"
    "from typer.testing import CliRunner\n"
    "from attnviz.cli.app import app\n"
    "result = CliRunner().invoke(app, sys.argv[1:])\n"
    "assert result.exit_code == 2, (result.exit_code, result.output)\n"
    "assert 'unknown block' in result.output, result.output\n"
    "assert 'torch' not in sys.modules, 'torch was imported'\n"
)


@pytest.mark.parametrize(
    "args",
    [
        ["show", "cbm", "x.png"],
        ["channels", "sse"],
        ["coords", "cbm", "x.png"],
        ["matrix", "cbm", "x.png"],
        ["inspect", "cbm"],
        ["fit", "cbm"],
        ["eval", "cbm"],
    ],
    ids=lambda args: args[0],
)
def test_a_mistyped_block_is_refused_before_torch_is_imported(args: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", TORCH_FREE_REFUSAL, *args], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-800:]


def _layer_cells(text: str, column: int) -> list[list[str]]:
    """The pieces of the `column`th cell of every table row, a row starting where its stage cell is filled."""
    rows: list[list[str]] = []
    for line in text.splitlines():
        cells = line.split("│")
        if len(cells) < 4:
            continue
        if cells[column + 2].strip():  # the stage, the column after the type
            rows.append([])
        if cells[column].strip():
            rows[-1].append(cells[column].strip())
    return rows


def test_80_columns_keep_layer_paths_whole_or_folded_at_a_dot(monkeypatch: pytest.MonkeyPatch) -> None:
    import attnviz.cli.inspect_cmd as inspect_cmd

    names = ["features.12.block.3.excite", "stages.2.blocks.11.attn.attention", "layer3.1.attn"]
    rows = [
        {
            "layer": name,
            "type": "SqueezeExcitation",
            "how": "structure",
            "stage": 3,
            "taps": [{"kind": "channel", "label": "channel"}],
            "maps": [{"shape": [1, 256]}],
            "calls": 1,
            "parameters": 123456,
        }
        for name in names
    ]
    found = {"model": "timm:some_long_model_name", "input": (224, 224), "recognised": rows, "not_recognised": []}
    buffer = io.StringIO()
    monkeypatch.setattr(inspect_cmd, "out", Console(width=80, file=buffer, color_system=None))
    inspect_cmd._print_foreign(found)
    text = buffer.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80, text
    pieces = _layer_cells(text, 1)
    assert ["".join(p) for p in pieces] == names, text
    assert any(len(p) > 1 for p in pieces), text  # the long ones did fold...
    assert all(piece.endswith(".") for p in pieces for piece in p[:-1]), text  # ...and only after a dot


def test_layer_path_folds_after_dots_and_colons() -> None:
    buffer = io.StringIO()
    console = Console(width=40, file=buffer, color_system=None)
    table = Table(show_header=False, box=None, padding=0)
    table.add_column(width=14)
    table.add_row(common.LayerPath("layer3.0.attn.attention:matrix@centre"))
    console.print(table)
    assert [line.rstrip() for line in buffer.getvalue().splitlines()] == [
        "layer3.0.attn.",
        "attention:",
        "matrix@centre",
    ]
