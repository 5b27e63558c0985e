"""What `fit` and `fit-det` refuse before training starts, so no progress line comes before a refusal.

A run writes the file named by --out and, beside it, files the user did not name: the resumable checkpoint
`<out>.ckpt` and, for `fit`, the sidecar `<out>.json`. A file attnviz did not write is never replaced: a sidecar
that is not attnviz weights metadata, or a checkpoint that is not a resumable attnviz checkpoint, is refused before
training starts. Files that are attnviz's (an earlier run's), and the file --out names, are replaced and said to be.
"""

from __future__ import annotations

import json
from pathlib import Path

from attnviz.errors import UsageError, option
from attnviz.training.classifier import RESUME_KEYS, FitConfig, make_datasets, make_model
from attnviz.training.loop import checkpoint_path, load_checkpoint

SIDECAR_LIMIT = 16 * 2**20
"""A sidecar is a few kB; a larger .json beside the weights is some other file."""


def check_classifier_fit(config: FitConfig, weights: Path, *, resume: bool) -> None:
    """Refuse what `attnviz.training.classifier.fit` would refuse once started: an ImageFolder without classes, an
    unknown backbone, a block that does not fit it, a base that cannot be read or does not fit, and (with `resume`)
    a missing or mismatched checkpoint.

    Raises:
        UsageError, CheckpointError: as `fit` would, before any progress is shown.
    """
    _, _, classes = make_datasets(config)
    make_model(config, classes)
    if resume:
        expected = {key: config.to_dict()[key] for key in RESUME_KEYS}
        done = int(load_checkpoint(checkpoint_path(weights), expected, mmap=True)["epoch"]) + 1
        if done > config.epochs:  # as `restore` says once training has started
            raise UsageError(
                f"nothing to train: the checkpoint already covers {done} epochs, more than {option('epochs')} "
                f"{config.epochs}",
                f"ask for more than {done} epochs, or run without {option('resume')} to start afresh",
            )


def check_outputs(weights: Path, *, sidecar: Path | None, resume: bool) -> list[Path]:
    """Refuse to replace a file attnviz did not write; return the existing files the run will replace.

    Args:
        weights: The file the run writes at its end (what --out names).
        sidecar: The JSON sidecar written beside it (`fit`), or None (`fit-det`).
        resume: Whether the run continues the checkpoint beside `weights` (which it then reads, not replaces).

    Raises:
        UsageError: one of the files is a folder, or a sidecar or checkpoint attnviz did not write.
    """
    checkpoint = checkpoint_path(weights)
    replaced = []
    for path in (weights, sidecar, checkpoint):
        if path is None or not (path.exists() or path.is_symlink()):
            continue
        if path.is_dir():
            raise UsageError(f"{option('out')} {weights} would write {path}, which is a folder", "choose another path")
        if path == checkpoint and resume:
            continue
        if (path == sidecar and not _is_sidecar(path)) or (path == checkpoint and not _is_checkpoint(path)):
            what = "attnviz weights metadata" if path == sidecar else "the checkpoint of an attnviz run"
            raise UsageError(
                f"{option('out')} {weights} would replace {path}, which attnviz did not write (it is not {what})",
                f"move {path.name} away, or choose another {option('out')}",
            )
        replaced.append(path)
    return replaced


def replacing_note(replaced: list[Path]) -> str:
    """The line that says which existing files a run replaces (see `check_outputs`)."""
    names = [str(path) for path in replaced]
    listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
    return f"note: {listed} exist{'s' if len(names) == 1 else ''} and will be replaced by this run"


def _is_sidecar(path: Path) -> bool:
    """Whether `path` is an attnviz weights sidecar (a JSON object with its format tag), valid or not."""
    from attnviz.io.sidecars import FORMAT

    try:
        if path.stat().st_size > SIDECAR_LIMIT:
            return False
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT


def _is_checkpoint(path: Path) -> bool:
    """Whether `path` is a resumable attnviz checkpoint, read as `--resume` reads it (weights-only, no code runs)."""
    from attnviz.errors import AttnvizError
    from attnviz.io.checkpoints import read_checkpoint
    from attnviz.training.loop import RESUMABLE_KEYS

    try:
        state = read_checkpoint(path, mmap=True)
    except (AttnvizError, OSError, RuntimeError, ValueError):
        return False
    return isinstance(state, dict) and all(isinstance(state.get(k), kind) for k, kind in RESUMABLE_KEYS.items())
