"""Hostile and extreme inputs (issue 19): signals mid-write, a full disk halfway through an image's files, files
attnviz did not write beside a training run's output, Ctrl-C while the CLI starts, env flags, broken sidecars,
heads and query points the model or photo does not have, and refusals that come before any progress line.

Every case asserts the exit code, the one line said, and the files left behind (none half-written, no temporary
file, nothing of the user's replaced). Signals are sent to a real `attnviz` process at a known moment: a small driver
script slows one write down and touches a marker file when the write has begun.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from attnviz import env
from attnviz.cli import list_cmd, signals
from attnviz.cli.app import app
from attnviz.errors import AttnvizError, CheckpointError
from attnviz.io import atomic
from attnviz.io.atomic import atomic_group, atomic_write
from attnviz.io.sidecars import WeightsInfo, read_sidecar, write_sidecar
from attnviz.training.checks import check_outputs
from attnviz.training.loop import RESUMABLE_KEYS

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "weights"
FAST = ["--size", "64", "--device", "cpu"]
WIDTH, HEIGHT = 80, 48
runner = CliRunner()


def run(*args: str, env_vars: dict[str, str] | None = None) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env=env_vars)
    return result.exit_code, result.stderr


def files_in(folder: Path) -> list[str]:
    """Every file under `folder`, hidden temporary files included, relative to it."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def assert_one_line(code: int, stderr: str, expected_code: int, *needles: str) -> None:
    message = stderr.strip()
    assert code == expected_code, message
    assert "Traceback" not in message and len(message.splitlines()) == 1, message
    for needle in needles:
        assert needle in message, message


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An 80 x 48 photo: a gradient with a bright disk."""
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    rgb = np.stack([xx / WIDTH * 255, yy / HEIGHT * 255, np.full_like(xx, 80)], axis=-1)
    rgb[(xx - 55) ** 2 + (yy - 24) ** 2 < 120] = (250, 250, 40)
    path = tmp_path_factory.mktemp("photo") / "photo.png"
    Image.fromarray(rgb.astype(np.uint8)).save(path)
    return path


# --------------------------------------------------------------------------------------------- signals mid-write

SLOW_COMMAND = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from attnviz.cli.app import app
    from attnviz.cli.common import guarded
    from attnviz.io.atomic import atomic_write

    marker, target = Path(sys.argv[1]), Path(sys.argv[2])

    def write(handle):
        handle.write(b"the first half of a picture")
        handle.flush()
        marker.touch()
        time.sleep(60)

    @guarded
    def slow_write() -> None:
        atomic_write(target, write)

    app.command("slow-write")(slow_write)
    sys.argv = ["attnviz", "slow-write"]
    from attnviz.__main__ import main
    main()
    """
)
"""A CLI command (through the real entry point and `guarded`) that stops halfway through writing a file."""

SLOW_RAW = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import attnviz.io.atomic as atomic

    marker, delay = Path(sys.argv[1]), float(sys.argv[2])
    opened = atomic._open_temporary

    def open_slowly(path):
        temp, handle = opened(path)
        if path.suffix == ".npz":  # the picture's temporary file is written; the numbers' has just been created
            marker.touch()
            time.sleep(delay)
        return temp, handle

    atomic._open_temporary = open_slowly
    sys.argv = ["attnviz", *sys.argv[3:]]
    from attnviz.__main__ import main
    main()
    """
)
"""The real `attnviz` command, held up for a given number of seconds between creating the .npz's temporary file and
writing it (--save-raw)."""


def signal_midway(script: str, tmp_path: Path, sig: signal.Signals, *args: str) -> tuple[int, str]:
    """Run `script` with `args`, send `sig` once its marker says the write has begun; (exit code, stderr)."""
    marker = tmp_path / "writing"
    driver = tmp_path / "driver.py"
    driver.write_text(script)
    process = subprocess.Popen(
        [sys.executable, str(driver), str(marker), *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), process.communicate(timeout=60)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=60)
    return process.returncode, stderr


@pytest.mark.parametrize(
    ("sig", "code", "said"),
    [
        (signal.SIGTERM, 143, "terminated by SIGTERM"),
        (signal.SIGHUP, 129, "terminated by SIGHUP"),
        (signal.SIGINT, 130, "interrupted"),
    ],
    ids=["SIGTERM", "SIGHUP", "SIGINT"],
)
def test_a_signal_mid_write_leaves_no_temporary_file(tmp_path, sig, code, said):
    out = tmp_path / "out"
    returncode, stderr = signal_midway(SLOW_COMMAND, tmp_path, sig, str(out / "picture.png"))
    assert_one_line(returncode, stderr, code, said)
    assert out.is_dir() and files_in(out) == []  # the write had begun: its temporary file existed, and went


def test_sigterm_during_save_raw_leaves_all_of_the_images_files_or_none(tmp_path, photo):
    out = tmp_path / "out"
    args = ["channels", "se", str(photo), "--save-raw", "--out", str(out), *FAST]
    returncode, stderr = signal_midway(SLOW_RAW, tmp_path, signal.SIGTERM, "3", *args)
    assert returncode == 143, stderr
    assert "terminated by SIGTERM" in stderr and "Traceback" not in stderr
    # The signal stops the run; a write under way on the writing thread finishes first, as one group.
    names = files_in(out)
    assert names == [] or sorted(Path(n).suffix for n in names) == [".json", ".npz", ".png"], names
    assert not [n for n in names if n.startswith(".")]


def test_handlers_leave_an_ignored_sighup_ignored():
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as `nohup` starts a program
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signals.install()
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def test_ctrl_c_while_the_cli_is_still_importing_gives_one_line(tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(
        textwrap.dedent(
            """
            import sys

            class CtrlC:  # Ctrl-C arrives while typer is being imported, before any guard of the app exists
                def find_spec(self, name, path=None, target=None):
                    if name == "typer":
                        raise KeyboardInterrupt
                    return None

            sys.meta_path.insert(0, CtrlC())
            sys.argv = ["attnviz", "list"]
            from attnviz.__main__ import main
            main()
            """
        )
    )
    done = subprocess.run([sys.executable, str(driver)], capture_output=True, text=True, timeout=120, check=False)
    assert (done.returncode, done.stderr, done.stdout) == (130, "interrupted\n", "")


def test_the_attnviz_command_starts_at_the_guarded_entry_point():
    assert 'attnviz = "attnviz.__main__:main"' in (ROOT / "pyproject.toml").read_text().splitlines()
    code = "import sys, attnviz.__main__; sys.exit('typer' in sys.modules or 'rich' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False, timeout=60).returncode == 0  # guard first


# ------------------------------------------------------------------------------------------ all-or-nothing groups


def test_a_full_disk_during_save_raw_leaves_none_of_the_images_files(tmp_path, photo, monkeypatch):
    def disk_full(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np, "savez_compressed", disk_full)
    out = tmp_path / "out"
    code, stderr = run("channels", "se", str(photo), "--save-raw", "--out", str(out), "--json", *FAST)
    assert_one_line(code, stderr, 1, "cannot write", "_raw.npz", "No space left on device")
    assert files_in(out) == []


def test_a_group_whose_rename_fails_puts_back_the_files_it_replaced(tmp_path, monkeypatch):
    first, second = tmp_path / "a.png", tmp_path / "a_raw.npz"
    first.write_bytes(b"the picture of an earlier run")
    second.write_bytes(b"the numbers of an earlier run")
    renames = []
    real_replace = os.replace

    def replace_then_fail(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
        renames.append(Path(target))
        if Path(target) == second:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_replace(source, target)

    monkeypatch.setattr(atomic.os, "replace", replace_then_fail)
    with pytest.raises(AttnvizError, match=r"cannot write .*a_raw\.npz"), atomic_group():
        atomic_write(first, lambda handle: handle.write(b"the new picture"))
        atomic_write(second, lambda handle: handle.write(b"the new numbers"))
    assert renames[:2] == [first, second]  # the picture was renamed, then put back
    assert files_in(tmp_path) == ["a.png", "a_raw.npz"]  # no temporary file, no backup left
    assert first.read_bytes() == b"the picture of an earlier run"
    assert second.read_bytes() == b"the numbers of an earlier run"


def test_an_interrupted_group_writes_nothing_and_a_finished_one_everything(tmp_path):
    with pytest.raises(KeyboardInterrupt), atomic_group():
        atomic_write(tmp_path / "a.png", lambda handle: handle.write(b"picture"))
        raise KeyboardInterrupt
    assert files_in(tmp_path) == []
    with atomic_group():
        atomic_write(tmp_path / "a.png", lambda handle: handle.write(b"picture"))
        with atomic_group():  # nested: joins the outer group
            atomic_write(tmp_path / "a.json", lambda handle: handle.write(b"{}"))
        assert not (tmp_path / "a.png").exists() and not (tmp_path / "a.json").exists()  # not before the end
    assert files_in(tmp_path) == ["a.json", "a.png"]
    assert not atomic._LIVE


# ---------------------------------------------------------------------- files beside a training run's output


def test_fit_refuses_to_replace_the_users_own_json_beside_out(tmp_path):
    mine = tmp_path / "w.json"
    mine.write_text('{"my": "notes"}')
    code, stderr = run("fit", "se", "--out", str(tmp_path / "w.safetensors"), "--epochs", "1", "--device", "cpu")
    assert_one_line(code, stderr, 2, f"would replace {mine}, which attnviz did not write", "move w.json away")
    assert files_in(tmp_path) == ["w.json"] and mine.read_text() == '{"my": "notes"}'


def test_fit_det_refuses_to_replace_a_checkpoint_it_did_not_write(tmp_path):
    theirs = tmp_path / "det.ckpt"
    torch.save({"state_dict": {}, "global_step": 7}, theirs)  # another trainer's checkpoint
    before = theirs.read_bytes()
    code, stderr = run("fit-det", "--out", str(tmp_path / "det.pt"), "--epochs", "1", "--device", "cpu")
    assert_one_line(code, stderr, 2, f"would replace {theirs}", "not the checkpoint of an attnviz run")
    assert files_in(tmp_path) == ["det.ckpt"] and theirs.read_bytes() == before


def test_files_of_an_earlier_run_are_replaced_and_named(tmp_path):
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"earlier weights")
    write_sidecar(WeightsInfo(weights, "se", "resnet18", (1, 2, 3, 4), 96, ["a", "b"]))
    state = {key: kind() if kind is not torch.Tensor else torch.zeros(1) for key, kind in RESUMABLE_KEYS.items()}
    torch.save(state, tmp_path / "w.ckpt")
    replaced = check_outputs(weights, sidecar=tmp_path / "w.json", resume=False)
    assert replaced == [weights, tmp_path / "w.json", tmp_path / "w.ckpt"]
    assert check_outputs(weights, sidecar=tmp_path / "w.json", resume=True) == [weights, tmp_path / "w.json"]


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["--backbone", "nope"], 2, "unknown backbone 'nope'"),
        (["--data", "@one_class"], 2, "needs at least two class folders"),
        (["--base", "@broken_base"], 1, "cannot read"),
        (["--resume"], 2, "nothing to resume"),
    ],
    ids=["backbone", "ImageFolder", "base", "resume"],
)
def test_fit_refuses_before_any_progress_line(tmp_path, args, code, needle):
    (tmp_path / "one_class" / "cat").mkdir(parents=True)
    (tmp_path / "broken_base.safetensors").write_bytes(b"{}")
    paths = {"@one_class": str(tmp_path / "one_class"), "@broken_base": str(tmp_path / "broken_base.safetensors")}
    args = [paths.get(a, a) for a in args]
    out = tmp_path / "out"
    code_, stderr = run("fit", "se", "--out", str(out / "w.safetensors"), "--epochs", "1", "--device", "cpu", *args)
    assert_one_line(code_, stderr, code, needle)  # one line: no "epoch 1/1  0/8000 images" before it
    assert files_in(out) == []


# ------------------------------------------------------------------------------------------- flags and sidecars


@pytest.mark.parametrize(
    ("value", "on"),
    [
        (None, False),
        ("", False),
        ("0", False),
        ("false", False),
        ("No", False),
        (" off ", False),
        ("1", True),
        ("yes", True),
        ("true", True),
        ("2", True),
    ],
)
def test_env_flags_are_flags(monkeypatch, value, on):
    if value is None:
        monkeypatch.delenv(env.DEBUG, raising=False)
    else:
        monkeypatch.setenv(env.DEBUG, value)
    assert env.flag(env.DEBUG) is on


class Exploding:
    def __getattr__(self, name: str) -> object:
        raise RuntimeError("a bug")

    def __iter__(self) -> object:
        raise RuntimeError("a bug")

    def __len__(self) -> int:
        raise RuntimeError("a bug")


def test_attnviz_debug_0_keeps_the_one_line_and_1_shows_the_traceback(monkeypatch):
    monkeypatch.setattr(list_cmd, "CATALOG", Exploding())
    code, stderr = run("list", env_vars={"ATTNVIZ_DEBUG": "0"})
    assert_one_line(code, stderr, 1, "internal error: RuntimeError: a bug", "ATTNVIZ_DEBUG=1")
    result = runner.invoke(app, ["list"], env={"ATTNVIZ_DEBUG": "1"})
    assert isinstance(result.exception, RuntimeError)  # re-raised: Python prints its traceback


@pytest.fixture
def sidecar_copy(tmp_path: Path) -> tuple[Path, dict[str, object]]:
    """A copy of the shipped cbam weights (and its base), and its sidecar's fields."""
    for name in ("cbam_resnet18", "resnet18_scenes"):
        for suffix in (".safetensors", ".json"):
            shutil.copy(WEIGHTS / f"{name}{suffix}", tmp_path / f"{name}{suffix}")
    return tmp_path / "cbam_resnet18.safetensors", json.loads((WEIGHTS / "cbam_resnet18.json").read_text())


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("stages", [9], "a list of stage numbers from 1 to 4, got [9]"),
        ("stages", ",", 'a list of stage numbers from 1 to 4, got ","'),
        ("input_size", 100000, "a whole number of pixels from 16 to 4096, got 100000"),
        ("input_size", True, "a whole number of pixels from 16 to 4096, got true"),
        ("backbone", "nope", "must be one of resnet18"),
        ("block", "nope", 'a block name attnviz knows, or null, got "nope"'),
        ("classes", "abc", 'a list of class names, got "abc"'),
        ("metrics", [1], "must be an object, got [1]"),
        ("classes", None, "a list of class names, got nothing (the field is missing)"),
    ],
)
def test_sidecar_mistakes_name_the_sidecar_and_the_field(sidecar_copy, field, value, expected):
    weights, fields = sidecar_copy
    fields = {k: v for k, v in fields.items() if k != field or value is not None}
    if value is not None:
        fields[field] = value
    sidecar = weights.with_suffix(".json")
    sidecar.write_text(json.dumps(fields))
    with pytest.raises(CheckpointError) as excinfo:
        read_sidecar(weights)
    message = str(excinfo.value)
    assert message.startswith(f'{sidecar}: "{field}" must be'), message
    assert expected in message and f"fix that in {sidecar.name}" in message


def test_a_sidecar_mistake_from_the_cli_names_the_sidecar(sidecar_copy, photo, tmp_path):
    weights, fields = sidecar_copy
    sidecar = weights.with_suffix(".json")
    sidecar.write_text(json.dumps({**fields, "stages": [9]}))
    out = tmp_path / "out"
    code, stderr = run("show", "cbam", str(photo), "--weights", str(weights), "--out", str(out), "--device", "cpu")
    assert_one_line(code, stderr, 1, f'{sidecar}: "stages" must be a list of stage numbers')
    assert "stage 9 does not exist" not in stderr and files_in(out) == []
    sidecar.write_text(json.dumps({**fields, "base": "gone.safetensors"}))
    code, stderr = run("show", "cbam", str(photo), "--weights", str(weights), "--out", str(out), "--device", "cpu")
    assert_one_line(code, stderr, 1, f'{sidecar}: "base" names', "gone.safetensors, which does not exist")
    assert files_in(out) == []


# ------------------------------------------------------------------------------------ heads and query points


@pytest.mark.parametrize("heads", ["99", "0,99"])
def test_heads_the_model_does_not_have_are_a_usage_error(tmp_path, photo, heads):
    out = tmp_path / "out"
    code, stderr = run("matrix", "mhsa", str(photo), "--heads", heads, "--out", str(out), *FAST)
    lines = stderr.strip().splitlines()
    assert code == 2 and "Traceback" not in stderr, stderr
    assert lines[-1].startswith("error: --heads asks for head 99, but the attention matrix at layer3"), stderr
    assert "has 4 heads" in lines[-1] and "give head numbers from 0 to 3" in lines[-1]
    assert files_in(out) == []  # 0 is not drawn without 99: nothing is dropped in silence


@pytest.mark.parametrize("query", ["79.5,10", "79,47", "0,0", "0,47.9"])
def test_a_query_on_the_edge_pixel_is_drawn(tmp_path, photo, query):
    out = tmp_path / "out"
    code, stderr = run("matrix", "mhsa", str(photo), "--query", query, "--out", str(out), *FAST)
    assert code == 0, stderr
    assert files_in(out) == ["photo_mhsa_matrix.png"]


@pytest.mark.parametrize(
    ("query", "extra", "needle"),
    [
        ("80,10", [], "query point 80,10 lies outside the image (80x48 pixels)"),
        ("-0.5,3", [], "give X from 0 to 79 and Y from 0 to 47"),
        ("5,10", ["--preprocess", "crop"], "5,10 lies in the part of the photo that"),
    ],
    ids=["past the right edge", "left of the photo", "cropped away"],
)
def test_a_query_outside_what_the_model_sees_is_a_usage_error(tmp_path, photo, query, extra, needle):
    out = tmp_path / "out"
    code, stderr = run("matrix", "mhsa", str(photo), "--query", query, "--out", str(out), *FAST, *extra)
    assert code == 2 and "Traceback" not in stderr, stderr
    assert needle in stderr.strip().splitlines()[-1]
    assert files_in(out) == []
