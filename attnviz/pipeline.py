"""Folder runs at the speed of the forward pass: photos are read and fitted to the model input on a thread ahead of
the model, the model runs on batches of them, and worker processes draw and write the pictures while the next batch
runs. Outcomes come back in input order, one per photo, each with its files or the error that stopped it.

A `Task` says what one command does with a photo (`attnviz.batch` has one per drawing command): `prepare` (on the
reading thread), `forward` (in this process, a batch at a time) and `draw` (in a worker). Workers are forked before
any thread of the run starts, run torch on one thread, ignore Ctrl-C (this process stops them after their current
picture) and get each photo's analysis as plain arrays; where fork is missing (Windows, macOS' default) or a task
needs the model itself to draw (`--cam`), pictures are drawn here and written on a thread.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import multiprocessing
import os
import pickle
import queue
import signal
import sys
import threading
import warnings
from collections import deque
from collections.abc import Hashable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from attnviz.errors import AttnvizError

MAX_WORKERS = 8


@dataclass
class Photo:
    """One photo of a run on its way to the model.

    Attributes:
        index: Its place among the run's photos.
        path: Its file.
        stem: The piece of output names that stands for it (unique within the run).
        image: The photo (upright RGB), once read.
        tensor: Its model input, (1, C, H, W) on the CPU, once prepared.
        geometry: How the photo was fitted to the input.
        key: Photos are run in one batch only when their keys are equal (e.g. matrix query points).
        extra: What `Task.draw` needs beside the analysis (picklable).
        error: Why the photo cannot be drawn.
    """

    index: int
    path: Path
    stem: str
    image: Image.Image | None = None
    tensor: Any = None
    geometry: Any = None
    key: Hashable = None
    extra: Any = None
    error: AttnvizError | None = None


@dataclass
class Outcome:
    """What became of one photo: the files written (and which of them replaced a file from before the run), the
    JSON summary, what the task noted in this process (`Task.note`), or the error that stopped it."""

    index: int
    path: Path
    files: list[Path] = field(default_factory=list)
    replaced: list[Path] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    note: Any = None
    error: AttnvizError | None = None


class Task(Protocol):
    """What a drawing command does with each photo of a run."""

    in_process: bool
    """Draw in this process (the drawing needs the model itself, e.g. a CAM's gradients)."""

    def prepare(self, photo: Photo) -> None:
        """Read `photo` (unless read) and fill its tensor, geometry, key and extra; raise AttnvizError to skip it."""

    def forward(self, photos: list[Photo]) -> list[Any]:
        """One analysis per photo, from one forward pass over the batch."""

    def note(self, analysis: Any) -> Any:
        """What this process keeps of an analysis for the caller (None: nothing)."""

    def draw(self, analysis: Any, extra: Any) -> Any:
        """One photo's View."""

    def write(self, view: Any, stem: str) -> tuple[list[Path], list[Path], dict[str, Any]]:
        """Write a View's files under `stem`: (files written, those that replaced a file from before, summary)."""


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_workers(photos: int) -> int:
    """Drawing processes for a run of `photos` photos: one per core (at most MAX_WORKERS), none for a single photo
    or where processes cannot be forked."""
    if photos < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return 0
    return min(MAX_WORKERS, usable_cores(), photos)


def default_batch_size(device: Any) -> int:
    """Photos per forward: 1 on a CPU, where batches are no faster (bench/batch_show.py measures it) and a batch of
    one gives the very numbers of a single photo; 16 on a GPU."""
    return 16 if getattr(device, "type", str(device)) == "cuda" else 1


def one_blas_thread() -> contextlib.AbstractContextManager[Any]:
    """numpy's BLAS on one thread while drawing: the small matrix products that put a map on the photo
    (`attnviz.images.map_to_original`) take 0.1 ms on one thread but up to 25 ms when BLAS threads wait for cores
    that are busy (with the forward, other workers, or other programs)."""
    try:
        from threadpoolctl import threadpool_limits  # installed with grad-cam (through scikit-learn)
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


# ------------------------------------------------------------------------------------------------------ workers

_WORKER_TASK: Task | None = None


def _worker_start(task: Task) -> None:
    """In a fresh worker: one torch thread (the forward owns the cores), Ctrl-C left to the parent, and SIGTERM or
    SIGHUP turned into an exit that unwinds the write under way (removing its temporary file)."""
    global _WORKER_TASK
    _WORKER_TASK = task
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _exit_on_signal)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    one_blas_thread().__enter__()  # for the worker's life


def _exit_on_signal(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def _render_packed(payload: bytes, stem: str) -> tuple[list[Path], list[Path], dict[str, Any]]:
    assert _WORKER_TASK is not None
    analysis, extra = pickle.loads(payload)
    try:
        return _WORKER_TASK.write(_WORKER_TASK.draw(analysis, extra), stem)
    except SystemExit as stop:  # a signal: the writes have removed their temporary files on the way here
        os._exit(stop.code if isinstance(stop.code, int) else 1)


class _ArrayPickler(pickle.Pickler):
    """Pickles torch tensors as numpy arrays (no shared-memory handles), and recordings without their tap modules."""

    def reducer_override(self, obj: Any) -> Any:
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(obj, torch.Tensor) and obj.dtype != torch.bfloat16:
            return torch.from_numpy, (obj.detach().cpu().numpy(),)
        from attnviz.capture import Recording

        if isinstance(obj, Recording):
            return Recording, (obj.maps, {})
        return NotImplemented


def pack(analysis: Any, extra: Any) -> bytes:
    """One photo's analysis (and the task's extra) as bytes a worker unpickles into the same objects."""
    buffer = io.BytesIO()
    _ArrayPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump((analysis, extra))
    return buffer.getvalue()


def _start_workers(task: Task, workers: int) -> Executor | None:
    """The drawing processes, forked now (before the run starts a thread), or None for drawing in this process."""
    if workers < 1 or task.in_process:
        return None
    context = multiprocessing.get_context("fork")
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_start, initargs=(task,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "fork with threads": torch's own idle pool threads
        pool.submit(int).result()  # forks every worker now
    return pool


# ------------------------------------------------------------------------------------------------------ reading


_END = object()


class _Reader:
    """A thread that prepares the photos in order, at most `depth` ahead of the model."""

    def __init__(self, photos: Sequence[Photo], task: Task, depth: int) -> None:
        self._photos = photos
        self._task = task
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        # the reader runs in this thread's context, so its errors name options as the caller spells them (errors.option)
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._run,), name="attnviz-reader", daemon=True)

    def __enter__(self) -> _Reader:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        for photo in self._photos:
            try:
                self._task.prepare(photo)
            except AttnvizError as error:
                photo.error, photo.image, photo.tensor = error, None, None
            except BaseException as crash:  # a bug: the run stops with it
                self._put(crash)
                return
            if not self._put(photo):
                return
        self._put(_END)

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            with contextlib.suppress(queue.Full):
                self._queue.put(item, timeout=0.1)
                return True
        return False

    def __iter__(self) -> Iterator[Photo]:
        while (item := self._queue.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item


def _groups(photos: Iterator[Photo], batch_size: int) -> Iterator[list[Photo]]:
    """Consecutive photos in groups of at most `batch_size` readable ones with one key (failed photos ride along,
    so that outcomes keep the input order)."""
    group: list[Photo] = []
    ready = 0
    for photo in photos:
        if photo.error is None and ready and (ready == batch_size or photo.key != _key(group)):
            yield group
            group, ready = [], 0
        group.append(photo)
        ready += photo.error is None
    if group:
        yield group


def _key(group: list[Photo]) -> Hashable:
    return next(p.key for p in group if p.error is None)


# ------------------------------------------------------------------------------------------------------ the run


class Run:
    """A run of every photo through `task`: iterate it for one Outcome per photo, in input order, as each photo's
    files are written. Use it as a context manager; the drawing processes are forked when it is made, before any
    thread of the run (or a progress bar's) starts, and stopped on exit after the pictures under way.

    Args:
        photos: The photos, with their unique stems (and `image` where already read).
        task: What to do with each.
        batch_size: Photos per forward pass.
        workers: Drawing processes (default `default_workers`; 0 draws in this process).
    """

    def __init__(self, photos: Sequence[Photo], task: Task, *, batch_size: int = 1, workers: int | None = None) -> None:
        self.photos = photos
        self.task = task
        self.batch_size = max(1, batch_size)
        self.workers = default_workers(len(photos)) if workers is None else workers
        self._pool = _start_workers(task, self.workers)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="attnviz-writer") if self._pool is None else None
        self._limits = contextlib.ExitStack()
        if self._pool is None:  # drawing here
            self._limits.enter_context(one_blas_thread())

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the drawing processes (after the pictures under way) and the writing thread."""
        try:
            for executor in (self._pool, self._writer):
                if executor is not None:
                    executor.shutdown(wait=True, cancel_futures=True)
        finally:
            self._limits.close()

    def __iter__(self) -> Iterator[Outcome]:
        in_flight = 2 * max(1, self.workers) + self.batch_size
        pending: deque[tuple[Photo, Future[Any] | None, Any]] = deque()
        with _Reader(self.photos, self.task, depth=2 * self.batch_size + 2) as reader:
            for group in _groups(iter(reader), self.batch_size):
                for photo, analysis in _forward(self.task, group):
                    pending.append(_submit(self.task, photo, analysis, self._pool, self._writer))
                    photo.image = photo.tensor = None  # what the drawing needs has gone with the analysis
                while pending and (len(pending) > in_flight or _done(pending[0])):
                    yield _outcome(*pending.popleft())
        while pending:
            yield _outcome(*pending.popleft())


def _forward(task: Task, group: list[Photo]) -> Iterator[tuple[Photo, Any]]:
    """(photo, analysis or None when it failed) for each photo of a group, in order."""
    ready = [p for p in group if p.error is None]
    analyses: dict[int, Any] = {}
    try:
        analyses = dict(zip((p.index for p in ready), task.forward(ready), strict=True)) if ready else {}
    except (AttnvizError, NotBatched) as error:
        if len(ready) > 1:  # say which photo it was, or run the others: one at a time
            for photo in ready:
                yield from _forward(task, [photo])
            return
        if isinstance(error, NotBatched):
            raise
        ready[0].error = error
    for photo in group:
        yield photo, analyses.get(photo.index)


class NotBatched(Exception):
    """A map of a batched forward has no batch axis to split by photo; the batch is run again one photo at a time."""


def _submit(
    task: Task, photo: Photo, analysis: Any, pool: Executor | None, writer: Executor | None
) -> tuple[Photo, Future[Any] | None, Any]:
    if photo.error is not None:
        return photo, None, None
    note = task.note(analysis)
    if pool is not None:
        return photo, pool.submit(_render_packed, pack(analysis, photo.extra), photo.stem), note
    assert writer is not None
    future: Future[Any] = Future()
    try:  # drawing may use the model (a CAM), which the next forward needs: only the writing goes to the thread
        future = writer.submit(task.write, task.draw(analysis, photo.extra), photo.stem)
    except AttnvizError as error:
        future.set_exception(error)
    return photo, future, note


def _done(item: tuple[Photo, Future[Any] | None, Any]) -> bool:
    return item[1] is None or item[1].done()


def _outcome(photo: Photo, future: Future[Any] | None, note: Any) -> Outcome:
    if future is None:
        return Outcome(photo.index, photo.path, error=photo.error)
    try:
        files, replaced, summary = future.result()
    except AttnvizError as error:
        return Outcome(photo.index, photo.path, error=error)
    except BrokenProcessPool:
        raise AttnvizError(
            f"a drawing process ended while drawing {photo.path}", "rerun; if it happens again, rerun with --workers 0"
        ) from None
    return Outcome(photo.index, photo.path, files, replaced, summary, note)
