"""Tests of attnviz.models: block placement in every backbone, stage numbering, weights files, pretrained weights.

Nothing here touches the network: sockets are blocked for every test, and torchvision's pretrained weights are
read from a torch hub folder the tests fill themselves.
"""

from __future__ import annotations

import math
import os
import pathlib
import pickle
import socket
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn
from torchvision.ops.misc import SqueezeExcitation as TorchvisionSE

from attnviz.blocks.base import AttentionBlock, block_class
from attnviz.capture import capture
from attnviz.errors import CheckpointError, UnknownNameError, UntrustedCheckpointError, UsageError
from attnviz.models import BACKBONES, MOBILENETS, RESNETS
from attnviz.models.backbones import build_model

SIDE = 64
PRETRAINED_FILE = os.path.basename(torchvision.models.ResNet18_Weights.DEFAULT.url)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection fails the test instead of reaching the network."""

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a test tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """One intra-op thread: these models are tiny, and two threads slow down many times when the CPU is shared."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _image(batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, SIDE, SIDE)


def _randomise_norms(model: nn.Module) -> nn.Module:
    """Give every BN non-trivial statistics and affine values, so a BN maps zero to something non-zero."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return model


def _stage_of_side(side: int) -> int:
    """Stage N runs at output stride 2**(N+1)."""
    return int(math.log2(SIDE // side)) - 1


# ---------------------------------------------------------------------------------------------- what is built


@pytest.mark.parametrize("backbone", BACKBONES)
def test_every_backbone_gets_registered_blocks_at_chosen_stages(backbone: str) -> None:
    se = block_class("se")
    model = build_model(backbone, "se")
    blocks = model.attnviz_blocks
    assert blocks
    for path, stage in blocks.items():
        module = model.get_submodule(path)
        assert isinstance(module, AttentionBlock) and type(module) is se, path
        assert stage in (1, 2, 3, 4)
    if backbone in RESNETS or backbone == "mobilenet_v2":
        assert set(blocks.values()) == {1, 2, 3, 4}
    if backbone in RESNETS:
        residual_blocks = [f"layer{s}.{i}.attn" for s in range(1, 5) for i in range(len(getattr(model, f"layer{s}")))]
        assert list(blocks) == residual_blocks
        assert all(path.startswith(f"layer{stage}.") for path, stage in blocks.items())
    assert sum(isinstance(m, AttentionBlock) for m in model.modules()) == len(blocks)
    assert not model.training
    with torch.no_grad():
        assert model(_image()).shape == (1, 1000)

    if backbone == "mobilenet_v3_small":  # its stride-8 blocks have no squeeze-excitation to replace
        with pytest.raises(UsageError, match="no place for a block in stage"):
            build_model(backbone, "se", stages=(2,))
        return
    only_two = build_model(backbone, "se", stages=(2,))
    assert only_two.attnviz_blocks and set(only_two.attnviz_blocks.values()) == {2}
    assert sum(isinstance(m, AttentionBlock) for m in only_two.modules()) == len(only_two.attnviz_blocks)
    assert set(only_two.attnviz_blocks) == {p for p, s in blocks.items() if s == 2}


def test_plain_model_has_no_blocks() -> None:
    model = build_model("resnet18", None)
    assert model.attnviz_blocks == {}
    assert not any(isinstance(m, AttentionBlock) for m in model.modules())


class Zeros(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


@pytest.mark.parametrize(("backbone", "last_bn"), [("resnet18", "bn2"), ("resnet50", "bn3")])
@pytest.mark.parametrize("index", [0, 1], ids=["downsample", "identity"])
def test_resnet_block_sits_on_the_residual_branch_after_the_last_bn(backbone: str, last_bn: str, index: int) -> None:
    model = _randomise_norms(build_model(backbone, "se"))
    stage = 2 if index == 0 else 1  # layer2.0 always downsamples; layer1.1 never does
    res_block = getattr(model, f"layer{stage}")[index]
    assert (res_block.downsample is not None) == (index == 0)
    in_channels = res_block.conv1.in_channels
    x = torch.randn(1, in_channels, 16, 16)

    seen: dict[str, torch.Tensor] = {}
    bn_hook = getattr(res_block, last_bn).register_forward_hook(
        lambda _m, _i, out: seen.__setitem__("bn", out.detach().clone())
    )
    attn_hook = res_block.attn.register_forward_pre_hook(
        lambda _m, args: seen.__setitem__("attn", args[0].detach().clone())
    )
    with torch.no_grad():
        res_block(x)
    bn_hook.remove()
    attn_hook.remove()
    assert torch.equal(seen["attn"], seen["bn"])

    res_block.attn = Zeros()
    with torch.no_grad():
        out = res_block(x)
        identity = x if res_block.downsample is None else res_block.downsample(x)
    assert torch.equal(out, torch.relu(identity))


def test_mobilenet_v2_block_follows_the_depthwise_conv_bn_relu6() -> None:
    model = build_model("mobilenet_v2", "se")
    activations: dict[str, torch.Tensor] = {}
    inputs: dict[str, torch.Tensor] = {}
    handles = []
    for path in model.attnviz_blocks:
        host = model.get_submodule(path.rpartition(".")[0])
        conv, bn, act, attn = host.children()
        assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and isinstance(act, nn.ReLU6)
        assert conv.groups == conv.in_channels == conv.out_channels > 1, f"{path} does not follow a depthwise conv"
        assert attn is model.get_submodule(path)
        assert attn.fc1.in_features == conv.out_channels
        handles.append(act.register_forward_hook(lambda _m, _i, out, p=path: activations.__setitem__(p, out.clone())))
        handles.append(attn.register_forward_pre_hook(lambda _m, args, p=path: inputs.__setitem__(p, args[0].clone())))
    with torch.no_grad():
        model(_image())
    for handle in handles:
        handle.remove()
    assert set(inputs) == set(model.attnviz_blocks)
    for path in model.attnviz_blocks:
        assert torch.equal(inputs[path], activations[path])


def _se_sites_by_stage(model: nn.Module) -> dict[str, int]:
    """Path -> stage of every torchvision SE, measured from the side of its input on a SIDE x SIDE image."""
    sides: dict[str, int] = {}
    handles = [
        module.register_forward_pre_hook(lambda _m, args, p=path: sides.__setitem__(p, args[0].shape[-1]))
        for path, module in model.named_modules()
        if isinstance(module, TorchvisionSE)
    ]
    with torch.no_grad():
        model(_image())
    for handle in handles:
        handle.remove()
    return {path: _stage_of_side(side) for path, side in sides.items()}


@pytest.mark.parametrize("backbone", ["mobilenet_v3_small", "mobilenet_v3_large"])
def test_mobilenet_v3_block_replaces_squeeze_excitation(backbone: str) -> None:
    plain_sites = _se_sites_by_stage(build_model(backbone, None))
    assert plain_sites

    everywhere = build_model(backbone, "se")
    assert not any(isinstance(m, TorchvisionSE) for m in everywhere.modules())
    assert everywhere.attnviz_blocks == plain_sites

    model = build_model(backbone, "se", stages=(3,))
    chosen = {path for path, stage in plain_sites.items() if stage == 3}
    assert chosen and set(model.attnviz_blocks) == chosen
    for path, stage in plain_sites.items():
        module = model.get_submodule(path)
        if stage == 3:
            assert isinstance(module, AttentionBlock), path
            parent_path, _, index = path.rpartition(".")
            depthwise = model.get_submodule(parent_path)[int(index) - 1][0]
            assert depthwise.groups == depthwise.in_channels == module.fc1.in_features
        else:
            assert isinstance(module, TorchvisionSE), path


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50", *MOBILENETS])
def test_stage_numbers_follow_output_stride(backbone: str) -> None:
    model = build_model(backbone, "cbam")
    with torch.no_grad(), capture(model, kinds=["spatial"]) as rec:
        model(_image())
    assert len(rec) == len(model.attnviz_blocks)
    for m in rec:
        stage = model.attnviz_blocks[m.layer]
        assert m.shape[-2:] == (SIDE // 2 ** (stage + 1),) * 2, f"{m.layer} is said to be stage {stage}"


def _output_shape(model: nn.Module, module: nn.Module, image: torch.Tensor) -> torch.Size:
    seen = {}
    handle = module.register_forward_hook(lambda _module, _inputs, output: seen.update(shape=output.shape))
    model(image)
    handle.remove()
    return seen["shape"]


@pytest.mark.parametrize("backbone", ["resnet18", *MOBILENETS])
def test_stage_prefixes_name_the_modules_of_each_stage(backbone: str) -> None:
    from attnviz.models.backbones import stage_prefixes

    model = build_model(backbone, None)
    image = _image()
    for stage in (1, 2, 3, 4):
        prefixes = stage_prefixes(model, backbone, (stage,))
        assert prefixes and all(p.endswith(".") for p in prefixes)
        last = model.get_submodule(prefixes[-1][:-1])
        with torch.no_grad():
            shape = _output_shape(model, last, image)
        assert shape[-2:] == (SIDE // 2 ** (stage + 1),) * 2, f"{prefixes[-1]} ends stage {stage}"
    every = stage_prefixes(model, backbone, (1, 2, 3, 4))
    assert len(every) == len(set(every)) == sum(len(stage_prefixes(model, backbone, (s,))) for s in (1, 2, 3, 4))


# ------------------------------------------------------------------------------------------------ bad requests


@pytest.mark.parametrize("block", ["asff", "fpn", "temporal_gate", "additive"])
def test_blocks_that_do_not_fit_a_backbone_are_refused(block: str) -> None:
    with pytest.raises(UsageError) as info:
        build_model("resnet18", block)
    message = str(info.value)
    assert block in message and "does not fit" in message
    assert "cbam" in (info.value.hint or "")
    assert "\n" not in message


def test_unknown_backbone_lists_the_valid_names() -> None:
    with pytest.raises(UnknownNameError) as info:
        build_model("resnet19", "se")
    assert "resnet19" in str(info.value)
    for name in BACKBONES:
        assert name in str(info.value)


@pytest.mark.parametrize("stages", [(0,), (9,), (1, 5), ()])
def test_stages_outside_one_to_four_are_refused(stages: tuple[int, ...]) -> None:
    with pytest.raises(UsageError, match="stage"):
        build_model("resnet18", "se", stages=stages)


# ------------------------------------------------------------------------------------------------ weights files


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A resnet18 + SE with non-default BN buffers, an input, and its output."""
    torch.manual_seed(1)
    model = _randomise_norms(build_model("resnet18", "se"))
    x = _image()
    with torch.no_grad():
        return model, x, model(x)


def _output(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.contiguous() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("form", ["safetensors", "safetensors_any_suffix", "torch", "nested", "module_prefix"])
def test_weights_round_trip(form: str, trained: tuple[nn.Module, torch.Tensor, torch.Tensor], tmp_path: Path) -> None:
    model, x, expected = trained
    state = _state(model)
    if form.startswith("safetensors"):
        path = tmp_path / ("w.safetensors" if form == "safetensors" else "w.bin")
        save_file(state, str(path))
    else:
        path = tmp_path / "w.pt"
        if form == "nested":
            torch.save({"epoch": 3, "state_dict": state, "optimizer": {"lr": 0.1}}, path)
        elif form == "module_prefix":
            torch.save({f"module.{k}": v for k, v in state.items()}, path)
        else:
            torch.save(state, path)
    assert not torch.equal(_output(build_model("resnet18", "se"), x), expected)  # a fresh build differs
    loaded = build_model("resnet18", "se", weights=path)
    assert torch.equal(_output(loaded, x), expected)


def test_weights_of_another_block_name_the_keys(
    trained: tuple[nn.Module, torch.Tensor, torch.Tensor], tmp_path: Path
) -> None:
    path = tmp_path / "se.safetensors"
    save_file(_state(trained[0]), str(path))
    with pytest.raises(CheckpointError) as info:
        build_model("resnet18", "cbam", weights=path)
    message = str(info.value)
    assert "\n" not in message
    assert "missing" in message and "unexpected" in message
    assert "attn.channel.mlp" in message  # a cbam key the file lacks
    assert "attn.fc1" in message  # an se key the model lacks


def test_truncated_safetensors_is_a_checkpoint_error(
    trained: tuple[nn.Module, torch.Tensor, torch.Tensor], tmp_path: Path
) -> None:
    whole = tmp_path / "whole.safetensors"
    save_file(_state(trained[0]), str(whole))
    data = whole.read_bytes()
    for name, cut in (("half.safetensors", len(data) // 2), ("header.safetensors", 40)):
        path = tmp_path / name
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="safetensors"):
            build_model("resnet18", "se", weights=path)


def test_truncated_torch_file_is_a_checkpoint_error(
    trained: tuple[nn.Module, torch.Tensor, torch.Tensor], tmp_path: Path
) -> None:
    whole = tmp_path / "whole.pt"
    torch.save(_state(trained[0]), whole)
    path = tmp_path / "half.pt"
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(CheckpointError) as info:
        build_model("resnet18", "se", weights=path)
    assert "\n" not in str(info.value)


def test_empty_file_missing_file_and_directory(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        build_model("resnet18", "se", weights=empty)
    with pytest.raises(UsageError, match="directory"):
        build_model("resnet18", "se", weights=tmp_path)
    with pytest.raises(UsageError, match="not found"):
        build_model("resnet18", "se", weights=tmp_path / "nowhere.pt")


def test_pickled_model_needs_trust(trained: tuple[nn.Module, torch.Tensor, torch.Tensor], tmp_path: Path) -> None:
    model, x, expected = trained
    path = tmp_path / "full.pt"
    torch.save(model, path)
    with pytest.raises(UntrustedCheckpointError) as info:
        build_model("resnet18", "se", weights=path)
    assert "trust" in str(info.value)
    loaded = build_model("resnet18", "se", weights=path, trust=True)
    assert torch.equal(_output(loaded, x), expected)


class OpensAFile:
    """Unpickling this creates a file: what a malicious checkpoint could do."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (open, (str(self.target), "w"))


class TouchesAFile(OpensAFile):
    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (pathlib.Path.touch, (pathlib.Path(self.target),))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("saver", ["torch", "pickle"])
def test_untrusted_pickle_never_runs(saver: str, tmp_path: Path) -> None:
    target = tmp_path / "created_by_unpickling"
    path = tmp_path / "evil.pt"
    payload = {"conv1.weight": OpensAFile(target)}
    if saver == "torch":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(UntrustedCheckpointError):
        build_model("resnet18", "se", weights=path)
    assert not target.exists()


def test_trusted_pickle_does_run(tmp_path: Path) -> None:
    """Control for the test above: the payload really creates the file once the user trusts it."""
    target = tmp_path / "created_by_unpickling"
    path = tmp_path / "evil.pt"
    torch.save({"x": TouchesAFile(target)}, path)
    with pytest.raises(UntrustedCheckpointError):
        build_model("resnet18", "se", weights=path)
    assert not target.exists()
    with pytest.raises(CheckpointError, match="no state dict"):
        build_model("resnet18", "se", weights=path, trust=True)
    assert target.exists()


# ------------------------------------------------------------------------------------------ pretrained weights


@pytest.fixture
def hub_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Path:
    """An empty torch hub folder for this test only."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    hub = home / "hub"
    if torch.hub.get_dir() != str(hub):  # torch.hub.set_dir was called earlier in this process
        previous = torch.hub.get_dir()
        torch.hub.set_dir(str(hub))
        request.addfinalizer(lambda: torch.hub.set_dir(previous))
    assert torch.hub.get_dir() == str(hub)
    (hub / "checkpoints").mkdir(parents=True)
    return hub


def _refuse_download(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    attempts: list[str] = []

    def fail(url: str, dst: str, *_args: object, **_kwargs: object) -> None:
        attempts.append(url)
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fail)
    return attempts


def test_pretrained_weights_come_from_the_hub_cache(hub_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    attempts = _refuse_download(monkeypatch)
    state = torchvision.models.resnet18().state_dict()
    with torch.no_grad():
        for key, value in state.items():
            if value.is_floating_point():
                value.copy_(torch.rand_like(value) + 0.5 if key.endswith("running_var") else torch.randn_like(value))
    torch.save(state, hub_dir / "checkpoints" / PRETRAINED_FILE)

    model = build_model("resnet18", "cbam", pretrained=True)
    assert attempts == []
    own = model.state_dict()
    for key in (
        "conv1.weight",
        "layer1.0.conv1.weight",
        "layer3.0.downsample.0.weight",
        "layer4.1.bn2.running_mean",
        "fc.weight",
        "fc.bias",
    ):
        assert torch.equal(own[key], state[key]), key
    assert len(model.attnviz_blocks) == 8
    assert all(isinstance(model.get_submodule(p), block_class("cbam")) for p in model.attnviz_blocks)
    assert "layer1.0.attn.spatial.conv.weight" in own


def test_missing_pretrained_weights_say_where_to_put_them(hub_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    attempts = _refuse_download(monkeypatch)
    with pytest.raises(CheckpointError) as info:
        build_model("resnet18", "cbam", pretrained=True)
    assert attempts == [torchvision.models.ResNet18_Weights.DEFAULT.url]
    assert "cannot fetch" in info.value.message
    assert str(hub_dir / "checkpoints" / PRETRAINED_FILE) in (info.value.hint or "")


def test_pickle_in_the_hub_cache_never_runs(hub_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _refuse_download(monkeypatch)
    target = tmp_path / "created_by_unpickling"
    torch.save({"conv1.weight": TouchesAFile(target)}, hub_dir / "checkpoints" / PRETRAINED_FILE)
    with pytest.raises(CheckpointError):
        build_model("resnet18", "cbam", pretrained=True)
    assert not target.exists()
