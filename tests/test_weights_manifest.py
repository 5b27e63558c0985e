"""The shipped weights match weights/MANIFEST.json: every file listed, sha256 equal, sidecars consistent."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
MANIFEST = json.loads((WEIGHTS / "MANIFEST.json").read_text())
ENTRIES = MANIFEST["files"]


def test_every_weights_file_is_listed_once() -> None:
    listed = [e["file"] for e in ENTRIES]
    assert len(listed) == len(set(listed))
    shipped = [*WEIGHTS.glob("*.safetensors"), *WEIGHTS.glob("*.pt")]
    assert sorted(listed) == sorted(p.name for p in shipped)


def test_weights_stay_under_the_size_budget() -> None:
    total = sum(p.stat().st_size for p in WEIGHTS.iterdir() if p.is_file())
    assert total <= 120 * 2**20


def test_every_file_matches_its_manifest_entry() -> None:
    for entry in ENTRIES:
        _check_entry(entry)


def _check_entry(entry: dict) -> None:
    path = WEIGHTS / entry["file"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
    assert path.stat().st_size == entry["bytes"]
    if entry["kind"] == "detector":
        _check_detector(path, entry)
        return
    sidecar = json.loads(path.with_suffix(".json").read_text())
    if entry["kind"] == "sequence":  # attnviz.sequence's models: made by weights/build.py, not by `attnviz fit`
        _check_sequence(path, entry, sidecar)
        return
    assert sidecar["block"] == entry["block"] and sidecar["backbone"] == entry["backbone"]
    assert entry["command"].startswith("attnviz fit ") and entry["command"] == sidecar["command"]
    assert entry["accuracy"] == sidecar["metrics"]["val_accuracy"]
    if sidecar["base"]:
        assert (WEIGHTS / sidecar["base"]).is_file(), "the shared base must ship beside the blocks"
    if entry["kind"] == "classifier":
        from attnviz.io.shipped import demo_weights

        assert demo_weights(entry["block"], entry["backbone"]) == path


def _check_sequence(path: Path, entry: dict, sidecar: dict) -> None:
    from attnviz.sequence.files import shipped_weights

    assert path.stat().st_size <= 400 * 2**10
    assert sidecar["block"] == entry["block"] and sidecar["model"] == entry["model"]
    assert entry["command"] == sidecar["command"] == f"python weights/build.py sequence {entry['block']}"
    assert entry["metrics"] == sidecar["metrics"]
    assert shipped_weights(entry["block"]) == path
    if entry["block"] == "additive":
        assert entry["eval"]["alignment"]["accuracy"] >= 0.9


def _check_detector(path: Path, entry: dict) -> None:
    import torch

    from attnviz.detection.files import detector_from_checkpoint

    assert path.stat().st_size <= 30 * 2**20
    contents = torch.load(path, map_location="cpu", weights_only=True)  # no code runs to read it
    assert set(contents) >= {"config", "state_dict", "classes", "metrics"}
    assert entry["command"].startswith("attnviz fit-det ") and entry["command"] == contents["training"]["command"]
    assert entry["map50"] == contents["metrics"]["val_map50"]
    assert entry["backbone"] == contents["config"]["backbone"] and contents["config"]["asff"]
    model, _ = detector_from_checkpoint(contents, str(path))
    assert len(model.asff) == 3
    if entry["eval"] is not None:
        assert 0 <= entry["eval"]["map50"] <= 1


def test_shipped_cbam_localises_on_fresh_scenes() -> None:
    """A small rerun of the README's eval row: the demo CBAM's best map still points at the object."""
    from typer.testing import CliRunner

    from attnviz.cli.app import app

    result = CliRunner().invoke(app, ["eval", "cbam", "--n", "40", "--cam", "none", "--faith-n", "0", "--json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert scores["accuracy"] >= 0.9
    assert scores["best"]["pointing"] >= 0.75 and scores["best"]["auroc"] >= 0.85
    assert scores["best"]["pointing"] > scores["random"]["pointing"] + 0.5


def test_shipped_detector_finds_the_sample_scene_objects(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from attnviz.cli.app import app

    scene = WEIGHTS.parent / "samples" / "scenes" / "detection_scene"
    args = ["asff-weights", "demo", str(scene.with_suffix(".png")), "--out", str(tmp_path), "--json"]
    result = CliRunner().invoke(app, args)  # "demo" is the shipped det.pt
    assert result.exit_code == 0, result.output
    assert len(list(tmp_path.glob("*_det_*.png"))) == 4
    truth = json.loads(scene.with_suffix(".json").read_text())
    found = {d["class"] for d in json.loads(result.stdout)["detections"]}
    assert len(found & {o["shape"] for o in truth["objects"]}) >= 3


def test_demo_without_a_shipped_detector_says_so(monkeypatch, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from attnviz.cli.app import app

    monkeypatch.setattr("attnviz.io.shipped.demo_manifest", lambda: [])
    monkeypatch.chdir(tmp_path)
    image = WEIGHTS.parent / "samples" / "scenes" / "detection_scene.png"
    for args in (["asff-weights", "demo", str(image)], ["eval-det", "demo", "--n", "2"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code != 0 and "no demo detector is installed" in result.stderr, args
        assert "Traceback" not in result.output
    assert not list(tmp_path.iterdir())


def test_pip_install_ships_every_listed_file() -> None:
    import fnmatch
    import re

    text = (WEIGHTS.parent / "pyproject.toml").read_text()  # no tomllib: Python 3.10 is supported
    line = re.search(r'^"share/attnviz/weights" = \[(.*)\]$', text, re.MULTILINE)
    assert line is not None
    patterns = re.findall(r'"([^"]+)"', line.group(1))
    for name in [e["file"] for e in ENTRIES] + ["MANIFEST.json"]:
        assert any(fnmatch.fnmatch(f"weights/{name}", p) for p in patterns), name


def test_eval_all_summarises_the_demo_blocks(monkeypatch) -> None:
    from typer.testing import CliRunner

    import attnviz.cli.eval_cmd as eval_cmd
    from attnviz.cli.app import app

    monkeypatch.setattr(eval_cmd, "_demo_blocks", lambda: ["cbam", "se"])  # two of them, to stay quick
    result = CliRunner().invoke(app, ["eval", "all", "--n", "4", "--batch-size", "4", "--cam", "none"])
    assert result.exit_code == 0, result.output
    assert "where each block localises best" in result.stdout
    assert "cbam" in result.stdout and "layer" in result.stdout and "se" in result.stdout


def test_eval_tables_fit_80_columns(monkeypatch) -> None:
    import io

    from rich.console import Console

    import attnviz.cli.eval_cmd as eval_cmd

    long_name = "layer3.0.attn.attention:matrix@centre"
    scores = {"stage": 3, "pointing": 0.5, "auroc": 0.6, "energy": 1.2}
    result = {
        "block": "eca_mhsa",
        "accuracy": 0.98,
        "images": 10,
        "maps": {long_name: scores, "layer4.1.attn.attention:matrix@centre": {**scores, "stage": 4}},
        "gradcam": {"3": {"pointing": 0.7, "auroc": 0.9}},
        "random": {"pointing": 0.14, "auroc": 0.5},
        "channel": {"layer3.0.attn:channel": {"stage": 3, "probe_accuracy": 0.9, "chance": 0.1}},
        "best": {"map": long_name, **scores},
    }
    plain = {**result, "block": "criss_cross", "maps": {}, "best": None}
    buffer = io.StringIO()
    monkeypatch.setattr("attnviz.cli.eval_tables.out", Console(width=80, file=buffer, color_system=None))
    eval_cmd._print_summary([result, plain], 10)
    eval_cmd._print_tables("eca_mhsa", result)
    text = buffer.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert text.count("layer3.0.attn.attention") >= 2 and "criss_cross" in text  # names fold, never vanish
    assert "a uniform random map scores point 0.14, AUROC 0.50" in text
