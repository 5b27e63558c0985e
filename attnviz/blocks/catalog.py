"""The index of every attention block: names, families, kinds and papers, readable without importing torch.

`attnviz list`, `attnviz --help` and the CLI's choices read this file only, so they stay fast. Each block's class
lives in the module named here and registers itself under the same name (see `base.register`); the registry
tests check that every entry has its class and that the class's taps emit exactly the kinds listed here.
"""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("channel", "spatial", "coordinate", "level", "matrix", "selection", "gate")
"""Every kind of attention a Tap can carry. See DESIGN.md."""


@dataclass(frozen=True)
class BlockInfo:
    """What is known about a block before its module is imported.

    Attributes:
        name: Registry key, lower case (`se`, `cbam`...).
        family: Short name of the family, as papers and code call it.
        module: Module under `attnviz.blocks` that defines and registers the class.
        kinds: Kinds of attention the block emits, in the order its taps fire.
        paper: Short citation: authors, title, venue and year.
        fits_backbone: Whether the block can sit inside a backbone stage on a (B, C, H, W) feature map.
        inputs: What `forward` takes: `feature_map` (one B x C x H x W tensor), `pyramid` (several maps from
            coarse and fine levels), `temporal` (B x C x N x T) or `sequence` (a decoder state and encoder outputs).
    """

    name: str
    family: str
    module: str
    kinds: tuple[str, ...]
    paper: str
    fits_backbone: bool = True
    inputs: str = "feature_map"

    @property
    def short_cite(self) -> str:
        """First author and venue, e.g. "Hu et al., CVPR 2018"."""
        authors, *_, venue = self.paper.split(", ")
        return f"{authors}, {venue}"


_ENTRIES = (
    BlockInfo("se", "SE", "se", ("channel",), "Hu et al., Squeeze-and-Excitation Networks, CVPR 2018"),
    BlockInfo(
        "scse",
        "scSE",
        "scse",
        ("channel", "spatial"),
        "Roy et al., Concurrent Spatial and Channel Squeeze & Excitation in Fully Convolutional Networks, MICCAI 2018",
    ),
    BlockInfo(
        "cbam",
        "CBAM",
        "cbam",
        ("channel", "spatial"),
        "Woo et al., CBAM: Convolutional Block Attention Module, ECCV 2018",
    ),
    BlockInfo(
        "eca", "ECA", "eca", ("channel",), "Wang et al., ECA-Net: Efficient Channel Attention for Deep CNNs, CVPR 2020"
    ),
    BlockInfo(
        "coord",
        "Coordinate Attention",
        "coord",
        ("coordinate", "coordinate"),
        "Hou et al., Coordinate Attention for Efficient Mobile Network Design, CVPR 2021",
    ),
    BlockInfo("sk", "SKNet", "sk", ("selection",), "Li et al., Selective Kernel Networks, CVPR 2019"),
    BlockInfo(
        "triplet",
        "Triplet Attention",
        "triplet",
        ("spatial", "spatial", "spatial"),
        "Misra et al., Rotate to Attend: Convolutional Triplet Attention Module, WACV 2021",
    ),
    BlockInfo(
        "cot",
        "CoTNet",
        "cot",
        ("spatial",),
        "Li et al., Contextual Transformer Networks for Visual Recognition, TPAMI 2022",
    ),
    BlockInfo(
        "danet",
        "DANet",
        "danet",
        ("matrix", "matrix"),
        "Fu et al., Dual Attention Network for Scene Segmentation, CVPR 2019",
    ),
    BlockInfo("mhsa", "Self-attention", "mhsa", ("matrix",), "Vaswani et al., Attention Is All You Need, NeurIPS 2017"),
    BlockInfo(
        "eca_mhsa",
        "ECA + MHSA",
        "eca_mhsa",
        ("channel", "matrix"),
        "Wang et al. + Vaswani et al., ECA-Net followed by multi-head self-attention over the H*W tokens, "
        "CVPR 2020 + NeurIPS 2017",
    ),
    BlockInfo(
        "simam",
        "SimAM",
        "simam",
        ("spatial",),
        "Yang et al., SimAM: A Simple, Parameter-Free Attention Module for CNNs, ICML 2021",
    ),
    BlockInfo(
        "gam",
        "GAM",
        "gam",
        ("channel", "spatial"),
        "Liu et al., Global Attention Mechanism: Retain Information to Enhance Channel-Spatial "
        "Interactions, arXiv 2021",
    ),
    BlockInfo(
        "nam",
        "NAM",
        "nam",
        ("channel", "spatial"),
        "Liu et al., NAM: Normalization-based Attention Module, NeurIPS 2021 workshop",
    ),
    BlockInfo(
        "shuffle",
        "SA-Net",
        "shuffle",
        ("channel", "spatial"),
        "Zhang & Yang, SA-Net: Shuffle Attention for Deep Convolutional Neural Networks, ICASSP 2021",
    ),
    BlockInfo(
        "criss_cross",
        "CCNet",
        "criss_cross",
        ("matrix",),
        "Huang et al., CCNet: Criss-Cross Attention for Semantic Segmentation, ICCV 2019",
    ),
    BlockInfo(
        "s2mlp",
        "S2-MLPv2",
        "s2mlp",
        ("selection",),
        "Yu et al., S2-MLPv2: Improved Spatial-Shift MLP Architecture for Vision, arXiv 2021",
    ),
    BlockInfo(
        "soca",
        "SOCA",
        "soca",
        ("channel",),
        "Dai et al., Second-order Attention Network for Single Image Super-Resolution, CVPR 2019",
    ),
    BlockInfo(
        "asff",
        "ASFF",
        "asff",
        ("level",),
        "Liu et al., Learning Spatial Fusion for Single-Shot Object Detection, arXiv 2019",
        fits_backbone=False,
        inputs="pyramid",
    ),
    BlockInfo(
        "fpn",
        "FPN",
        "fpn",
        (),
        "Lin et al., Feature Pyramid Networks for Object Detection (P6/P7 as in RetinaNet), CVPR 2017",
        fits_backbone=False,
        inputs="pyramid",
    ),
    BlockInfo(
        "temporal_gate",
        "MTGNN",
        "temporal",
        ("gate",),
        "Wu et al., Connecting the Dots: Multivariate Time Series Forecasting with GNNs (MTGNN), KDD 2020",
        fits_backbone=False,
        inputs="temporal",
    ),
    BlockInfo(
        "additive",
        "Bahdanau",
        "additive",
        ("matrix",),
        "Bahdanau et al., Neural Machine Translation by Jointly Learning to Align and Translate, ICLR 2015",
        fits_backbone=False,
        inputs="sequence",
    ),
)

CATALOG: dict[str, BlockInfo] = {}
for _entry in _ENTRIES:
    if _entry.name in CATALOG:
        raise RuntimeError(f"block {_entry.name!r} is listed twice in the catalog")
    CATALOG[_entry.name] = _entry


def block_names(*, backbone_only: bool = False) -> list[str]:
    """Every registered block name, in catalog order.

    Args:
        backbone_only: Only the blocks that can sit inside a backbone stage.
    """
    return [name for name, info in CATALOG.items() if info.fits_backbone or not backbone_only]


def block_info(name: str) -> BlockInfo:
    """The catalog entry for `name`.

    Raises:
        UnknownNameError: `name` is not a registered block; the message lists the valid names.
    """
    from attnviz.errors import UnknownNameError

    try:
        return CATALOG[name]
    except KeyError:
        raise UnknownNameError("block", name, CATALOG) from None
