"""Detector files, and `load_detector`, the one way attnviz reads a detector.

A detector file (det.pt) is a plain dict that `torch.load(weights_only=True)` reads:
    {"config": DetectorConfig.to_dict() (with "format": "attnviz-detector/1"), "state_dict": {...},
     "classes": [...], "metrics": {...}, "training": {... the fit-det options and command ...}}
A fit-det training checkpoint (`<out>.ckpt`) holds the same detector under "detector" (config) and "model" (weights).

`load_detector(path)` reads either without running code from the file. With `trust` it also reads a pickled model
(itself, or under "ema"/"model" as YOLO-style repositories save them), whose ASFF-like modules are found by structure
(`attnviz.detection.foreign`); nothing else is known about such a model, so its outputs are never decoded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attnviz.detection.checks import detector_not_found, given
from attnviz.detection.foreign import FusionModule, attach_level_taps
from attnviz.detection.model import FORMAT, Detector, DetectorConfig
from attnviz.errors import CheckpointError, UntrustedCheckpointError, UsageError
from attnviz.images import IMAGENET_MEAN, IMAGENET_STD

FOREIGN_SIZE = 416  # input side for foreign detectors when no size is given (YOLOv3's usual test size)
FOREIGN_MEAN, FOREIGN_STD = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # YOLO-style repositories feed 0..1 RGB
NATIVE_HINT = "eval-det scores detectors written by attnviz fit-det, on its scenes"
CONFIG_BOUNDS = {"channels": (8, 2048), "num_classes": (1, 10_000), "input_size": (32, 4096), "compress": (1, 1024)}
"""The range of every size in a detector file's config (fit-det writes 64 channels, 10 classes, 256 px, 16)."""
SIZE_SLACK = 16 * 2**20
"""Bytes of weights a config may need beyond twice what its file stores (rounding, counters)."""


@dataclass
class LoadedDetector:
    """A detector ready to analyse images, and what is known about it.

    Attributes:
        model: The detector (eval mode, float32, on `device`).
        path: The file it came from.
        source: One line saying what it is and where it came from ("attnviz detector (...) from det.pt, ...").
        modules: Its ASFF-like modules, in definition order.
        config: The attnviz detector's config; None for a foreign model, whose outputs are unknown, so no
            detections are decoded for it.
        classes: Class names (attnviz detectors only).
        metrics: What its file says about its training ("epochs", "val_map50", ...).
        device: Where the model runs.
    """

    model: nn.Module
    path: Path
    source: str
    modules: list[FusionModule]
    config: DetectorConfig | None = None
    classes: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def native(self) -> bool:
        """Whether attnviz built it (its outputs can be decoded into boxes)."""
        return self.config is not None

    @property
    def trained(self) -> bool:
        """Whether it was trained: an attnviz detector after at least one epoch, or any foreign model."""
        return bool(self.metrics.get("epochs")) or not self.native

    @property
    def mean(self) -> tuple[float, ...]:
        """Per-channel mean its input is normalised with."""
        return IMAGENET_MEAN if self.native else FOREIGN_MEAN

    @property
    def std(self) -> tuple[float, ...]:
        """Per-channel standard deviation its input is normalised with."""
        return IMAGENET_STD if self.native else FOREIGN_STD

    def input_size(self, size: int | None) -> int:
        """`size` if given, else the size the detector was trained at (416 for a foreign model)."""
        return size or (self.config.input_size if self.config is not None else FOREIGN_SIZE)


def load_detector(
    path: str | os.PathLike[str], *, trust: bool = False, device: torch.device | None = None, native: bool = False
) -> LoadedDetector:
    """Read the detector in `path` and find its ASFF modules.

    Args:
        path: det.pt, a fit-det checkpoint, or (with `trust`) a pickled model.
        trust: Allow unpickling a model, which runs code from the file.
        device: Where the model runs (CPU when None).
        native: Accept attnviz detectors only, as scoring on attnviz's scenes needs (a pickle is refused even with
            `trust`), with or without ASFF modules.

    Raises:
        UsageError: missing file; not a detector (a classifier's weights, a bare state dict...); a pickled model
            without `trust` (UntrustedCheckpointError; nothing from the file has run) or with `native`; no ASFF-like
            module (unless `native`).
        CheckpointError: a corrupt or truncated file, or weights that do not fit their config.
    """
    path = Path(path)
    contents = _read_native(path) if native else _read_any(path, trust=trust)
    if _is_pickled_model(contents):
        from attnviz.io.checkpoints import check_module_values

        model = _module_of(contents)
        check_module_values(model, str(path))
        metrics: dict[str, Any] = {}
        source = f"the pickled model {path} ({type(model).__name__})"
    else:
        model, metrics = detector_from_checkpoint(contents, str(path))
        source = describe_detector(model.config, path, metrics)
    model = model.float().eval()
    modules, unmatched = attach_level_taps(model)
    if not modules and not native:
        raise UsageError(*_no_asff_message(path, model, unmatched))
    config = model.config if isinstance(model, Detector) else None
    classes = list(model.classes) if isinstance(model, Detector) else []
    device = device or torch.device("cpu")
    return LoadedDetector(model.to(device), path, source, modules, config, classes, metrics, device)


def describe_detector(config: DetectorConfig, path: Path, metrics: dict[str, Any]) -> str:
    """One line on an attnviz detector: backbone, ASFF or not, input size, file, and how far it was trained."""
    what = f"attnviz detector ({config.backbone}, {'ASFF' if config.asff else 'no ASFF'}, {config.input_size} px)"
    if not metrics.get("epochs"):
        return f"{what} from {path}, untrained"
    score = metrics.get("val_map50")
    scored = f", val mAP@0.5 {score:.3f}" if isinstance(score, float) else ""
    epochs = int(metrics["epochs"])
    return f"{what} from {path}, trained {epochs} epoch{'s' if epochs != 1 else ''}{scored}"


# ----------------------------------------------------------------------------------------------- detector files


def detector_checkpoint(
    model: Detector,
    *,
    metrics: dict[str, Any],
    training: dict[str, Any] | None = None,
    half: bool = False,
) -> dict[str, Any]:
    """The det.pt dict of a detector: plain containers and tensors only, so weights_only loading reads it.

    Args:
        model: The detector.
        metrics: What its training measured ("epochs", "val_map50", ...).
        training: The fit-det options and command.
        half: Store floating-point weights as fp16 (half the file size).
    """
    state = {
        k: (v.detach().to("cpu", torch.float16) if half and v.is_floating_point() else v.detach().cpu()).contiguous()
        for k, v in model.state_dict().items()
    }
    return {
        "config": model.config.to_dict(),
        "state_dict": state,
        "classes": list(model.classes),
        "metrics": dict(metrics),
        "training": dict(training or {}),
    }


def is_detector_checkpoint(obj: Any) -> bool:
    """Whether `obj` (what read_checkpoint returned) is an attnviz detector file or detector training checkpoint."""
    if not isinstance(obj, dict):
        return False
    config = obj.get("detector") if "detector" in obj else obj.get("config")
    return isinstance(config, dict) and config.get("format") == FORMAT


def detector_from_checkpoint(obj: dict[str, Any], source: str) -> tuple[Detector, dict[str, Any]]:
    """Rebuild the detector a det.pt dict (or a fit-det training checkpoint, `<out>.ckpt`) describes.

    Returns:
        The detector (eval mode, float32) and its metrics.

    Raises:
        CheckpointError: the dict is damaged or its weights do not fit its config.
    """
    from attnviz.io.checkpoints import apply_state_dict

    training_checkpoint = "detector" in obj
    config_dict = obj["detector"] if training_checkpoint else obj["config"]
    try:
        check_config_fields(config_dict, source)
        config = DetectorConfig.from_dict(config_dict)
    except (UsageError, TypeError) as exc:
        raise CheckpointError(f"{source} holds a detector config attnviz cannot build ({exc})") from exc
    state = obj.get("model") if training_checkpoint else obj.get("state_dict")
    classes = obj.get("classes")
    if not isinstance(state, dict) or not isinstance(classes, list):
        raise CheckpointError(f"{source} is a damaged detector file (no state dict or no class names)")
    check_detector_size(config, state, source)
    model = Detector(config, classes=[str(c) for c in classes])
    apply_state_dict(model, state, source)
    metrics = dict(obj.get("metrics") or {})
    if training_checkpoint:
        history = obj.get("history") or []
        metrics = {**(history[-1] if history else {}), "epochs": len(history), "training_checkpoint": True}
    return model.eval(), metrics


def check_config_fields(config: Any, source: str) -> None:
    """Refuse a detector config whose sizes are out of CONFIG_BOUNDS, before anything is built from it.

    Raises:
        CheckpointError: naming the first field out of range.
    """
    if not isinstance(config, dict):
        raise CheckpointError(f"{source} holds a detector config that is not a dict ({type(config).__name__})")
    for name, (low, high) in CONFIG_BOUNDS.items():
        value = config.get(name, low)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise CheckpointError(
                f"{source} holds a detector config with {name}={value!r}, outside {low}..{high}",
                "the file is damaged or not written by attnviz fit-det",
            )


def check_detector_size(config: DetectorConfig, state: dict[str, Any], source: str) -> None:
    """Refuse a config that describes more weights than the file holds, before they are allocated: the detector is
    built on the meta device (no memory) to count them.

    Raises:
        CheckpointError: the weights the config needs are far beyond what the file stores.
    """
    with torch.device("meta"):
        skeleton = Detector(config)
    needed = sum(t.numel() * 4 for t in skeleton.state_dict().values())  # float32 once loaded
    stored = sum(t.numel() * t.element_size() for t in state.values() if isinstance(t, torch.Tensor))
    if needed > 2 * stored + SIZE_SLACK:  # fp16 files (fit-det --half) hold half of what the model takes
        raise CheckpointError(
            f"{source} holds a detector config that needs {needed / 2**20:,.0f} MB of weights, but the file stores "
            f"{stored / 2**20:,.0f} MB",
            "the file is damaged or its config was edited; re-save it with attnviz fit-det",
        )


# ------------------------------------------------------------------------------------------------------ reading


def _read(path: Path, *, trust: bool) -> tuple[Any, str | None]:
    """What `path` holds, and why it is not an attnviz detector (None when it is one or is a model to search).

    Raises:
        UsageError: the file is missing.
        UntrustedCheckpointError: a pickled model without `trust` (nothing from the file has run).
        CheckpointError: the file is corrupt or truncated.
    """
    from attnviz.io.checkpoints import read_checkpoint

    if not path.exists():
        raise detector_not_found(path)
    contents = read_checkpoint(path, trust=trust)
    return contents, None if is_detector_checkpoint(contents) else _not_a_detector(path, contents)


def _read_any(path: Path, *, trust: bool) -> Any:
    """An attnviz detector file's dict, or (with `trust`) a pickle holding a model."""
    contents, not_detector = _read(path, trust=trust)
    if not_detector is not None:
        raise UsageError(
            not_detector, f"give a detector file written by attnviz fit-det, or a pickled model with {given('trust')}"
        )
    return contents


def _read_native(path: Path) -> dict[str, Any]:
    """An attnviz detector file's dict; a pickle is refused without being read."""
    try:
        contents, not_detector = _read(path, trust=False)
    except UntrustedCheckpointError:
        raise UsageError(f"{path} is a pickled model, not an attnviz detector file", NATIVE_HINT) from None
    if not_detector is not None or not isinstance(contents, dict):
        raise UsageError(not_detector or f"{path} is not an attnviz detector file", NATIVE_HINT)
    return contents


def _is_pickled_model(contents: Any) -> bool:
    """Whether a trusted pickle holds a model: the module itself, or one under "ema" or "model"."""
    if isinstance(contents, nn.Module):
        return True
    return isinstance(contents, dict) and any(isinstance(contents.get(k), nn.Module) for k in ("ema", "model"))


def _module_of(contents: Any) -> nn.Module:
    """The model of a trusted pickle: the module itself, else its "ema" (as YOLO repositories prefer), else "model"."""
    if isinstance(contents, nn.Module):
        return contents
    for key in ("ema", "model"):
        if isinstance(contents.get(key), nn.Module):
            return contents[key]
    raise AssertionError("_module_of was given no module")  # pragma: no cover


def _not_a_detector(path: Path, contents: Any) -> str | None:
    """Why `contents` is not an attnviz detector file; None when it is a module (a foreign model to search)."""
    from attnviz.io.sidecars import read_sidecar

    if _is_pickled_model(contents):
        return None
    try:
        info = read_sidecar(path)
    except CheckpointError:
        info = None
    if info is not None:
        what = f"{info.block} on {info.backbone}" if info.block else f"a plain {info.backbone}"
        return f"{path} holds classifier weights ({what}, per its sidecar), not a detector checkpoint"
    if isinstance(contents, dict) and isinstance(contents.get("config"), dict) and "block" in contents["config"]:
        return f"{path} is a classifier training checkpoint (attnviz fit), not a detector checkpoint"
    if isinstance(contents, dict) and contents and all(isinstance(v, torch.Tensor) for v in contents.values()):
        return f"{path} is a bare state dict without a detector config, not a detector checkpoint"
    return f"{path} holds no detector config ({type(contents).__name__}), not a detector checkpoint"


def _no_asff_message(path: Path, model: nn.Module, unmatched: list[tuple[str, str]]) -> tuple[str, str]:
    if isinstance(model, Detector):
        return (
            f"{path} is a detector without ASFF modules (trained with --no-asff): it has no fusion weights to draw",
            "train one with ASFF: attnviz fit-det --out det.pt",
        )
    listed = ", ".join(f"{p} ({t})" for p, t in unmatched[:3])
    named = f"; ASFF-named modules that do not fit it: {listed}" if unmatched else ""
    return (
        f"no ASFF-like module was found in {path}{named}",
        "looked for a module fusing three inputs with softmax weights from a 1x1 'weight_levels' conv to 3 channels",
    )
