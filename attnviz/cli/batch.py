"""What the drawing commands share over one photo or many: which photos, the run (attnviz.pipeline), and what is
said about it: a progress bar with images/s and the time left, one "wrote" line per file, one line per photo that
could not be drawn, a notice for files from before the run that were replaced, and a summary line at the end."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from rich.markup import escape

from attnviz.cli.common import err, out, progress
from attnviz.errors import AttnvizError, UsageError
from attnviz.pipeline import Outcome, Task


@dataclass
class Inputs:
    """The photos of a command.

    Attributes:
        paths: The photos to draw.
        single: One image file was named: it is read before the model loads, and its errors end the command.
        read: Photos already read.
        left_out: attnviz's own pictures found in an input folder that is also the output folder.
    """

    paths: list[Path]
    single: bool
    read: dict[Path, Image.Image] = field(default_factory=dict)
    left_out: list[Path] = field(default_factory=list)


def gather(inputs: list[Path], out_dir: Path, *, folders_first: bool = False) -> Inputs:
    """The photos of IMAGES: one file is read now (a bad one fails before the model is built); folders are expanded.

    Args:
        inputs: Image files and folders.
        out_dir: The output folder (attnviz's pictures in it are not inputs).
        folders_first: A missing single file is reported as a missing path of IMAGES (`show`, whose IMAGES were
            always files or folders), not as a missing image file.

    Raises:
        ImageError: the one image cannot be read, a path does not exist, or a folder holds no images.
    """
    from attnviz.io.names import run_inputs
    from attnviz.io.photos import load_image

    if len(inputs) == 1 and not inputs[0].is_dir() and (inputs[0].exists() or not folders_first):
        return Inputs([inputs[0]], True, {inputs[0]: load_image(inputs[0])})
    paths, left_out = run_inputs(inputs, out_dir)
    return Inputs(paths, False, left_out=left_out)


def model_facts(loaded: Any) -> dict[str, Any]:
    """What a drawing command's JSON result starts with: the model's configuration and where its weights came from."""
    return {"model": loaded.config.to_dict(), "weights": loaded.source}


def check_batch(batch_size: int | None, workers: int | None) -> None:
    """Refuse a --batch-size or --workers that cannot be."""
    if batch_size is not None and not 1 <= batch_size <= 1024:
        raise UsageError(f"--batch-size must be between 1 and 1024, got {batch_size}", "e.g. --batch-size 8")
    if workers is not None and not 0 <= workers <= 64:
        raise UsageError(f"--workers must be between 0 and 64, got {workers}", "0 draws in the main process")


@dataclass
class Tally:
    """What a run did, for its reports."""

    results: list[dict[str, Any]] = field(default_factory=list)
    failed: list[tuple[Path, AttnvizError]] = field(default_factory=list)
    replaced: list[Path] = field(default_factory=list)
    files: int = 0


def draw(
    command: str,
    task: Task,
    inputs: Inputs,
    *,
    head: dict[str, Any],
    batch_size: int | None,
    workers: int | None,
    as_json: bool,
    flat_json: bool,
    on_drawn: Callable[[Outcome], None] | None = None,
) -> None:
    """Run the photos through `task` and report: per file a "wrote" line (or, with --json, the result on stdout).

    Args:
        command: The command's name, for the progress bar and the summary.
        task: What the command does with each photo.
        inputs: The photos (`gather`).
        head: What the JSON result starts with (model, weights).
        batch_size: --batch-size (None: attnviz.pipeline.default_batch_size for the model's device).
        workers: --workers (None: one drawing process per core).
        as_json: Print the result as JSON on stdout instead of the "wrote" lines.
        flat_json: For one image file: the JSON result is that image's summary with its files, not a list.
        on_drawn: Called with each photo drawn, in order (asff-weights prints its detections).

    Raises:
        AttnvizError: the single image could not be drawn, or some photos of several could not (exit code 2 when
            all of those are unreadable images, else 1).
    """
    from attnviz.batch import photos_of
    from attnviz.pipeline import Run, default_batch_size

    photos = photos_of(inputs.paths, inputs.read)
    if inputs.left_out and not as_json:
        folder = escape(str(inputs.left_out[0].parent))
        err.print(f"[dim]left out {len(inputs.left_out)} pictures attnviz drew in {folder} (earlier outputs)[/]")
    size = batch_size or default_batch_size(getattr(getattr(task, "loaded", None), "device", "cpu"))
    tally = Tally()
    started = time.monotonic()
    with (
        Run(photos, task, batch_size=size, workers=workers) as run,
        progress(command, len(photos), enabled=not inputs.single and not as_json) as meter,
    ):
        for outcome in run:
            _take(outcome, tally, single=inputs.single, as_json=as_json, on_drawn=on_drawn)
            meter.advance()
    _report(command, inputs, tally, time.monotonic() - started, head=head, as_json=as_json, flat_json=flat_json)


def _take(
    outcome: Outcome, tally: Tally, *, single: bool, as_json: bool, on_drawn: Callable[[Outcome], None] | None
) -> None:
    """Count one photo's outcome and say what became of it."""
    if outcome.error is not None:
        if single:
            raise outcome.error
        tally.failed.append((outcome.path, outcome.error))
        err.print(f"[yellow]skipped {escape(str(outcome.path))}: {escape(outcome.error.message)}[/]")
        return
    tally.results.append({**outcome.summary, "files": [str(p) for p in outcome.files]})
    tally.replaced += outcome.replaced
    tally.files += len(outcome.files)
    if on_drawn is not None:
        on_drawn(outcome)
    if not as_json:
        for path in outcome.files:
            err.print(f"wrote {path}", markup=False)


def _report(
    command: str,
    inputs: Inputs,
    tally: Tally,
    seconds: float,
    *,
    head: dict[str, Any],
    as_json: bool,
    flat_json: bool,
) -> None:
    """The end of a run: the replaced-files notice, the summary line or the JSON result, and the exit code."""
    total = len(inputs.paths)
    if tally.replaced:
        first = escape(str(tally.replaced[0]))
        more = f" and {len(tally.replaced) - 1} more" if len(tally.replaced) > 1 else ""
        err.print(f"[yellow]replaced {first}{more}, written before this run[/]")
    if as_json:
        if inputs.single and flat_json and tally.results:
            out.print_json(json.dumps({**head, **tally.results[0]}))
        else:
            skipped = [{"image": str(path), "error": str(error)} for path, error in tally.failed]
            out.print_json(json.dumps({**head, "results": tally.results, "skipped": skipped}))
    elif not inputs.single:
        drawn = len(tally.results)
        rate = drawn / seconds if seconds > 0 else 0.0
        failed = f"; {len(tally.failed)} could not be drawn (see above)" if tally.failed else ""
        err.print(
            f"{command}: {drawn} of {total} images drawn in {seconds:.1f} s ({rate:.1f} img/s), "
            f"{tally.files} files{failed}",
            markup=False,
        )
    if tally.failed:
        usage = all(isinstance(error, UsageError) for _, error in tally.failed)  # unreadable files, bad --query...
        kind = UsageError if usage else AttnvizError
        raise kind(
            f"{len(tally.failed)} of {total} images could not be drawn",
            "the lines above say why; the others were drawn",
        )
