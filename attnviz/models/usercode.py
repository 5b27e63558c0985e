"""Models built by the user's own code: `--model path/to/file.py:factory` and `--model package.module:factory`.

The factory is any callable returning an nn.Module (a class or a function); keyword arguments follow commas:
`mynet.py:build,num_classes=10,widths=[32,64]` calls `build(num_classes=10, widths=[32, 64])`, each value read as a
Python literal (`ast.literal_eval`) or else taken as a plain string. Importing the user's own code is their explicit
choice, so it needs no trust option (unpickling a checkpoint still does). While the code is imported and the factory
called, its folder (for a module: the working directory) comes first on sys.path, so it can import its siblings.

Parsing a spec imports neither torch nor the user's code, so the front door can tell a spec from a block name early.
A state dict given as the model itself that fits none of attnviz's backbones is told apart here too, and the user
pointed to `--model yourfile.py:factory --weights FILE`.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from attnviz.errors import AttnvizError, CheckpointError, UsageError, option

if TYPE_CHECKING:
    from torch import nn

LIBRARIES = ("torchvision", "timm")
"""What a spec names before its colon for a library's model ("timm:resnet18"), never a user's module."""
_SPEC = re.compile(
    r"(?P<target>.+?\.py|[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):(?P<factory>[A-Za-z_]\w*)(?:,(?P<kwargs>.*))?", re.DOTALL
)
MISFIT = "the weights were saved from another model, or from another configuration of it"
"""Why weights do not fit a model that is not attnviz's backbone (the start of the hint)."""
_FAILURES = (Exception, SystemExit)
"""What the user's code may raise while imported or called (SystemExit: a script that parses sys.argv on import)."""


@dataclass(frozen=True)
class CodeSpec:
    """A parsed `file.py:factory,key=value` or `package.module:factory,key=value` spec.

    Attributes:
        target: The file ("nets/mynet.py") or the module ("mypkg.nets").
        factory: The callable's name in it ("build").
        kwargs: The keyword arguments it is called with.
    """

    target: str
    factory: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def is_file(self) -> bool:
        return self.target.endswith(".py")

    @property
    def stem(self) -> str:
        """The file's stem or the module's dotted name: the start of the model's name in file names."""
        return Path(self.target).stem if self.is_file else self.target

    @property
    def retry(self) -> str:
        """What to do when weights do not fit the model the factory built."""
        spec = f"{option('model')} {self.target}:{self.factory},key=value"
        return f"pass {self.factory} the arguments it was trained with ({spec})"

    @property
    def call(self) -> str:
        """The call as Python writes it: "build(num_classes=10)"."""
        return f"{self.factory}({', '.join(f'{k}={v!r}' for k, v in self.kwargs.items())})"


def is_code_spec(text: str) -> bool:
    """Whether `text` has the form of `file.py:factory[,k=v...]` or `package.module:factory[,k=v...]`."""
    return text.partition(":")[0] not in LIBRARIES and _SPEC.fullmatch(text) is not None


def parse_code_spec(text: str) -> CodeSpec:
    """ "mynet.py:build,num_classes=10" -> CodeSpec("mynet.py", "build", {"num_classes": 10}).

    Raises:
        UsageError: `text` is not such a spec, or its keyword arguments are not key=value.
    """
    match = _SPEC.fullmatch(text)
    if match is None or text.partition(":")[0] in LIBRARIES:
        raise UsageError(
            f"{option('model')} {text} is not file.py:factory or package.module:factory",
            f"e.g. {option('model')} mynet.py:build,num_classes=10",
        )
    return CodeSpec(match["target"], match["factory"], _parse_kwargs(match["kwargs"] or "", text))


def _parse_kwargs(text: str, spec: str) -> dict[str, Any]:
    """ "num_classes=10,act=relu" -> {"num_classes": 10, "act": "relu"}."""
    kwargs: dict[str, Any] = {}
    for part in _split_arguments(text):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier() or key in kwargs:
            raise UsageError(
                f"{option('model')} {spec}: {part!r} is not a new key=value argument",
                f"e.g. {option('model')} mynet.py:build,num_classes=10,width=0.5",
            )
        kwargs[key] = _literal(value.strip())
    return kwargs


def _split_arguments(text: str) -> list[str]:
    """Split at the commas outside brackets and quotes: "a=1,b=[2,3]" -> ["a=1", "b=[2,3]"]."""
    parts, depth, quote, start = [], 0, "", 0
    for index, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return [part.strip() for part in parts if part.strip()]


def _literal(value: str) -> Any:
    """A Python literal ("10", "0.5", "[2, 2]", "True", "'a'"), or else the plain string ("relu")."""
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return value


# --------------------------------------------------------------------------------------------------- building


def build_from_code(spec: CodeSpec) -> nn.Module:
    """Import the spec's file or module and call its factory with its keyword arguments.

    Raises:
        UsageError: the file is missing, the module cannot be imported, it has no such callable, calling it fails,
            or it returns something that is not an nn.Module (all in one line).
    """
    from torch import nn

    folder = str(Path(spec.target).expanduser().resolve().parent) if spec.is_file else str(Path.cwd())
    with _first_on_path(folder):
        module = _import_file(spec) if spec.is_file else _import_module(spec)
        built = _call(_factory(module, spec), spec)
    if not isinstance(built, nn.Module):
        raise UsageError(
            f"{spec.call} in {spec.target} returned {type(built).__name__}, not a torch nn.Module",
            f"make {spec.factory} return the model itself",
        )
    return built


@contextmanager
def _first_on_path(folder: str) -> Iterator[None]:
    """Put `folder` first on sys.path inside the block, and take it off again after."""
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        if folder in sys.path:
            sys.path.remove(folder)


def _import_file(spec: CodeSpec) -> ModuleType:
    """The user's file, imported under a name of its own (so it shadows no module of the same stem).

    Raises:
        UsageError: the file is missing, or importing it fails.
    """
    path = Path(spec.target).expanduser()
    if not path.is_file():
        raise UsageError(
            f"model file not found: {path}", f"give the path of the Python file that defines {spec.factory}"
        )
    path = path.resolve()
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    name = "attnviz_user_" + re.sub(r"\W", "_", path.stem) + "_" + digest
    loader_spec = importlib.util.spec_from_file_location(name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise UsageError(f"{path} cannot be imported as Python code", "give a .py file")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[name] = module  # dataclasses and typing look the module up while it runs
    try:
        loader_spec.loader.exec_module(module)
    except _FAILURES as exc:
        sys.modules.pop(name, None)
        raise _import_failed(spec.target, exc) from exc
    return module


def _import_module(spec: CodeSpec) -> ModuleType:
    """The user's module, imported as Python imports it (the working directory first on the path).

    Raises:
        UsageError: no such module, or importing it fails.
    """
    try:
        return importlib.import_module(spec.target)
    except ModuleNotFoundError as exc:
        if exc.name and (spec.target == exc.name or spec.target.startswith(exc.name + ".")):
            leaf = spec.target.rpartition(".")[2]
            raise UsageError(
                f"no module named {spec.target}",
                f"run attnviz from the folder that holds {spec.target.split('.')[0]}, install it, or give the file: "
                f"{option('model')} path/to/{leaf}.py:{spec.factory}",
            ) from None
        raise _import_failed(spec.target, exc) from exc
    except _FAILURES as exc:
        raise _import_failed(spec.target, exc) from exc


def _import_failed(target: str, exc: BaseException) -> UsageError:
    from attnviz.io.checkpoints import first_line

    run = f"python {target}" if target.endswith(".py") else f'python -c "import {target}"'
    return UsageError(
        f"importing {target} failed: {type(exc).__name__}: {first_line(exc)}", f"`{run}` shows the whole traceback"
    )


def _factory(module: ModuleType, spec: CodeSpec) -> Callable[..., Any]:
    """The callable the spec names in `module`.

    Raises:
        UsageError: there is none, or it is not callable (with the module's close or defined names).
    """
    found = getattr(module, spec.factory, None)
    if callable(found):
        return found
    if found is not None:
        raise UsageError(
            f"{spec.factory} in {spec.target} is a {type(found).__name__}, not a class or function",
            "name a class or a function that returns the model",
        )
    public = {n: v for n, v in vars(module).items() if callable(v) and not n.startswith("_")}
    own = [n for n, v in public.items() if getattr(v, "__module__", None) == module.__name__]
    close = difflib.get_close_matches(spec.factory, list(public), n=3, cutoff=0.6)
    if close:
        hint = f"did you mean {', '.join(close)}?"
    else:
        hint = f"it defines {', '.join(own[:8])}" if own else "it defines no class or function"
    raise UsageError(f"{spec.target} has no {spec.factory!r}", hint)


def _call(factory: Callable[..., Any], spec: CodeSpec) -> Any:
    """factory(**kwargs).

    Raises:
        UsageError: the call raised; the message gives its first line, the hint the factory's signature.
    """
    from attnviz.io.checkpoints import first_line

    try:
        return factory(**spec.kwargs)
    except _FAILURES as exc:
        raise UsageError(
            f"calling {spec.call} in {spec.target} failed: {type(exc).__name__}: {first_line(exc)}",
            _signature(factory, spec),
        ) from exc


def _signature(factory: Callable[..., Any], spec: CodeSpec) -> str | None:
    """ "it takes build(num_classes=10, width=16); ..." (None when Python cannot tell)."""
    try:
        text = f"{spec.factory}{inspect.signature(factory)}"
    except (TypeError, ValueError):
        return None
    text = text if len(text) <= 160 else text[:157] + "..."
    return f"it takes {text}; pass keyword arguments as {option('model')} {spec.target}:{spec.factory},key=value"


# ------------------------------------------------------------------------------------- whose state dict is this


def nearest_backbone(state: dict[str, Any], *, least: float = 0.5) -> str | None:
    """The attnviz backbone (with or without blocks) `state` was saved from, or None for some other model's weights.

    The backbone whose state-dict keys overlap `state`'s the most (intersection over union, after wrapper prefixes),
    when that overlap is at least `least`.
    """
    import torch

    from attnviz.io.checkpoints import strip_prefixes
    from attnviz.models import BACKBONES
    from attnviz.models.backbones import build_model

    best, best_overlap = None, least
    for backbone in BACKBONES:
        with torch.device("meta"):  # only the keys are wanted: no memory, no initialisation
            expected = set(build_model(backbone, None).state_dict())
        keys = set(strip_prefixes(state, expected))
        overlap = len(keys & expected) / len(keys | expected)
        if overlap >= best_overlap:
            best, best_overlap = backbone, overlap
    return best


def load_into_backbone(network: nn.Module, state: dict[str, Any], path: str, *, explain: bool = True) -> None:
    """Load the state dict of the model file `path` into attnviz's backbone `network`.

    Raises:
        CheckpointError: it does not fit; with `explain`, the hint names the backbone it fits when that is another.
        UsageError: with `explain`, it fits none of attnviz's backbones: the hint points to the user's own code.
    """
    from attnviz.io.checkpoints import apply_state_dict

    try:
        apply_state_dict(network, state, path)
    except CheckpointError as exc:
        raise (_explain_misfit(exc, state, path, network.attnviz_config.backbone) if explain else exc) from None


def _explain_misfit(error: CheckpointError, state: dict[str, Any], path: str, backbone: str) -> AttnvizError:
    """`error` itself, or one naming the backbone `state` does fit, or (fitting none) one pointing to user code."""
    near = nearest_backbone(state)
    if near == backbone:
        return error
    if near is not None:
        return CheckpointError(error.message, f"its keys are {near}'s: pass {option('backbone')} {near}")
    keys = list(state)
    return UsageError(
        f"{path} fits none of attnviz's backbones: it holds the weights of another model ({len(keys)} tensors, e.g. "
        f"{', '.join(keys[:3])})",
        f"build that model with your code and load the file into it: {option('model')} yourfile.py:factory "
        f"{option('weights')} {path}",
    )
