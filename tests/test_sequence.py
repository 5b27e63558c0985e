"""The sequence blocks drawn: tasks with known answers, their scores, `attnviz sequence`, `attnviz eval` and the
front door `attnviz.sequence`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from attnviz.errors import UsageError
from attnviz.sequence.evaluate import alignment_scores, dominant_periods, period_scores
from attnviz.sequence.tasks import (
    PERIODS,
    multi_sine,
    parse_digits,
    read_series_csv,
    reversal,
)
from tests.cli_utils import run

pytestmark = pytest.mark.usefixtures("two_threads")


# ------------------------------------------------------------------------------------------------ tasks


def test_reversal_copies_the_anti_diagonal() -> None:
    example = reversal("40961")
    assert example.target == "16904"
    assert example.alignment == (4, 3, 2, 1, 0)
    assert all(example.source[j] == example.target[i] for i, j in enumerate(example.alignment))


@pytest.mark.parametrize(("text", "digits"), [("4096", "4096"), (" 4 0 9 6 ", "4096"), ("40-96,1", "40961")])
def test_digit_lines_are_read_with_separators(text: str, digits: str) -> None:
    assert parse_digits(text) == digits


@pytest.mark.parametrize(("text", "message"), [("12a4", "'a'"), ("12", "got 2"), ("1" * 13, "got 13")])
def test_bad_digit_lines_are_refused(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_digits(text)


def test_multi_sine_series_repeat_with_their_known_periods() -> None:
    _, clean, periods = multi_sine(np.random.default_rng(3), 20, 4, 96 - 8)  # 96 steps in all: every period divides
    assert set(np.unique(periods)) <= set(PERIODS)
    found = dominant_periods(clean.reshape(-1, 96))
    assert np.array_equal(found, periods.reshape(-1))


def test_series_csv_with_and_without_header(tmp_path: Path) -> None:
    values = np.round(np.random.default_rng(0).normal(size=(20, 3)), 3)
    plain = tmp_path / "plain.csv"
    plain.write_text("\n".join(",".join(str(v) for v in row) for row in values) + "\n")
    named = tmp_path / "named.csv"
    named.write_text("a,b,c\n" + plain.read_text())
    for path, names in ((plain, ("node 0", "node 1", "node 2")), (named, ("a", "b", "c"))):
        series = read_series_csv(path)
        assert series.names == names and series.periods is None
        np.testing.assert_allclose(series.values, values.T, rtol=1e-6)


def test_bad_series_csv_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("a,b\n" + "1,2\n" * 5 + "3,x\n" + "1,2\n" * 20)
    with pytest.raises(UsageError, match="line 7"):
        read_series_csv(path)


# ------------------------------------------------------------------------------------------------ scores


def test_alignment_scores_on_hand_made_matrices() -> None:
    size = 4
    right = list(range(size - 1, -1, -1))
    perfect = np.eye(size)[right]
    shifted = np.eye(size)[[(p + 1) % size for p in right]]
    uniform = np.full((size + 1, size), 1 / size)  # one row more (the </s> step): not scored
    assert alignment_scores([perfect], [right]) == {
        "accuracy": 1.0, "mass": 1.0, "uniform_accuracy": 0.25, "uniform_mass": 0.25, "rows": 4,
    }  # fmt: skip
    assert alignment_scores([shifted], [right])["accuracy"] == 0.0
    both = alignment_scores([perfect, shifted], [right, right])
    assert both["accuracy"] == 0.5 and both["rows"] == 8
    assert alignment_scores([uniform], [right])["mass"] == pytest.approx(0.25)


def test_period_scores_on_pure_sines() -> None:
    time = np.arange(96)
    signals = np.stack([np.sin(2 * math.pi * time / 8), np.sin(2 * math.pi * time / 12)])
    assert period_scores(signals, np.array([8, 12])) == pytest.approx({"period_match": 1.0, "power_share": 1.0})
    wrong = period_scores(signals, np.array([12, 8]))
    assert wrong["period_match"] == 0.0 and wrong["power_share"] < 1e-6


# ------------------------------------------------------------------------------------------------ the command


def test_additive_draws_the_alignment_of_the_shipped_reverser(tmp_path: Path) -> None:
    code, stdout, _ = run("sequence", "additive", "31415926", "--out", str(tmp_path), "--json", "--save-raw")
    assert code == 0, stdout
    result = json.loads(stdout)
    assert result["written"] == "62951413" and result["correct"]
    assert result["alignment"]["right"] == [7, 6, 5, 4, 3, 2, 1, 0]
    assert result["alignment"]["accuracy"] >= 0.75 and result["alignment"]["uniform"] == pytest.approx(1 / 8)
    assert len(result["maps"]) == 9 and result["maps"][0]["kind"] == "matrix"  # one per decoder step, </s> too
    names = sorted(Path(f).name for f in result["files"])
    assert names == [
        "digits-31415926_additive_alignment.png",
        "digits-31415926_additive_raw.json",
        "digits-31415926_additive_raw.npz",
    ]
    raw = np.load(tmp_path / "digits-31415926_additive_raw.npz")
    assert raw["attention"].shape == (9, 8)
    np.testing.assert_allclose(raw["attention"].sum(axis=1), 1.0, rtol=1e-5)


def test_temporal_gate_draws_the_gates_over_a_csv(tmp_path: Path) -> None:
    time = np.arange(144)  # the last 96 steps, past the receptive field, hold whole periods of 12 and 24
    csv = tmp_path / "sines.csv"
    rows = [f"{math.sin(2 * math.pi * t / 12):.4f},{math.cos(2 * math.pi * t / 24):.4f}" for t in time]
    csv.write_text("fast,slow\n" + "\n".join(rows) + "\n")
    code, stdout, _ = run("sequence", "temporal_gate", str(csv), "--out", str(tmp_path), "--json", "--format", "svg")
    assert code == 0, stdout
    result = json.loads(stdout)
    assert result["nodes"] == ["fast", "slow"] and result["steps"] == 144
    assert result["input_strongest_period"] == [12, 24]
    assert [g["layer"] for g in result["gates"]] == ["gates.0", "gates.1", "gates.2"]
    assert all(0 < g["range"][0] <= g["range"][1] < 1 for g in result["gates"])
    assert [Path(f).name for f in result["files"]] == ["sines_temporal_gate_gate.svg"]


def test_temporal_gate_without_input_draws_the_example(tmp_path: Path) -> None:
    code, _, stderr = run("sequence", "temporal_gate", "--out", str(tmp_path))
    assert code == 0, stderr
    assert (tmp_path / "multi_sine_temporal_gate_gate.png").is_file()
    assert "wrote" in stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["additive", "12a4"], "additive reads a line of digits"),
        (["additive", "12"], "3 to 12 digits"),
        (["temporal_gate", "missing.csv"], "series file not found"),
        (["cbam"], "sequence draws additive and temporal_gate, not cbam"),
        (["fpn"], "fpn carries no attention of its own"),
        (["nonsense"], "unknown block 'nonsense'"),
        (["additive", "--format", "gif"], "unknown --format"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    code, stdout, stderr = run("sequence", *args, "--out", str(tmp_path / "out"))
    assert code == 2, stderr
    assert message in stderr and "Traceback" not in stderr + stdout
    assert len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_bad_csv_cell_is_one_line_and_exit_2(tmp_path: Path) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text("1,2\n" * 10 + "1,oops\n" + "1,2\n" * 10)
    code, _, stderr = run("sequence", "temporal_gate", str(csv), "--out", str(tmp_path / "out"))
    assert code == 2 and "line 11" in stderr and len(stderr.strip().splitlines()) == 1


def test_weights_of_the_other_block_or_a_pickle_are_refused(tmp_path: Path) -> None:
    import torch

    from attnviz.sequence.files import shipped_weights
    from attnviz.sequence.models import DigitReverser

    code, _, stderr = run("sequence", "temporal_gate", "--weights", str(shipped_weights("additive")))
    assert code == 2 and "holds the additive model" in stderr
    pickled = tmp_path / "whole.pt"
    torch.save(DigitReverser(), pickled)  # a whole pickled module: reading it runs code
    code, _, stderr = run("sequence", "additive", "--weights", str(pickled), "--out", str(tmp_path))
    assert code == 2 and "--trust" in stderr
    assert not list(tmp_path.glob("*.png"))


# ------------------------------------------------------------------------------------------------ front door and eval


def test_front_door_returns_the_cli_picture(tmp_path: Path) -> None:
    from PIL import Image

    import attnviz
    import attnviz.sequence.tasks  # the package of that name does not hide the function

    assert callable(attnviz.sequence)
    view = attnviz.sequence("additive", "4096153827")
    code, _, stderr = run("sequence", "additive", "4096153827", "--out", str(tmp_path))
    assert code == 0, stderr
    with Image.open(tmp_path / view.file_name("alignment")) as written:
        assert np.array_equal(np.asarray(written.convert("RGB")), np.asarray(view.image.convert("RGB")))
    assert view.summary["written"] == "7283516904"


def test_front_door_takes_an_array_and_names_its_keywords() -> None:
    import attnviz

    values = np.sin(np.arange(64) * 2 * math.pi / 8)[None].repeat(2, axis=0)
    view = attnviz.sequence("temporal_gate", values)
    assert view.summary["nodes"] == ["node 0", "node 1"] and "gate" in view.pictures
    with pytest.raises(UsageError, match="weights="):
        attnviz.sequence("additive", weights="nowhere.safetensors")


def test_eval_additive_aligns_far_above_uniform() -> None:
    code, stdout, stderr = run("eval", "additive", "--n", "60", "--json")
    assert code == 0, stderr
    result = json.loads(stdout)
    assert result["alignment"]["accuracy"] >= 0.9
    assert result["alignment"]["accuracy"] > result["uniform"]["accuracy"] + 0.7
    assert result["sequence_accuracy"] >= 0.9


def test_eval_temporal_gate_reports_periods_beside_its_baselines() -> None:
    code, stdout, stderr = run("eval", "temporal_gate", "--n", "4")
    assert code == 0, stderr
    assert "period match" in stdout and "untrained" in stderr and "flat spectrum" in stdout
    code, stdout, _ = run("eval", "temporal_gate", "--n", "20", "--json")
    result = json.loads(stdout)
    assert set(result["gates"]) == set(result["untrained"]) == {"gates.0", "gates.1", "gates.2"}
    assert result["forecast"]["mse"] < 0.5 * result["forecast"]["mse_of_predicting_the_mean"]
    assert result["input"]["period_match"] >= 0.9 and result["uniform"]["period_match"] < 0.05


def test_bad_input_is_refused_before_torch_is_imported() -> None:
    import subprocess
    import sys

    probe = (
        "import sys\nfrom typer.testing import CliRunner\nfrom attnviz.cli.app import app\n"
        "result = CliRunner().invoke(app, ['sequence', 'additive', '12a4'])\n"
        "print(result.exit_code, 'TORCH' if 'torch' in sys.modules else 'CLEAN')\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert result.stdout.split() == ["2", "CLEAN"], result.stderr[-500:]


def test_list_says_where_fpn_and_the_sequence_blocks_are_drawn() -> None:
    code, stdout, _ = run("list")
    assert code == 0
    text = " ".join(stdout.split())
    assert "fpn carries no attention of its own" in text and "drawn by attnviz sequence" in text
