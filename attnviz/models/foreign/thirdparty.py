"""Adapters for attention blocks of third-party CNN libraries: mmcv's `ContextBlock` (GCNet) and `NonLocal2d`,
fightingcv's External-Attention-pytorch (`model.attention`, or pip's `fightingcv_attention.attention`)
`CrissCrossAttention`, `DoubleAttention` (A2-Net) and DANet's `PositionAttentionModule` / `ChannelAttentionModule`,
segmentation-models-pytorch MAnet's `PABBlock`, and monai's `ChannelSELayer` (with its subclass `ResidualSELayer`).

Each adapter takes a module only when its class runs that library's own forward (and the methods it calls), so
the recipe (`thirdparty_recipes`) repeats what the module computes; a subclass with its own forward is listed as not
recognised instead. Modules whose softmax is a submodule (GCNet's, CCNet's, MAnet's) are tapped at its output.
mmcv's `NonLocal2d` is tapped in modes 'embedded_gaussian' and 'dot_product' without sub-sampling (other modes
and sub-sampled keys are listed as not recognised), mmcv's `GeneralizedAttention` with all four terms
(attention_type '1111'), no spatial range and q_stride = kv_stride = 1 (other settings: listed as not recognised).
Papers: Cao et al., GCNet, ICCVW 2019; Wang et al., Non-local Neural Networks, CVPR 2018; Huang et al., CCNet,
ICCV 2019; Chen et al., A^2-Nets: Double Attention Networks, NeurIPS 2018; Fu et al., Dual Attention Network for
Scene Segmentation, CVPR 2019; Fan et al., MA-Net, IEEE Access 2020; Roy et al., Concurrent Spatial and Channel
Squeeze & Excitation in Fully Convolutional Networks, MICCAI 2018; Zhu et al., An Empirical Study of Spatial
Attention Mechanisms in Deep Networks, ICCV 2019.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from attnviz.models.foreign.taps import CHANNEL, PLANE, TapSpec

MATRIX = ("batch", "head", "query", "key")
MAPS = ("batch", "channel", "height", "width")

MMCV_CONTEXT = ("mmcv.cnn.bricks.context_block",)
MMCV_NON_LOCAL = ("mmcv.cnn.bricks.non_local",)
MMCV_GENERALIZED = ("mmcv.cnn.bricks.generalized_attention",)
FIGHTINGCV = ("model.attention.", "fightingcv_attention.attention.")
"""Module prefixes of fightingcv's attention files: the repository's `model.attention`, pip's package."""
SMP_MANET = ("segmentation_models_pytorch.decoders.manet.decoder",)
MONAI_SE = ("monai.networks.blocks.squeeze_and_excitation",)


def _own(module: nn.Module, where: tuple[str, ...], *methods: str) -> None:
    """Check that the `methods` of `module`'s class are defined in a module named in (or, for a prefix ending in
    ".", under) `where`.

    Raises:
        AttributeError: one is not (another computation: the adapter does not apply).
    """
    for name in methods:
        defined = getattr(getattr(type(module), name, None), "__module__", None) or ""
        if not any(defined == at or (at.endswith(".") and defined.startswith(at)) for at in where):
            raise AttributeError(f"{type(module).__qualname__}.{name} is not the library's own")


def _gate_norm(gate: nn.Module) -> str:
    """ "sigmoid" for a sigmoid-like gate module, "none" for anything else (e.g. monai's ReLU gate)."""
    name = type(gate).__name__.lower()
    return "sigmoid" if "sigmoid" in name and "log" not in name else "none"


def _context_block(module: nn.Module) -> list[TapSpec]:
    """mmcv `ContextBlock`: its softmax over positions ('att' pooling) and its channel_mul sigmoid gate."""
    _own(module, MMCV_CONTEXT, "forward", "spatial_pool")
    specs = []
    if module.pooling_type == "att":
        context = TapSpec("context", "spatial", PLANE, "softmax", "mmcv_context", "softmax", ("height", "width"))
        specs.append(context)
    if module.channel_mul_conv is not None:  # torch.sigmoid(channel_mul_conv(context)), a (B, C, 1, 1) gate
        specs.append(TapSpec("channel", "channel", CHANNEL, "channel_mul_conv", "sigmoid_flat"))
    return specs


def _mmcv_non_local(module: nn.Module) -> list[TapSpec]:
    """mmcv `NonLocal2d` in modes 'embedded_gaussian' (softmax rows) and 'dot_product' (rows / N), no sub-sampling."""
    if module.mode not in ("embedded_gaussian", "dot_product") or module.sub_sample:
        raise AttributeError(f"mmcv NonLocal2d mode {module.mode!r}, sub_sample={module.sub_sample} is not tapped")
    _own(module, MMCV_NON_LOCAL, "forward", module.mode)
    softmax = module.mode == "embedded_gaussian"
    norm, over = ("softmax", ("key",)) if softmax else ("none", ())
    return [TapSpec("matrix", "matrix", MATRIX, "phi", "mmcv_non_local", norm, over, tokens="grid", inputs=("theta",))]


def _generalized_attention(module: nn.Module) -> list[TapSpec]:
    """mmcv `GeneralizedAttention`, attention_type '1111', spatial_range -1, q_stride = kv_stride = 1: per head, the
    softmax over the grid of the four energy terms (read from query_conv, key_conv and the two position Linears)."""
    types, strides = list(module.attention_type), (module.q_stride, module.kv_stride)
    if types != [True] * 4 or module.spatial_range >= 0 or strides != (1, 1):
        raise AttributeError(f"mmcv GeneralizedAttention {types}, strides {strides}, range {module.spatial_range}")
    _own(module, MMCV_GENERALIZED, "forward")
    inputs = ("query_conv", "key_conv", "appr_geom_fc_x")
    recipe = "mmcv_generalized"
    return [
        TapSpec("matrix", "matrix", MATRIX, "appr_geom_fc_y", recipe, "softmax", ("key",), tokens="grid", inputs=inputs)
    ]


def _criss_cross(module: nn.Module) -> list[TapSpec]:
    """fightingcv `CrissCrossAttention`: its Softmax(dim=3) module returns (B, H, W, H + W), column then row,
    the self entry of the column part at -inf: attnviz's own criss-cross layout."""
    _own(module, FIGHTINGCV, "forward")
    axes = ("batch", "height", "width", "key")
    return [TapSpec("matrix", "matrix", axes, "softmax", "as_is", "softmax", ("key",), tokens="row_col")]


def _double_attention(module: nn.Module) -> list[TapSpec]:
    """fightingcv `DoubleAttention`: the gathering maps (convB) and distribution maps (convV), per map index,
    softmaxed over the batch as its `F.softmax` without a dim does (see `thirdparty_recipes.fcv_a2_maps`)."""
    _own(module, FIGHTINGCV, "forward")
    return [
        TapSpec(label, "spatial", MAPS, conv, "fcv_a2_maps", "softmax", ("batch",))
        for label, conv in (("gather", "convB"), ("distribute", "convV"))
    ]


def _position_attention(module: nn.Module) -> list[TapSpec]:
    """fightingcv DANet `PositionAttentionModule`: its ScaledDotProductAttention over the grid's positions."""
    _own(module, FIGHTINGCV, "forward")
    _own(module.pa, FIGHTINGCV, "forward")
    inputs = ("pa.fc_q",)
    return [
        TapSpec("matrix", "matrix", MATRIX, "pa.fc_k", "fcv_pam", "softmax", ("key",), tokens="grid", inputs=inputs)
    ]


def _channel_attention(module: nn.Module) -> list[TapSpec]:
    """fightingcv DANet `ChannelAttentionModule`: its SimplifiedScaledDotProductAttention over the channels."""
    _own(module, FIGHTINGCV, "forward")
    _own(module.pa, FIGHTINGCV, "forward")
    return [TapSpec("channel", "matrix", MATRIX, "cnn", "fcv_cam", "softmax", ("key",), tokens="channel")]


def _pab(module: nn.Module) -> list[TapSpec]:
    """smp MAnet `PABBlock`: its map_softmax, over the whole (H*W) x (H*W) map (the whole matrix sums to 1)."""
    _own(module, SMP_MANET, "forward")
    over = ("query", "key")
    return [TapSpec("matrix", "matrix", MATRIX, "map_softmax", "smp_pab", "softmax", over, tokens="grid")]


def _monai_se(module: nn.Module) -> list[TapSpec]:
    """monai `ChannelSELayer` and `ResidualSELayer`: the output of `fc`, whose last module is the gate (sigmoid by
    default; ResidualSELayer's default is a ReLU, so its gate has no range)."""
    _own(module, MONAI_SE, "forward")
    return [TapSpec("channel", "channel", CHANNEL, "fc", "flat", _gate_norm(module.fc[-1]))]


THIRDPARTY_ADAPTERS: dict[tuple[str, str], Callable[[nn.Module], list[TapSpec]]] = {
    ("mmcv", "ContextBlock"): _context_block,
    ("mmcv", "NonLocal2d"): _mmcv_non_local,
    ("mmcv", "GeneralizedAttention"): _generalized_attention,
    **{
        (package, name): adapter
        for package in ("model", "fightingcv_attention")
        for name, adapter in (
            ("CrissCrossAttention", _criss_cross),
            ("DoubleAttention", _double_attention),
            ("PositionAttentionModule", _position_attention),
            ("ChannelAttentionModule", _channel_attention),
        )
    },
    ("segmentation_models_pytorch", "PABBlock"): _pab,
    ("monai", "ChannelSELayer"): _monai_se,
}
"""(top-level package, class name) -> the taps of such a module; merged into selfattn's (and so recognise's)."""
