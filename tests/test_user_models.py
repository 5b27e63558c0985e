"""Researchers' own models: their model code (`file.py:factory`, `package.module:factory`) and their checkpoints.

The user's net below has its own SE-like and CBAM-like classes (ChannelGate, PixelGate: names attnviz does not know),
found by structure; its checkpoints come in the wrappings training code writes (DDP, Lightning, EMA). Nothing here
touches the network.
"""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

import attnviz
from attnviz.cli.app import app
from attnviz.errors import CheckpointError, UsageError
from attnviz.io.checkpoints import find_state_dict, strip_prefixes
from attnviz.models.usercode import build_from_code, parse_code_spec
from attnviz.options import names_a_model

FAST = ["--size", "64", "--device", "cpu"]
runner = CliRunner()

GATES = """
import torch
from torch import nn


class ChannelGate(nn.Module):
    def __init__(self, channels, reduction=4):
        super().__init__()
        self.squeeze = nn.AdaptiveAvgPool2d(1)
        self.excite = nn.Sequential(
            nn.Linear(channels, channels // reduction), nn.ReLU(), nn.Linear(channels // reduction, channels)
        )
        self.gate = nn.Sigmoid()

    def forward(self, x):
        b, c = x.shape[:2]
        return x * self.gate(self.excite(self.squeeze(x).flatten(1))).view(b, c, 1, 1)


class PixelGate(nn.Module):
    def __init__(self, kernel=7):
        super().__init__()
        self.mix = nn.Conv2d(2, 1, kernel, padding=kernel // 2)
        self.gate = nn.Sigmoid()

    def forward(self, x):
        return x * self.gate(self.mix(torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)))
"""

MYNET = """
from torch import nn

from mynet_gates import ChannelGate, PixelGate  # a sibling file: its folder is on sys.path while it loads


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.channel_gate = ChannelGate(cout)
        self.pixel_gate = PixelGate()
        self.skip = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        return (self.pixel_gate(self.channel_gate(self.body(x))) + self.skip(x)).relu()


class MyNet(nn.Module):
    def __init__(self, num_classes=10, width=8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1), nn.ReLU(), nn.MaxPool2d(2))
        widths = [width * 2**i for i in range(4)]
        self.stages = nn.Sequential(
            *[Block(widths[max(i - 1, 0)], widths[i], 1 if i == 0 else 2) for i in range(4)]
        )
        self.head = nn.Linear(widths[-1], num_classes)

    def forward(self, x):
        return self.head(self.stages(self.stem(x)).mean((2, 3)))


def build(num_classes=10, width=8):
    return MyNet(num_classes, width)


def build_later():
    from mynet_gates import ChannelGate  # imported while the factory runs: still on the path

    return nn.Sequential(nn.Conv2d(3, 8, 3, 4, 1), ChannelGate(8))


def broken(depth=3):
    raise ValueError(f"depth {depth} is not supported\\nsecond line of the message")


def not_a_model():
    return {"layers": 3}
"""


@pytest.fixture(autouse=True)
def clean_imports() -> Iterator[None]:
    """Put sys.path back and forget the users' modules after each test, as a fresh process would."""
    path = list(sys.path)
    yield
    sys.path[:] = path
    for name in [n for n in sys.modules if n.startswith(("mynet_gates", "userpkg"))]:
        del sys.modules[name]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user's project as the working directory: mynet.py, its sibling mynet_gates.py and photo.png."""
    (tmp_path / "mynet_gates.py").write_text(GATES)
    (tmp_path / "mynet.py").write_text(MYNET)
    yy, xx = np.mgrid[0:60, 0:80]
    rgb = np.stack([xx * 3, yy * 4, np.full_like(xx, 90)], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def one_line_error(code: int, err: str, expected_code: int, *needles: str) -> str:
    message = err.strip()
    assert code == expected_code, message
    assert "Traceback" not in message and len(message.splitlines()) == 1, message
    for needle in needles:
        assert needle in message, message
    return message


def trained_state(num_classes: int = 10) -> dict[str, torch.Tensor]:
    """A state dict of the user's net that differs from a fresh build (the "trained" weights)."""
    state = build_from_code(parse_code_spec(f"mynet.py:build,num_classes={num_classes}")).state_dict()
    return {k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}


def assert_loaded(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    own = model.state_dict()
    assert set(own) == set(state)
    for key, value in state.items():
        assert torch.equal(own[key], value), key


# ------------------------------------------------------------------------------------------ the acceptance test


def test_own_code_and_ddp_checkpoint_without_trust(project: Path) -> None:
    state = trained_state()
    torch.save({f"module.{k}": v for k, v in state.items()}, project / "ckpt.pth")
    path_before = list(sys.path)
    code, _, err = run("show", "--model", "mynet.py:build", "--weights", "ckpt.pth", "photo.png", *FAST, "--out", "OUT")
    assert code == 0, err
    assert [p.name for p in (project / "OUT").iterdir()] == ["photo_mynet-build_show.png"]
    assert Image.open(project / "OUT" / "photo_mynet-build_show.png").size[0] > 100
    assert sys.path == path_before

    loaded = attnviz.load(model="mynet.py:build", weights="ckpt.pth", size=64, device="cpu")
    assert_loaded(loaded.model, state)
    assert loaded.name == "mynet-build" and loaded.trained
    assert loaded.source == "MyNet from mynet.py:build, with weights from ckpt.pth"
    found = {(m.path, m.kinds, m.stage) for m in loaded.foreign.recognised}
    assert found == {
        (f"stages.{i}.{gate}", (kind,), i + 1)
        for i in range(4)
        for gate, kind in (("channel_gate", "channel"), ("pixel_gate", "spatial"))
    }


@pytest.mark.parametrize(
    ("wrap", "entry"),
    [
        (lambda s: {"epoch": 9, "state_dict": {f"model.{k}": v for k, v in s.items()}}, "state_dict"),  # Lightning
        (lambda s: {"state_dict": {f"module.model.{k}": v for k, v in s.items()}}, "state_dict"),
        (lambda s: {"model_state_dict": s, "optimizer_state_dict": {}}, "model_state_dict"),
        (lambda s: {"model": {k: torch.zeros_like(v) for k, v in s.items()}, "ema": s, "epoch": 3}, "ema"),
        (lambda s: {"model": s, "ema": None}, "model"),  # a YOLO-style file whose EMA was stripped
        (lambda s: {f"_orig_mod.{k}": v for k, v in s.items()}, ""),  # torch.compile
    ],
)
def test_checkpoint_wrappings(project: Path, wrap: object, entry: str) -> None:
    state = trained_state()
    torch.save(wrap(state), project / "ckpt.pth")  # type: ignore[operator]
    loaded = attnviz.load(model="mynet.py:build", weights="ckpt.pth", size=64, device="cpu")
    assert_loaded(loaded.model, state)
    assert loaded.source.endswith(f"(its {entry!r} entry)" if entry else "ckpt.pth")


def test_safetensors_weights(project: Path) -> None:
    from safetensors.torch import save_file

    state = trained_state()
    save_file({k: v.contiguous() for k, v in state.items()}, str(project / "best.safetensors"))
    loaded = attnviz.load(model="mynet.py:build", weights="best.safetensors", size=64, device="cpu")
    assert_loaded(loaded.model, state)


# ----------------------------------------------------------------------------------------------- spec syntax


def test_keyword_arguments_reach_the_factory(project: Path) -> None:
    loaded = attnviz.load(model="mynet.py:build,num_classes=3,width=4", size=64, device="cpu")
    assert loaded.model.head.out_features == 3 and loaded.model.stem[0].out_channels == 4
    assert not loaded.trained and "build(num_classes=3, width=4)" in loaded.source
    later = attnviz.load(model=f"{project / 'mynet.py'}:build_later", size=64, device="cpu")
    assert [m.path for m in later.foreign.recognised] == ["1"]


@pytest.mark.parametrize(
    ("text", "target", "factory", "kwargs"),
    [
        ("mynet.py:build", "mynet.py", "build", {}),
        ("nets/my net.py:Net,num_classes=10", "nets/my net.py", "Net", {"num_classes": 10}),
        ("pkg.models:build,widths=[2, 2],act=relu", "pkg.models", "build", {"widths": [2, 2], "act": "relu"}),
        ("m.py:f,name='a,b',cfg={'k': (1, 2)},on=True", "m.py", "f", {"name": "a,b", "cfg": {"k": (1, 2)}, "on": True}),
        ("m.py:f,path=runs/exp1/cfg.yaml,", "m.py", "f", {"path": "runs/exp1/cfg.yaml"}),
    ],
)  # fmt: skip
def test_parse_code_spec(text: str, target: str, factory: str, kwargs: dict[str, object]) -> None:
    spec = parse_code_spec(text)
    assert (spec.target, spec.factory, spec.kwargs) == (target, factory, kwargs)
    assert names_a_model(text)


@pytest.mark.parametrize("text", ["m.py:f,10", "m.py:f,a=1,a=2", "m.py:f,1x=2"])
def test_bad_keyword_arguments(text: str) -> None:
    with pytest.raises(UsageError, match="key=value"):
        parse_code_spec(text)


def test_block_names_stay_blocks(project: Path) -> None:
    assert not names_a_model("cbam") and not names_a_model("cbma")
    assert names_a_model("timm:resnet18") and names_a_model("userpkg.nets:build")
    with pytest.raises(UsageError, match="unknown block"):
        attnviz.show("cbma", "photo.png")


def test_package_module_factory(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = project / "src"
    (root / "userpkg").mkdir(parents=True)
    (root / "userpkg" / "__init__.py").write_text("")
    (root / "userpkg" / "nets.py").write_text(MYNET.replace("from mynet_gates", "from userpkg.gates"))
    (root / "userpkg" / "gates.py").write_text(GATES)
    monkeypatch.syspath_prepend(str(root))
    code, _, err = run("show", "--model", "userpkg.nets:build", "photo.png", *FAST, "--out", "OUT")
    assert code == 0, err
    assert [p.name for p in (project / "OUT").iterdir()] == ["photo_userpkg.nets-build_show.png"]


# ---------------------------------------------------------------------------------------------- one-line errors


@pytest.mark.parametrize(
    ("spec", "needles"),
    [
        ("nowhere.py:build", ["model file not found: nowhere.py"]),
        ("mynet.py:buld", ["mynet.py has no 'buld'", "did you mean build"]),
        ("mynet.py:nothing_like_it", ["has no 'nothing_like_it'", "it defines Block, MyNet, build"]),
        ("mynet.py:broken,depth=5", ["broken(depth=5) in mynet.py failed: ValueError: depth 5 is", "broken(depth=3)"]),
        ("mynet.py:build,num_clases=3", ["calling build(num_clases=3) in mynet.py failed: TypeError", "width=8)"]),
        ("mynet.py:not_a_model", ["not_a_model() in mynet.py returned dict, not a torch nn.Module"]),
        ("userpkg.nosuch:build", ["no module named userpkg.nosuch", "--model path/to/nosuch.py:build"]),
        ("mynet_gates.py:torch", ["torch in mynet_gates.py is a module, not a class or function"]),
    ],
)  # fmt: skip
def test_code_errors_are_one_line(project: Path, spec: str, needles: list[str]) -> None:
    code, _, err = run("show", "--model", spec, "photo.png", *FAST, "--out", "OUT")
    message = one_line_error(code, err, 2, *needles)
    assert "second line" not in message
    assert not (project / "OUT").exists()


def test_import_error_in_the_users_file(project: Path) -> None:
    (project / "bad.py").write_text("import numpy\nimport no_such_dependency_here\n")
    code, _, err = run("inspect", "--model", "bad.py:build", *FAST)
    one_line_error(code, err, 2, "importing bad.py failed: ModuleNotFoundError", "no_such_dependency_here")
    assert not any(name.startswith("attnviz_user_bad") for name in sys.modules)


def test_weights_that_do_not_fit_name_the_keys(project: Path) -> None:
    state = trained_state()
    torch.save({**state, "aux.weight": torch.ones(2), "aux.bias": torch.ones(2)}, project / "ckpt.pth")
    code, _, err = run("show", "--model", "mynet.py:build", "--weights", "ckpt.pth", "photo.png", *FAST, "--out", "O")
    one_line_error(code, err, 1, "2 unexpected (e.g. aux.weight, aux.bias)", "pass build the arguments")
    assert "--backbone" not in err
    code, _, err = run("show", "--model", "mynet.py:build,num_classes=4", "--weights", "ckpt.pth", "photo.png", *FAST)
    one_line_error(code, err, 1, "of another shape (e.g. head.weight (10, 64) vs (4, 64)")


def test_pickled_weights_refused_without_trust(project: Path) -> None:
    marker = project / "created_by_unpickling"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[Path]]:
            return pathlib.Path.touch, (marker,)

    torch.save({"model": trained_state(), "payload": Payload()}, project / "ckpt.pth")
    code, _, err = run("show", "--model", "mynet.py:build", "--weights", "ckpt.pth", "photo.png", *FAST, "--out", "O")
    one_line_error(code, err, 2, "pickled Python object", "--trust")
    assert not marker.exists() and not (project / "O").exists()


def test_pretrained_does_not_apply(project: Path) -> None:
    code, _, err = run("show", "--model", "mynet.py:build", "--pretrained", "photo.png", *FAST)
    one_line_error(code, err, 2, "--pretrained does not apply to mynet.py:build", "--weights")


def test_foreign_state_dict_as_model_points_to_own_code(project: Path) -> None:
    torch.save({f"module.{k}": v for k, v in trained_state().items()}, project / "best.pth")
    code, _, err = run("show", "--model", "best.pth", "photo.png", *FAST, "--out", "O")
    one_line_error(code, err, 2, "best.pth fits none of attnviz's backbones", "--model yourfile.py:factory")
    assert "--weights best.pth" in err


def test_state_dict_of_another_backbone_names_it(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from attnviz.models.backbones import build_model

    path = tmp_path / "mobile.safetensors"
    save_file(build_model("mobilenet_v3_small", None).state_dict(), str(path))
    with pytest.raises(CheckpointError) as info:
        attnviz.load(model=path, size=64, device="cpu")  # resnet18 by default
    assert "does not fit this model" in info.value.message
    assert info.value.hint == "its keys are mobilenet_v3_small's: pass backbone= mobilenet_v3_small"


# ------------------------------------------------------------------------------------------------ from Python


def test_from_python(project: Path) -> None:
    state = trained_state()
    torch.save({"state_dict": state}, project / "ckpt.pth")
    view = attnviz.show("mynet.py:build", "photo.png", weights="ckpt.pth", size=64, device="cpu")
    assert view.name == "mynet-build" and view.image.size[0] > 100
    drawn = {m["layer"] for m in view.summary["maps"] if m["kind"] == "spatial"}  # show also lists channel gates
    assert drawn == {f"stages.{i}.pixel_gate" for i in range(4)}
    with pytest.raises(UsageError) as info:
        attnviz.load(model="mynet.py:buld", size=64, device="cpu")
    assert "did you mean build" in str(info.value)
    with pytest.raises(UsageError, match=r"pretrained= does not apply to mynet\.py:build"):
        attnviz.load(model="mynet.py:build", pretrained=True)


# ---------------------------------------------------------------------------------------------------- helpers


def test_strip_prefixes_keeps_a_model_whose_keys_share_a_root() -> None:
    expected = {"body.conv.weight", "body.conv.bias"}
    state = {k: torch.zeros(1) for k in expected}
    assert set(strip_prefixes(state, expected)) == expected
    wrapped = {f"module.model.{k}": v for k, v in state.items()}
    assert set(strip_prefixes(wrapped, expected)) == expected
    assert strip_prefixes({"a.b": torch.zeros(1)}, expected) == {"a.b": torch.zeros(1)}  # nothing matches: as given


def test_find_state_dict_reports_an_empty_container() -> None:
    with pytest.raises(CheckpointError, match=r"holds no state dict \(found a dict with keys epoch, lr\)"):
        find_state_dict({"epoch": 3, "lr": 0.1}, "ckpt.pth")


def test_timm_model_probed_at_its_own_size() -> None:
    pytest.importorskip("timm")
    loaded = attnviz.load(model="timm:botnet26t_256", device="cpu")  # asserts 256 inputs, trained or not
    assert loaded.native_size == 256 and loaded.input_size == 256
