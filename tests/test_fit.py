"""fit and eval end to end on tiny synthetic runs: weights + sidecar + checkpoint, resume, shared base, Ctrl-C."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from attnviz.loading import load_native as load_model
from tests.cli_utils import TINY, run


@pytest.fixture(scope="module")
def se_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fit") / "se.safetensors"
    code, _, err = run("fit", "se", "--out", str(out), "--epochs", "1", *TINY)
    assert code == 0, err
    return out


def test_fit_writes_weights_sidecar_and_checkpoint(se_weights: Path) -> None:
    sidecar = json.loads(se_weights.with_suffix(".json").read_text())
    assert sidecar["block"] == "se" and sidecar["backbone"] == "resnet18" and sidecar["input_size"] == 64
    assert len(sidecar["classes"]) >= 8 and sidecar["metrics"]["epochs"] == 1
    assert sidecar["command"].startswith("attnviz fit se")
    assert se_weights.with_suffix(".ckpt").is_file()
    keys = load_file(str(se_weights))
    assert any(".attn." in k for k in keys) and "conv1.weight" in keys


def test_show_and_channels_read_fitted_weights(se_weights: Path, tmp_path: Path) -> None:
    code, out, err = run(
        "channels",
        "se",
        "--weights",
        str(se_weights),
        "--layer",
        "2",
        "--out",
        str(tmp_path),
        "--json",
        "--device",
        "cpu",
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["model"]["num_classes"] == len(json.loads(se_weights.with_suffix(".json").read_text())["classes"])
    loaded = load_model("se", weights=se_weights, device="cpu")
    assert loaded.input_size == 64 and loaded.trained
    code, _, err = run("channels", "cbam", "--weights", str(se_weights), "--out", str(tmp_path), "--device", "cpu")
    assert code == 2 and "holds weights for se, not cbam" in err


def test_resume_continues_from_the_checkpoint(se_weights: Path) -> None:
    code, out, err = run("fit", "se", "--out", str(se_weights), "--epochs", "2", "--resume", "--json", *TINY)
    assert code == 0, err
    history = json.loads(out)["history"]
    assert [h["epoch"] for h in history] == [0, 1]  # epoch 0 came from the checkpoint, only epoch 1 ran
    code, _, err = run("fit", "cbam", "--out", str(se_weights), "--epochs", "3", "--resume", *TINY)
    assert code == 2 and "block='se'" in err
    code, _, err = run("fit", "se", "--out", str(se_weights), "--epochs", "1", "--resume", *TINY)  # 2 are done
    assert code == 2 and "nothing to train" in err and "Traceback" not in err


def test_interrupt_keeps_the_last_epoch_and_exits_130(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import attnviz.training.classifier as train

    real = train.run_epoch
    calls = {"n": 0}

    def interrupted(*args: object, **kwargs: object) -> tuple[float, float, float]:
        calls["n"] += 1
        if calls["n"] == 3:  # epoch 0 train + val done, then Ctrl-C during epoch 1
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train, "run_epoch", interrupted)
    out = tmp_path / "eca.safetensors"
    code, _, err = run("fit", "eca", "--out", str(out), "--epochs", "3", *TINY)
    assert code == 130 and "--resume" in err
    state = torch.load(out.with_suffix(".ckpt"), weights_only=True)
    assert state["epoch"] == 0
    assert not out.exists()


def test_shared_base_then_block_parts(tmp_path: Path) -> None:
    base = tmp_path / "base.safetensors"
    code, _, err = run("fit", "none", "--out", str(base), "--epochs", "1", *TINY)
    assert code == 0, err
    part = tmp_path / "cbam.safetensors"
    code, _, err = run("fit", "cbam", "--out", str(part), "--base", str(base), "--epochs", "1", *TINY)
    assert code == 0, err
    keys = set(load_file(str(part)))
    norm = (".bn", "bn1.", ".downsample.1.")
    assert keys and all(".attn." in k or k.startswith("fc.") or any(n in k for n in norm) for k in keys)
    assert "layer1.0.bn1.running_mean" in keys and not any("conv" in k and ".attn." not in k for k in keys)
    loaded = load_model("cbam", weights=part, device="cpu")
    base_state = load_file(str(base))
    own = loaded.model.state_dict()
    assert torch.equal(own["layer1.0.conv1.weight"], base_state["layer1.0.conv1.weight"])  # frozen, from the base
    # the batch norms adapted to the blocks and come from the part
    assert torch.equal(own["layer1.0.bn1.running_mean"], load_file(str(part))["layer1.0.bn1.running_mean"])
    assert not torch.equal(own["layer1.0.bn1.running_mean"], base_state["layer1.0.bn1.running_mean"])
    assert torch.equal(own["fc.weight"], load_file(str(part))["fc.weight"])  # the head from the part


def test_base_with_train_backbone_writes_the_whole_model(tmp_path: Path) -> None:
    base = tmp_path / "base.safetensors"
    code, _, err = run("fit", "none", "--out", str(base), "--epochs", "1", *TINY)
    assert code == 0, err
    whole = tmp_path / "sk.safetensors"
    options = ["--base", str(base), "--train-backbone", "--epochs", "1", *TINY]
    code, _, err = run("fit", "sk", "--out", str(whole), *options)
    assert code == 0, err
    assert json.loads(whole.with_suffix(".json").read_text())["base"] is None  # stands alone
    state = load_file(str(whole))
    conv = "layer1.0.conv1.weight"
    assert conv in state and not torch.equal(state[conv], load_file(str(base))[conv])  # started there, then trained
    assert load_model("sk", weights=whole, device="cpu").trained


def test_out_defaults_to_block_and_backbone_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run("fit", "se", "--epochs", "1", *TINY)
    assert code == 0, err
    assert {p.name for p in tmp_path.iterdir()} == {"se_resnet18.safetensors", "se_resnet18.json", "se_resnet18.ckpt"}
    assert load_model("se", weights=tmp_path / "se_resnet18.safetensors", device="cpu").weights_info is not None


def test_part_in_another_folder_finds_its_base(tmp_path: Path) -> None:
    base = tmp_path / "shared" / "base.safetensors"
    base.parent.mkdir()
    code, _, err = run("fit", "none", "--out", str(base), "--epochs", "1", *TINY)
    assert code == 0, err
    part = tmp_path / "runs" / "se.safetensors"
    part.parent.mkdir()
    code, _, err = run("fit", "se", "--out", str(part), "--base", str(base), "--epochs", "1", *TINY)
    assert code == 0, err
    assert json.loads(part.with_suffix(".json").read_text())["base"] == "../shared/base.safetensors"
    loaded = load_model("se", weights=part, device="cpu")
    conv = "layer1.0.conv1.weight"
    assert torch.equal(loaded.model.state_dict()[conv], load_file(str(base))[conv])


def test_eval_reports_every_layer(tmp_path: Path) -> None:
    out = tmp_path / "cbam.safetensors"
    code, _, err = run("fit", "cbam", "--out", str(out), "--epochs", "1", *TINY)
    assert code == 0, err
    code, stdout, err = run("eval", "cbam", "--weights", str(out), "--n", "4", "--batch-size", "4", "--json")
    assert code == 0, err
    result = json.loads(stdout)
    assert result["images"] == 4
    stages = {m["stage"] for m in result["maps"].values()}
    assert stages == {1, 2, 3, 4}
    assert set(result["gradcam"]) == {"1", "2", "3", "4"}
    assert 0 <= result["random"]["pointing"] <= 1 and result["best"]["map"] in result["maps"]
    assert all(0 <= c["probe_accuracy"] <= 1 for c in result["channel"].values())
    assert result["size"] == 64  # the size the weights were trained at
    common = ["eval", "cbam", "--weights", str(out), "--n", "2", "--cam", "none", "--json"]
    code, stdout, err = run(*common, "--size", "96")
    assert code == 0, err
    assert json.loads(stdout)["size"] == 96 and json.loads(stdout)["images"] == 2
    code, _, err = run(*common, "--size", "8")
    assert code == 2 and "--size must be between 32 and 1024 pixels, got 8" in err


def test_fit_rejects_bad_values(tmp_path: Path) -> None:
    code, _, err = run("fit", "se", "--out", str(tmp_path / "x.safetensors"), "--epochs", "0")
    assert code == 2 and "--epochs" in err
    code, _, err = run("fit", "se", "--out", str(tmp_path / "x.safetensors"), "--data", str(tmp_path / "nope"))
    assert code == 2 and "ImageFolder" in err
    code, _, err = run("fit", "se", "--out", str(tmp_path / "x.safetensors"), "--resume", *TINY)
    assert code == 2 and "nothing to resume" in err
    code, _, err = run("fit", "sk", "--out", str(tmp_path / "x.safetensors"), "--train-stages", "2", *TINY)
    assert code == 2 and "--train-stages picks which stages of a --base" in err
    base = ["--base", str(tmp_path / "b.safetensors")]
    code, _, err = run("fit", "sk", *base, "--train-stages", "2", "--train-backbone", *TINY)
    assert code == 2 and "give one of them" in err
    code, _, err = run("fit", "sk", *base, "--train-stages", "2,5", *TINY)
    assert code == 2 and "--train-stages: stage 5 does not exist" in err
    code, _, err = run("fit", "sk", *base, "--train-stages", "2", "--match-weight", "-1", *TINY)
    assert code == 2 and "--match-weight must be at least 0" in err
    code, _, err = run("fit", "sk", *base, "--train-stages", "2", "--match-weight", "nan", *TINY)
    assert code == 2 and "--match-weight must be at least 0, got nan" in err
    code, _, err = run("fit", "se", "--lr", "0", *TINY)
    assert code == 2 and "--lr must be a positive number" in err
    assert not list(tmp_path.iterdir())  # nothing written by any of them


def test_train_stages_part_holds_those_stages(tmp_path: Path) -> None:
    base = tmp_path / "base.safetensors"
    code, _, err = run("fit", "none", "--out", str(base), "--epochs", "1", *TINY)
    assert code == 0, err
    part = tmp_path / "sk.safetensors"
    options = ["--base", str(base), "--stages", "2", "--train-stages", "2", "--epochs", "1", *TINY]
    code, _, err = run("fit", "sk", "--out", str(part), *options)
    assert code == 0, err
    sidecar = json.loads(part.with_suffix(".json").read_text())
    assert sidecar["base"] == "base.safetensors" and "--train-stages 2 --match-weight 10" in sidecar["command"]
    keys = load_file(str(part))
    base_state = load_file(str(base))
    convs = {k.split(".")[0] for k in keys if k.endswith("conv1.weight")}
    assert convs == {"layer2"}  # stage 2's convs trained and are in the part; the others stay the base's
    assert not torch.equal(keys["layer2.0.conv1.weight"], base_state["layer2.0.conv1.weight"])
    own = load_model("sk", weights=part, device="cpu").model.state_dict()
    assert torch.equal(own["layer2.0.conv1.weight"], keys["layer2.0.conv1.weight"])
    assert torch.equal(own["layer3.0.conv1.weight"], base_state["layer3.0.conv1.weight"])
    code, stdout, err = run("eval", "sk", "--weights", str(part), "--n", "4", "--cam", "none", "--json")
    assert code == 0, err  # eval scores the blocks where the weights put them (stage 2 only here)
    assert set(json.loads(stdout)["channel"]) == {"layer2.0.attn:selection", "layer2.1.attn:selection"}


def test_stage_matcher_pulls_the_stage_towards_the_base() -> None:
    from attnviz.models.backbones import build_model
    from attnviz.training.matcher import StageMatcher

    torch.manual_seed(0)
    teacher = build_model("resnet18", None, num_classes=4).eval()
    twin = build_model("resnet18", None, num_classes=4).eval()
    twin.load_state_dict(teacher.state_dict())
    student = build_model("resnet18", "sk", stages=(2,), num_classes=4).eval()
    student.load_state_dict(teacher.state_dict(), strict=False)
    images = torch.randn(2, 3, 64, 64)
    same = StageMatcher(twin, teacher, ["layer2", "layer3"], weight=10.0)
    twin(images)
    assert same(images).item() == 0.0  # the plain base matches itself
    same.close()
    matcher = StageMatcher(student, teacher, ["layer2"], weight=10.0)
    student(images)
    loss = matcher(images)
    assert loss.item() > 0.1  # SK's random convs change what stage 2 computes
    loss.backward()
    assert student.layer2[0].conv1.weight.grad is not None  # the student learns from it
    assert all(p.grad is None for p in teacher.parameters())  # the base does not
    matcher.close()
    assert not student.layer2._forward_hooks


def test_resume_accepts_checkpoints_from_before_train_stages(tmp_path: Path) -> None:
    out = tmp_path / "se.safetensors"
    code, _, err = run("fit", "se", "--out", str(out), "--epochs", "1", *TINY)
    assert code == 0, err
    ckpt = out.with_suffix(".ckpt")
    state = torch.load(ckpt, weights_only=True)
    del state["config"]["train_stages"], state["config"]["match_weight"]
    torch.save(state, ckpt)
    code, _, err = run("fit", "se", "--out", str(out), "--epochs", "2", "--resume", *TINY)
    assert code == 0, err
    assert json.loads(out.with_suffix(".json").read_text())["metrics"]["epochs"] == 2


def test_maps_of_taps_inside_a_submodule_know_their_stage() -> None:
    from attnviz.evaluate import _stage_of
    from attnviz.models.backbones import build_model

    model = build_model("resnet18", "eca_mhsa", stages=(3, 4), num_classes=10)
    assert _stage_of(model, "layer3.0.attn.attention:matrix") == 3
    assert _stage_of(model, "layer4.1.attn:channel") == 4
    assert _stage_of(model, "layer30.0.attn:channel") is None


def test_eval_probes_selection_weights_like_channel_weights() -> None:
    from torch.utils.data import DataLoader

    from attnviz.data.datasets import SceneDataset
    from attnviz.evaluate import evaluate
    from attnviz.models.backbones import build_model

    model = build_model("resnet18", "sk", stages=(3,), num_classes=10)
    batches = DataLoader(SceneDataset("test", 8, 64, augment=False), batch_size=4)
    result = evaluate(model, batches, classes=10, cam=None)
    assert set(result.channel) == {"layer3.0.attn:selection", "layer3.1.attn:selection"}
    assert all(c["stage"] == 3 and 0 <= c["probe_accuracy"] <= 1 for c in result.channel.values())
    assert not result.maps  # SK has no map with a place
