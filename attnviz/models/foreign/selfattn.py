"""Adapters for self-attention attnviz did not write: timm's ViT `Attention`, `BottleneckAttn` (BoTNet),
`HaloAttn` (HaloNet), `LambdaLayer`, `NonLocalAttn`, `BatNonLocalAttn`, `torch.nn.MultiheadAttention`, and the YOLO
family's: ultralytics' `Attention` (PSA, C2PSA), `AAttn` (YOLO12's area attention), the `TransformerBlock` of yolov5
and ultralytics (C3TR), with ultralytics' `CBAM`, `ChannelAttention` and `SpatialAttention` gates. The adapters of
third-party CNN blocks (mmcv, fightingcv, smp, monai) come from `thirdparty` and are merged in here.

None of the self-attention modules returns its weights from a submodule, so each tap runs a recipe of `recompute`
(or `yolo`) on the outputs of the submodules carrying the queries and keys (see there for what each one holds). The
timm, ultralytics and yolov5 self-attention adapters take a module only when its class runs that library's own
forward (a subclass that overrides it may compute something else, and is listed as not recognised instead). The
CBAM gates are tapped at their sigmoid, one layer per CBAM (structure alone finds each half as a layer of its own).
The last block of a timm ViT with a class token also draws the ViT's attention rollout (see `rollout`).
Papers: Dosovitskiy et al., An Image is Worth 16x16 Words, ICLR 2021; Srinivas et al., Bottleneck Transformers for
Visual Recognition, CVPR 2021; Vaswani et al., Scaling Local Self-Attention for Parameter Efficient Visual Backbones,
CVPR 2021; Bello, LambdaNetworks, ICLR 2021; Wang et al., Non-local Neural Networks, CVPR 2018; Chi et al., Non-Local
Neural Networks With Grouped Bilinear Attentional Transforms, CVPR 2020; Woo et al., CBAM, ECCV 2018.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from attnviz.models.foreign.probe import Probe, stage_of
from attnviz.models.foreign.recompute import vit_layout
from attnviz.models.foreign.rollout import RolloutChain, chain_of
from attnviz.models.foreign.taps import CHANNEL, PLANE, TapSpec
from attnviz.models.foreign.thirdparty import THIRDPARTY_ADAPTERS

MATRIX = ("batch", "head", "query", "key")
"""Axes of every self-attention matrix tapped here (a module with one head has a head axis of length 1)."""

HEAD_PLANE = ("batch", "head", "height", "width")
KEY_PLANES = ("batch", "channel", "height", "width")

CLASS_ROWS = ("vit_cls", "mha_cls")
"""Recipes of a class token's row: they need a layout that says token 0 is a class token."""


def _matrix(source: str, recipe: str, inputs: tuple[str, ...], norm: str = "softmax", tokens: str = "grid") -> TapSpec:
    """A (batch, head, query, key) matrix recomputed by `recipe` when `source` has run after `inputs`."""
    over = ("key",) if norm in ("softmax", "sum_to_one") else ()
    return TapSpec("matrix", "matrix", MATRIX, source, recipe, norm, over, tokens=tokens, inputs=inputs)


def _timm_forward(module: nn.Module, file: str, name: str) -> None:
    """Check that `module` runs the forward of timm.layers.`file`.`name`, the computation its recipe repeats.

    Raises:
        AttributeError: it runs another forward (the adapter then does not apply).
    """
    forward = type(module).forward
    if (forward.__module__, forward.__qualname__) != (f"timm.layers.{file}", f"{name}.forward"):
        raise AttributeError(f"{type(module).__qualname__} overrides timm's {name}.forward")


def _patches_and_class(name: str, source: str, inputs: tuple[str, ...]) -> list[TapSpec]:
    """A ViT's patch x patch matrix and its class token's row over the patches, by recipes `name`_matrix/_cls."""
    cls_row = TapSpec("cls", "spatial", HEAD_PLANE, source, f"{name}_cls", "none", inputs=inputs)
    return [_matrix(source, f"{name}_matrix", inputs, norm="none"), cls_row]


def _vit_attention(module: nn.Module) -> list[TapSpec]:
    _timm_forward(module, "attention", "Attention")
    return _patches_and_class("vit", "k_norm", ("q_norm",))


def _bottleneck(module: nn.Module) -> list[TapSpec]:
    _timm_forward(module, "bottleneck_attn", "BottleneckAttn")
    return [_matrix("pos_embed", "bot", ("qkv",))]


def _halo(module: nn.Module) -> list[TapSpec]:
    _timm_forward(module, "halo_attn", "HaloAttn")
    return [_matrix("pos_embed", "halo", ("q", "kv"), norm="none")]


def _lambda(module: nn.Module) -> list[TapSpec]:
    _timm_forward(module, "lambda_layer", "LambdaLayer")
    return [TapSpec("keys", "spatial", KEY_PLANES, "qkv", "lambda_keys", "softmax", ("height", "width"))]


def _non_local(module: nn.Module) -> list[TapSpec]:
    _timm_forward(module, "non_local_attn", "NonLocalAttn")
    return [_matrix("p", "non_local", ("t",))]


def _bat(module: nn.Module) -> list[TapSpec]:
    _timm_forward(module, "non_local_attn", "BatNonLocalAttn")
    _timm_forward(module.ba, "non_local_attn", "BilinearAttnTransform")
    return [_matrix("ba.conv_q", "bat", ("ba.conv_p",), norm="sum_to_one")]


def _multihead(module: nn.Module) -> list[TapSpec]:
    module.get_submodule("out_proj")
    return [_matrix("", "mha", (), tokens="sequence")]


# ------------------------------------------------------------------------------------- the YOLO family's modules


ULTRALYTICS_BLOCKS = ("ultralytics.nn.modules.block",)
"""Where ultralytics (and its YOLOv10 and YOLOv12 forks, also named ultralytics) defines PSA's and AAttn."""
TRANSFORMER_BLOCKS = ("ultralytics.nn.modules.transformer", "models.common", "yolov5.models.common")
"""Where TransformerBlock is defined: ultralytics, yolov5's own `models` package (torch.hub, a clone), pip's yolov5."""


def _own_forward(module: nn.Module, name: str, defined_in: tuple[str, ...]) -> None:
    """Check that `module` runs the forward of class `name` of one of the modules `defined_in`.

    Raises:
        AttributeError: it runs another forward (the adapter then does not apply).
    """
    forward = type(module).forward
    if forward.__qualname__ != f"{name}.forward" or forward.__module__ not in defined_in:
        raise AttributeError(f"{type(module).__qualname__} overrides {name}.forward")


def _require(module: nn.Module, *names: str) -> None:
    """Check that `module` has the attributes a recipe reads.

    Raises:
        AttributeError: one is missing (a class of the same name with another layout: the adapter does not apply).
    """
    missing = [name for name in names if not hasattr(module, name)]
    if missing:
        raise AttributeError(f"{type(module).__qualname__} has no {', '.join(missing)}")


def _gate(label: str, kind: str, source: str, module: nn.Module) -> TapSpec:
    """ultralytics' CBAM halves: `source` is the sigmoid whose (B, C, 1, 1) or (B, 1, H, W) output gates x."""
    gate = type(module.get_submodule(source)).__name__.lower()
    norm = "sigmoid" if "sigmoid" in gate and "log" not in gate else "none"
    if kind == "channel":
        return TapSpec(label, kind, CHANNEL, source, "flat", norm)
    return TapSpec(label, kind, PLANE, source, "plane", norm)


def _ultralytics_cbam(module: nn.Module) -> list[TapSpec]:
    return [
        _gate("channel", "channel", "channel_attention.act", module),
        _gate("spatial", "spatial", "spatial_attention.act", module),
    ]


def _psa_attention(module: nn.Module) -> list[TapSpec]:
    _own_forward(module, "Attention", ULTRALYTICS_BLOCKS)
    _require(module, "num_heads", "key_dim", "scale")
    return [_matrix("qkv", "psa_attention", ())]


def _area_attention(module: nn.Module) -> list[TapSpec]:
    # The original YOLOv12 code's AAttn (separate qk and v convs) lays its channels out differently: no qkv, no taps.
    _own_forward(module, "AAttn", ULTRALYTICS_BLOCKS)
    _require(module, "num_heads", "head_dim", "area")
    return [_matrix("qkv", "area_attention", ())]


def _transformer_block(module: nn.Module) -> list[TapSpec]:
    """yolov5's (and ultralytics' C3TR's) TransformerBlock: each layer's attention over the block's input grid,
    labelled "matrix" for a single layer, "layer0", "layer1"... for several."""
    _own_forward(module, "TransformerBlock", TRANSFORMER_BLOCKS)
    layers = module.get_submodule("tr")
    specs = []
    for index, layer in enumerate(layers):
        _own_forward(layer, "TransformerLayer", TRANSFORMER_BLOCKS)
        at = f"tr.{index}"
        spec = _matrix(f"{at}.ma", "mha_grid", (f"{at}.q", f"{at}.k"))
        label = f"layer{index}" if len(layers) > 1 else "matrix"
        specs.append(replace(spec, label=label, params=(("layer", f"{at}.ma"),)))
    return specs


SELF_ATTENTION_ADAPTERS: dict[tuple[str, str], Callable[[nn.Module], list[TapSpec]]] = {
    ("timm", "Attention"): _vit_attention,
    ("timm", "BottleneckAttn"): _bottleneck,
    ("timm", "HaloAttn"): _halo,
    ("timm", "LambdaLayer"): _lambda,
    ("timm", "NonLocalAttn"): _non_local,
    ("timm", "BatNonLocalAttn"): _bat,
    ("torch", "MultiheadAttention"): _multihead,
    ("ultralytics", "CBAM"): _ultralytics_cbam,
    ("ultralytics", "ChannelAttention"): lambda module: [_gate("channel", "channel", "act", module)],
    ("ultralytics", "SpatialAttention"): lambda module: [_gate("spatial", "spatial", "act", module)],
    ("ultralytics", "Attention"): _psa_attention,
    ("ultralytics", "AAttn"): _area_attention,
    ("ultralytics", "TransformerBlock"): _transformer_block,
    ("models", "TransformerBlock"): _transformer_block,
    ("yolov5", "TransformerBlock"): _transformer_block,
    **THIRDPARTY_ADAPTERS,
}
"""(top-level package, class name) -> the taps of such a module; merged into recognise.ADAPTERS."""


Layout = tuple[tuple[tuple[str, Any], ...], bool]
"""(layout params of the token sequence: "prefix" tokens and patch "grid"; whether token 0 is a class token)."""


def _vit_layout(vit: nn.Module) -> Layout | None:
    """The token layout a ViT module declares: timm's VisionTransformer (and kin) or torchvision's."""
    if isinstance(getattr(vit, "num_prefix_tokens", None), int):  # timm
        params: tuple[tuple[str, Any], ...] = (("prefix", vit.num_prefix_tokens),)
        grid = getattr(getattr(vit, "patch_embed", None), "grid_size", None)
        if grid is not None and len(grid) == 2:
            params += (("grid", (int(grid[0]), int(grid[1]))),)
        return params, bool(getattr(vit, "has_class_token", getattr(vit, "cls_token", None) is not None))
    if all(isinstance(getattr(vit, name, None), int) for name in ("image_size", "patch_size")) and isinstance(
        getattr(vit, "class_token", None), torch.Tensor
    ):  # torchvision: the class token, then the patches
        side = vit.image_size // vit.patch_size
        return (("prefix", 1), ("grid", (side, side))), True
    return None


def _is_timm_attention(module: nn.Module) -> bool:
    """Whether `module` runs timm's `Attention.forward`."""
    try:
        _timm_forward(module, "attention", "Attention")
    except AttributeError:
        return False
    return True


def _rollout(vit: nn.Module, attention: nn.Module) -> tuple[RolloutChain, int] | None:
    """The rollout chain of `vit` and the place of `attention` in it; None unless each of `vit.blocks` holds
    exactly one timm `Attention` (the blocks then form the chain the rollout multiplies along)."""
    blocks = getattr(vit, "blocks", None)
    if not isinstance(blocks, nn.Sequential | nn.ModuleList):
        return None
    chain = []
    for block in blocks:
        inside = [module for module in block.modules() if _is_timm_attention(module)]
        if len(inside) != 1:
            return None
        chain += inside
    index = next((i for i, module in enumerate(chain) if module is attention), None)
    return None if index is None else (chain_of(vit, chain), index)


def with_layout(specs: list[TapSpec], path: str, modules: dict[str, nn.Module]) -> list[TapSpec]:
    """`specs` of the module at `path` with the token layout of the nearest enclosing ViT.

    A timm `Attention` outside a known ViT infers its prefix at run time (what is left over the largest square)
    and has no class-token tap; a `MultiheadAttention` outside one works over a plain sequence. The timm
    `Attention` of each block of a timm ViT with a class token feeds the ViT's attention rollout (see `rollout`),
    which the last block's "rollout" tap draws.
    """
    if not any(spec.transform in ("vit_matrix", "mha") for spec in specs):
        return specs
    parts = path.split(".")
    enclosing = (modules[".".join(parts[:cut])] for cut in range(len(parts) - 1, -1, -1))
    vit, layout = next(((found, _vit_layout(found)) for found in enclosing if _vit_layout(found)), (None, None))
    if vit is None or layout is None:
        return [spec for spec in specs if spec.transform not in CLASS_ROWS]
    params, has_class = layout
    if specs[0].transform == "mha":
        specs = _patches_and_class("mha", specs[0].source, ())
    chained = _rollout(vit, modules[path]) if has_class and specs[0].transform == "vit_matrix" else None
    if chained is not None:
        params += (("rollout", chained),)
        if chained[1] == len(chained[0].blocks) - 1:
            specs = [*specs, TapSpec("rollout", "spatial", PLANE, "k_norm", "vit_rollout", "none", inputs=("q_norm",))]
    return [replace(spec, params=params) for spec in specs if has_class or spec.transform not in CLASS_ROWS]


def token_stage(probe: Probe, path: str, specs: tuple[TapSpec, ...] | list[TapSpec]) -> int | None:
    """The stage of a ViT's attention, from the stride of its patch grid; None when it has none."""
    spec = next((s for s in specs if s.transform in ("vit_matrix", "mha_matrix")), None)
    if spec is None:
        return None
    params, shape = dict(spec.params), probe.inputs.get(path)
    grid = params.get("grid")
    if spec.transform == "vit_matrix" and shape is not None and len(shape) == 3:  # (B, N, C) at the probe's size
        grid = vit_layout(shape[1], params)[1]
    return None if grid is None else stage_of(Probe(probe.size, outputs={path: (1, 1, *grid)}), path)
