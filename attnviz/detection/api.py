"""`asff_weights(det, image)`: a detector's ASFF fusion weights on a photo, from Python, as `attnviz asff-weights`
draws them.

    >>> from attnviz.detection import asff_weights
    >>> view = asff_weights("demo", "samples/scenes/detection_scene.png")   # the shipped detector
    >>> view.summary["detections"][0]["level_weights"]
    >>> view.save("attnviz-out")                                           # the files the CLI writes

Every argument is checked before torch is imported, so a bad value fails at once. Nothing here imports torch until
a detector is read.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from attnviz.detection.checks import check_asff_options, detector_file

if TYPE_CHECKING:
    from attnviz.views.base import View


def asff_weights(
    det: str | os.PathLike[str],
    image: str | os.PathLike[str],
    *,
    score: float = 0.3,
    iou: float = 0.5,
    max_detections: int = 50,
    trust: bool = False,
    size: int | None = None,
    preprocess: str = "letterbox",
    cmap: str = "viridis",
    alpha: float = 0.55,
    device: str = "auto",
) -> View:
    """Draw where each ASFF module of a detector takes its features from, on one photo.

    Args:
        det: Detector file: det.pt from `attnviz fit-det`, a pickled model (needs `trust`), or "demo" for the
            shipped demo detector.
        image: Image file.
        score: Draw detections with at least this score (0-1).
        iou: Overlap above which NMS drops the weaker box.
        max_detections: Most boxes drawn.
        trust: Allow loading a pickled model file; this runs code from the file.
        size: Side of the square input (default: the detector's training size; 416 for a pickled model).
        preprocess: Fit the image to the input by "resize", "crop" or "letterbox".
        cmap: Matplotlib colormap of the weight maps.
        alpha: Opacity of the weight maps over the photo, 0-1.
        device: "auto" (a GPU when there is one), "cpu" or "cuda".

    Returns:
        The View of `attnviz asff-weights`: pictures asff_levels and asff_dominant, plus asff_detections and
        asff_shares for attnviz detectors (a pickled model's outputs are not decoded); its summary is the
        command's `--json` result without "files".

    Raises:
        UsageError: a bad argument, a missing or unreadable image or detector file, a file that holds no ASFF
            detector, or a pickled model without `trust`.
        AttnvizError: the detector cannot be read or run on the image.
    """
    from attnviz.io.photos import load_image
    from attnviz.options import check_drawing

    check_drawing(size=size, preprocess=preprocess, device=device, alpha=alpha, cmap=cmap)
    check_asff_options(score=score, iou=iou, max_detections=max_detections)
    path = detector_file(det)
    photo = load_image(image)  # a bad image fails before the detector is read

    from attnviz.detection.analysis import analyse_detector
    from attnviz.detection.files import load_detector
    from attnviz.detection.views import asff_view
    from attnviz.loading import resolve_device

    loaded = load_detector(path, trust=trust, device=resolve_device(device))
    analysis = analyse_detector(
        loaded, image, size=size, mode=preprocess, score=score, iou=iou, max_detections=max_detections, image=photo
    )
    return asff_view(analysis, loaded, score=score, cmap=cmap, alpha=alpha)
