"""Building or reading the model a `--model` spec names: torchvision's, timm's, the user's own code, or a model file.

Offline, pretrained weights that are not cached are refused at once with a message saying which file to place where.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from attnviz.errors import CheckpointError, UsageError, option
from attnviz.io.checkpoints import apply_state_dict, load_state_file
from attnviz.models.foreign.modelfile import StateDictFile, model_file, plain_module
from attnviz.models.usercode import LIBRARIES, MISFIT, build_from_code, is_code_spec, parse_code_spec

TIMM_ATTN_EXAMPLES = "se, ese, eca, ceca, cbam, lcbam, coord, ela, ge, gc, gca, sk, splat"
"""Some of timm's attn_layer names (timm.layers.get_attn decides what is valid); for hints only."""


@dataclass
class ForeignModel:
    """A model built from a --model spec, and what to say about it.

    Attributes:
        model: The module, in eval mode.
        name: A file-name-safe name ("timm-resnet18-cbam").
        label: What it is ("timm's resnet18 with cbam attention").
        weights: Where its weights came from ("randomly initialised (...)", "with its pretrained weights").
        trained: Whether the weights were trained at all.
        input_size: The input side its pretrained weights expect, when known.
        mean: Per-channel input mean its weights expect, when not ImageNet's.
        std: Per-channel input standard deviation its weights expect.
    """

    model: nn.Module
    name: str
    label: str
    weights: str
    trained: bool
    input_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @property
    def source(self) -> str:
        """What it is and where its weights came from, in one phrase."""
        return f"{self.label}, {self.weights}"


def parse_model_spec(spec: str) -> tuple[str, str]:
    """ "torchvision:NAME" -> ("torchvision", NAME), "timm:NAME" -> ("timm", NAME), "file.py:factory,k=v" and
    "package.module:factory,k=v" -> ("code", spec) (see attnviz.models.usercode), anything else -> ("file", spec).

    Raises:
        UsageError: a torchvision: or timm: spec names no model.
    """
    source, sep, name = spec.partition(":")
    if sep and source in LIBRARIES:
        if not name.strip():
            raise UsageError(f"{option('model')} {spec} names no model", f"e.g. {option('model')} {source}:resnet18")
        return source, name.strip()
    return ("code", spec) if is_code_spec(spec) and not Path(spec).exists() else ("file", spec)


def file_slug(text: str) -> str:
    """A piece of a file name made from a model spec ("timm:resnet18" -> "timm-resnet18")."""
    return re.sub(r"[^\w.-]+", "-", text).strip("-.") or "model"


def reachable(url: str, timeout: float = 5.0) -> bool:
    """Whether a TCP connection to `url`'s host can be opened: asked before a download, so that offline a clear
    message comes at once instead of a library's retries."""
    parsed = urlparse(url)
    if not parsed.hostname:
        return False
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _unknown(what: str, name: str, valid: list[str], listing: str) -> UsageError:
    """The error for an unknown model name, suggesting close names or saying what lists the valid ones."""
    close = difflib.get_close_matches(name, valid, n=5, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else f"{listing} lists the {len(valid)} names"
    return UsageError(f"unknown {what} {name!r}", hint)


# ---------------------------------------------------------------------------------------------------- torchvision


def torchvision_model(name: str, *, pretrained: bool = False) -> ForeignModel:
    """torchvision's `name` with random weights, or with its DEFAULT ImageNet weights (cache first, weights-only).

    Raises:
        UsageError: torchvision has no such model.
        CheckpointError: the weights are not cached and cannot be fetched; the message says where to place them.
    """
    import torchvision
    from torchvision.models import get_model_weights, list_models

    valid = list_models()
    if name not in valid:
        raise _unknown("torchvision model", name, valid, "torchvision.models.list_models()")
    kwargs: dict[str, Any] = {}
    if pretrained:
        categories = get_model_weights(name).DEFAULT.meta.get("categories")
        kwargs = {"num_classes": len(categories)} if categories else {}
    model = torchvision.models.get_model(name, weights=None, **kwargs)
    if pretrained:
        _load_torchvision_weights(model, name)
        weights = "with its pretrained ImageNet weights"
    else:
        weights = f"randomly initialised (no trained weights; {option('pretrained')} for ImageNet's)"
    return ForeignModel(model.eval(), file_slug(f"torchvision-{name}"), f"torchvision's {name}", weights, pretrained)


def _load_torchvision_weights(model: nn.Module, name: str) -> None:
    """Load torchvision's DEFAULT weights for `name` into `model`, refusing at once when they cannot be fetched."""
    from torchvision.models import get_model_weights

    from attnviz.models.backbones import pretrained_state_dict

    url = get_model_weights(name).DEFAULT.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    if not cached.is_file() and not reachable(url):
        raise CheckpointError(
            f"cannot fetch torchvision's pretrained {name} weights (no connection to {urlparse(url).hostname})",
            f"download {url} on a machine with internet and place it at {cached}",
        )
    apply_state_dict(model, pretrained_state_dict(name), f"torchvision's {name} weights")


# ----------------------------------------------------------------------------------------------------------- timm


def timm_model(name: str, *, pretrained: bool = False, attn: str | None = None) -> ForeignModel:
    """timm's `name` (optionally with `attn` as the attention layer of every block), random or pretrained.

    A weights file placed at `_timm_weights_file(name)` is used before any download.

    Raises:
        UsageError: timm is not installed, has no such model, or the model takes no attention layer.
        CheckpointError: the pretrained weights cannot be fetched; the message says where to place them.
    """
    timm = _import_timm()
    if not timm.is_model(name):
        raise _unknown("timm model", name, timm.list_models(), "timm.list_models()")
    model, kwargs = _create_timm(timm, name, attn)
    if pretrained:
        model = _timm_pretrained(timm, name, kwargs, strict=attn is None)
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    if pretrained:
        weights = "with its pretrained weights" + (f"; the {attn} modules are untrained" if attn else "")
    else:
        weights = f"randomly initialised (no trained weights; {option('pretrained')} for timm's)"
    size = cfg.get("input_size")
    return ForeignModel(
        model.eval(),
        file_slug(f"timm-{name}" + (f"-{attn}" if attn else "")),
        f"timm's {name}" + (f" with {attn} attention" if attn else ""),
        weights,
        pretrained,
        input_size=int(size[-1]) if size else None,  # some (botnet26t_256) only run at it, trained or not
        mean=tuple(cfg["mean"]) if len(cfg.get("mean", ())) == 3 else None,
        std=tuple(cfg["std"]) if len(cfg.get("std", ())) == 3 else None,
    )


def _import_timm() -> Any:
    """The timm module.

    Raises:
        UsageError: timm is not installed.
    """
    try:
        import timm
    except ImportError:
        raise UsageError(
            f"{option('model')} timm:NAME needs timm, which is not installed", "pip install attnviz[timm]"
        ) from None
    return timm


def _create_timm(timm: Any, name: str, attn: str | None) -> tuple[nn.Module, dict[str, Any]]:
    """timm's `name`, randomly initialised, with `attn` as its attention layer when given, and the keywords that
    built it.

    Raises:
        UsageError: `attn` is not a timm attention layer, or the model does not take it.
    """
    attn_cls, attempts = _timm_attn_kwargs(timm, attn) if attn else (None, [{}])
    for kwargs in attempts:
        try:
            model = timm.create_model(name, pretrained=False, **kwargs)
        except (TypeError, AssertionError, ValueError):  # this model takes no such keyword (or not this layer)
            continue
        if attn_cls is None or any(isinstance(m, attn_cls) for m in model.modules()):
            return model, kwargs
    raise UsageError(
        f"timm's {name} does not take {option('timm_attn')}", "it applies to ResNet-family models such as timm:resnet18"
    )


def _timm_attn_kwargs(timm: Any, attn: str) -> tuple[type, list[dict[str, Any]]]:
    """The attention class timm uses for `attn`, and the keyword sets to try (ResNet-family takes block_args)."""
    try:
        cls = timm.layers.get_attn(attn)
    except AssertionError:
        raise UsageError(
            f"unknown {option('timm_attn')} {attn!r}", f"timm's attention layers include {TIMM_ATTN_EXAMPLES}"
        ) from None
    cls = getattr(cls, "func", cls)  # get_attn may return a functools.partial
    return cls, [{"block_args": {"attn_layer": attn}}, {"attn_layer": attn}]


def _timm_weights_source(timm: Any, name: str) -> tuple[str | None, bool]:
    """(where timm downloads `name`'s pretrained weights from, whether they are in the Hugging Face cache)."""
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:  # another timm version: the hint then names no URL, and the download is simply tried
        return None, False
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return f"https://huggingface.co/{hub_id}/resolve/main/model.safetensors", False
        cached = any(
            isinstance(try_to_load_from_cache(hub_id, filename), str)
            for filename in ("model.safetensors", "pytorch_model.bin")
        )
        return f"https://huggingface.co/{hub_id}/resolve/main/model.safetensors", cached
    return (getattr(cfg, "url", None) or None) if cfg is not None else None, False


def _timm_weights_file(name: str, url: str | None) -> Path:
    """Where a hand-placed weights file for timm's `name` is looked for (beside torch's cached weights)."""
    suffix = Path(urlparse(url).path).suffix if url else ".safetensors"
    return Path(torch.hub.get_dir()) / "checkpoints" / f"timm-{file_slug(name)}{suffix or '.safetensors'}"


def _timm_pretrained(timm: Any, name: str, kwargs: dict[str, Any], *, strict: bool) -> nn.Module:
    """timm's model with its pretrained weights: a hand-placed file first, then timm's own (cached) download.

    Raises:
        CheckpointError: the weights cannot be fetched; the message says where to place them.
    """
    url, cached = _timm_weights_source(timm, name)
    placed = _timm_weights_file(name, url)
    where = f"download {url} on a machine with internet and place it" if url else "place the weights file"
    extra: dict[str, Any] = {} if strict else {"pretrained_strict": False}
    if placed.is_file():
        extra["pretrained_cfg_overlay"] = {"file": str(placed)}
    elif url and not cached and not reachable(url):
        raise CheckpointError(
            f"cannot fetch timm's pretrained {name} weights (no connection to {urlparse(url).hostname})",
            f"{where} at {placed}",
        )
    try:
        return timm.create_model(name, pretrained=True, **kwargs, **extra)
    except Exception as exc:
        raise CheckpointError(
            f"cannot fetch timm's pretrained {name} weights ({type(exc).__name__})", f"{where} at {placed}"
        ) from exc


# ------------------------------------------------------------------------------------------------------ model files


def open_model(
    model: str | os.PathLike[str] | nn.Module,
    *,
    block: str | None = None,
    pretrained: bool = False,
    weights: str | os.PathLike[str] | None = None,
    trust: bool = False,
    timm_attn: str | None = None,
) -> ForeignModel | StateDictFile:
    """The model a spec names ("torchvision:NAME", "timm:NAME", "file.py:factory", "package.module:factory", a
    model file) or an nn.Module, with `weights` (a state dict, unwrapped from the usual training checkpoints).

    Raises:
        UsageError: options that do not go with this kind of model (a block name added to a model with its own
            attention, weights for a model file, timm_attn for a model that is not timm's, pretrained for the
            user's code), or the user's code cannot build it.
        CheckpointError: `weights` cannot be read or do not fit.
    """
    kind, name = ("module", type(model).__name__) if isinstance(model, nn.Module) else parse_model_spec(str(model))
    spec = name if kind == "module" else str(model)
    _check_options(kind, spec, block, pretrained, weights, timm_attn)
    if kind == "file":
        module, contents = model_file(name, trust=trust)
        if module is None:
            return StateDictFile(name, contents)
        if block is not None:
            raise UsageError(f"{name} holds a whole model with its own attention", f"leave {block} out")
        label = f"the pickled model {name}"
        built = ForeignModel(module, file_slug(Path(name).stem), label, "with the weights it holds", True)
    elif kind == "module":
        built = ForeignModel(
            plain_module(model, name).eval(), file_slug(name), f"your {name}", "with its own weights", True
        )
    elif kind == "code":
        built = code_model(name)
    elif kind == "torchvision":
        built = torchvision_model(name, pretrained=pretrained)
    else:
        built = timm_model(name, pretrained=pretrained, attn=timm_attn)
    if weights is not None:
        entry = load_state_file(built.model, weights, trust=trust, hint=_misfit_hint(kind, name))
        built.weights = f"with weights from {weights}" + (f" (its {entry!r} entry)" if entry else "")
        built.trained = True
    return built


def code_model(spec: str) -> ForeignModel:
    """The model the user's own code builds ("mynet.py:build,num_classes=10"), as its factory left it."""
    code = parse_code_spec(spec)
    model = build_from_code(code)
    label = f"{type(model).__name__} from {code.target}:{code.factory}"
    weights = f"with the weights {code.call} gave it (no checkpoint; {option('weights')} for yours)"
    return ForeignModel(model.eval(), file_slug(f"{code.stem}-{code.factory}"), label, weights, False)


def _misfit_hint(kind: str, name: str) -> str:
    """What to do when weights do not fit a model that is not attnviz's backbone."""
    if kind == "code":
        return f"{MISFIT}: {parse_code_spec(name).retry}"
    attn = f" (and {option('timm_attn')})" if kind == "timm" else ""
    return f"{MISFIT}: name the {kind} model{attn} they were trained from" if kind in LIBRARIES else MISFIT


def _check_options(
    kind: str, spec: str, block: str | None, pretrained: bool, weights: Any, timm_attn: str | None
) -> None:
    if timm_attn and kind != "timm":
        raise UsageError(
            f"{option('timm_attn')} goes with {option('model')} timm:NAME",
            f"drop it, or use a timm model instead of {spec}",
        )
    if block is not None and kind != "file":
        raise UsageError(
            f"{option('model')} {spec} brings its own attention; a block name ({block}) cannot be added to it",
            f"leave {block} out" + (f", or use {option('timm_attn')} {block}" if kind == "timm" else ""),
        )
    if kind == "file" and (pretrained or weights is not None):
        raise UsageError(
            f"{option('pretrained')} and {option('weights')} do not apply to a model file", "leave them out"
        )
    if kind == "code" and pretrained:
        raise UsageError(f"{option('pretrained')} does not apply to {spec}", f"give {option('weights')} FILE instead")
