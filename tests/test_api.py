"""The Python front door: `attnviz.show(...)` and friends return the very pictures the CLI writes, the library decides
what the CLI used to (input size, drawn stages), and `import attnviz` stays cheap."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import attnviz
from attnviz.cli.app import app
from attnviz.errors import UsageError

runner = CliRunner()
SCENE = Path(__file__).resolve().parents[1] / "samples" / "scenes" / "scene_heart.png"


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wide photo: the API and the CLI must agree on non-square inputs too."""
    yy, xx = np.mgrid[0:72, 0:120]
    rgb = np.stack([xx * 2, yy * 3, np.full_like(xx, 90)], axis=-1).astype(np.uint8)
    rgb[(xx - 80) ** 2 + (yy - 36) ** 2 < 200] = (250, 240, 30)
    path = tmp_path_factory.mktemp("api") / "wide.png"
    Image.fromarray(rgb).save(path)
    return path


def _cli_pictures(tmp_path: Path, *args: str) -> dict[str, np.ndarray]:
    out = tmp_path / "cli"
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    return {p.name: np.asarray(Image.open(p)) for p in sorted(out.glob("*.png"))}


def _api_pictures(view: attnviz.View) -> dict[str, np.ndarray]:
    return {view.file_name(what): np.asarray(image) for what, image in view.images.items()}


CASES = [
    (
        "show",
        ["cbam", "{photo}", "--size", "64", "--device", "cpu", "--stages", "2,3", "--contour", "--cmap", "viridis"],
        lambda photo: attnviz.show("cbam", photo, size=64, device="cpu", stages="2,3", contour=True, cmap="viridis"),
    ),
    (
        "channels",
        ["se", "{photo}", "--layer", "3", "--size", "64", "--device", "cpu", "--top-k", "4", "--order", "channel"],
        lambda photo: attnviz.channels("se", photo, layer=3, size=64, device="cpu", top_k=4, order="channel"),
    ),
    (
        "coords",
        ["coord", "{photo}", "--size", "64", "--device", "cpu", "--alpha", "0.3"],
        lambda photo: attnviz.coords("coord", photo, size=64, device="cpu", alpha=0.3),
    ),
    (
        "matrix",
        ["mhsa", "{photo}", "--size", "64", "--device", "cpu", "--query", "30,20", "--query", "100,50", "--heatmaps"],
        lambda photo: attnviz.matrix("mhsa", photo, size=64, device="cpu", query=["30,20", (100, 50)], heatmaps=True),
    ),
]


@pytest.mark.parametrize(("command", "args", "call"), CASES, ids=[c[0] for c in CASES])
def test_front_door_returns_the_cli_pictures(command, args, call, photo: Path, tmp_path: Path) -> None:
    cli = _cli_pictures(tmp_path, command, *(a.format(photo=photo) for a in args))
    view = call(photo)
    api = _api_pictures(view)
    assert cli and sorted(api) == sorted(cli)
    for name, pixels in cli.items():
        assert api[name].shape == pixels.shape and np.array_equal(api[name], pixels), name
    written = view.save(tmp_path / "api")  # and .save() writes the same files
    assert sorted(p.name for p in written) == sorted(cli)


def test_default_size_is_the_weights_own_in_python_too() -> None:
    """The demo weights were trained at 96 px: analyse, show and inspect use it when no size is given."""
    loaded = attnviz.load("cbam", device="cpu")
    assert loaded.input_size == loaded.weights_info.input_size == 96
    analysis = attnviz.analyse(loaded, SCENE)
    assert analysis.geometry.input_size == (96, 96)
    assert attnviz.inspect(loaded)["input"] == [96, 96]


def test_a_loaded_model_is_reused_and_its_stage_choice_kept() -> None:
    loaded = attnviz.load("cbam", stages=[2], device="cpu")
    assert loaded.stages() == [2] and loaded.drawn == (2,)
    view = attnviz.show(loaded, Image.open(SCENE))
    assert {m["layer"].split(".")[0] for m in view.summary["maps"]} == {"layer2"}
    assert view.stem and view._repr_png_().startswith(b"\x89PNG")


def test_errors_name_the_python_keyword() -> None:
    with pytest.raises(UsageError, match=r"size= must be between 16 and 4096"):
        attnviz.show("cbam", SCENE, size=8)
    with pytest.raises(UsageError, match=r"top_k= must be 0 or more"):
        attnviz.channels("se", SCENE, top_k=-1)
    with pytest.raises(UsageError, match=r"stages=: stage 9 does not exist"):
        attnviz.show("cbam", SCENE, stages="2,9")
    with pytest.raises(UsageError, match=r"block 'se' emits channel attention.*try: attnviz\.channels\('se'\)"):
        attnviz.show("se", SCENE)


def test_import_is_cheap_and_capture_is_the_context_manager() -> None:
    code = (
        "import sys, attnviz; assert 'torch' not in sys.modules, 'torch imported'; "
        "names = set(dir(attnviz)); assert {'show', 'load', 'analyse', 'capture', 'asff_weights'} <= names; "
        "import attnviz.capture; assert callable(attnviz.capture) and attnviz.capture.__name__ == 'capture'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bad_option_refused_before_torch_is_imported() -> None:
    code = (
        "import sys, attnviz\nfrom attnviz.errors import UsageError\n"
        "try:\n    attnviz.show('cbam', 'x.png', preprocess='squash')\nexcept UsageError as e:\n"
        "    assert 'preprocess=' in str(e)\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_capture_finds_attention_in_an_untouched_model_and_leaves_it_as_it_was() -> None:
    timm = pytest.importorskip("timm")
    import torch

    model = timm.create_model("resnet18", block_args={"attn_layer": "cbam"}).eval()
    before = [name for name, _ in model.named_modules()]
    image = torch.randn(1, 3, 64, 96)
    with torch.no_grad(), attnviz.capture(model) as rec:
        first = model(image)
    assert {m.kind for m in rec} == {"channel", "spatial"} and len(rec) == 16
    assert rec.of_kind("spatial")[0].shape[-2:] == (16, 24)  # found at the size of the input given
    assert [name for name, _ in model.named_modules()] == before  # the taps went with the capture
    with torch.no_grad():
        assert torch.equal(model(image), first)
    with attnviz.capture(model, find=False) as nothing:
        model(image)
    assert len(nothing) == 0
    loaded = attnviz.load(model=model, device="cpu", size=64)  # an nn.Module through the front door
    assert loaded.foreign is not None and len(loaded.foreign.recognised) == 8
