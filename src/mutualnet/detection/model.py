"""Mask R-CNN with FPN on a slimmable backbone: one detector, any (width, input scale).

The detector is torchvision's :class:`~torchvision.models.detection.MaskRCNN`; only the backbone (and the
FPN's lateral convolutions, see :mod:`.backbone`) is slimmable. A *configuration* is a backbone width and an
input scale (the short side the images are resized to, the long side capped at ``max_size``). Both live
in the shared slim state like a classifier's (width, resolution): ``mutualnet.use_config(detector, w, s)``
or :meth:`SlimmableMaskRCNN.set_config` switch them, the forward hands the scale to torchvision's
``GeneralizedRCNNTransform``, and BatchNorm statistics calibrated for a configuration are keyed by
(width, scale) -- e.g. ``w0.250_r480`` -- whatever the padded shape of a particular batch is.

BatchNorm: the backbone's slimmable BN normalises with batch statistics while training (as in MutualNet's
classification training, which the paper says detection follows). Frozen statistics -- the common detection
practice -- would be one shared set of statistics for every width, and a narrow sub-network's statistics
differ from the slice of the widest one's (the reason MutualNet re-calibrates BN at all); widths are sampled
continuously, so there is no fixed set of configurations to freeze statistics for either. After training,
:func:`mutualnet.detection.evaluate.calibrate_detector` estimates exact statistics for each evaluated
(width, scale) from training images, and evaluation uses them.
"""

from __future__ import annotations

import os
from typing import Any

from torch import Tensor
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead

from ..checkpoint import load_checkpoint, load_weights
from ..errors import MutualNetError
from ..layers import set_config
from ..models import create_model, list_models
from .backbone import SlimmableBackboneWithFPN

__all__ = ["SlimmableMaskRCNN", "build_detector", "detector_from_checkpoint", "load_backbone_weights",
           "DETECTION_BACKBONES", "TASK"]

TASK = "detection"
DETECTION_BACKBONES = ("vgg16_bn", "resnet50")


class SlimmableMaskRCNN(MaskRCNN):
    """torchvision's Mask R-CNN whose backbone runs at any width in ``width_range``.

    Attributes:
        width_range: Widths the backbone supports (checked by :func:`mutualnet.set_width`).
        scales: Short sides of the input, largest first (training samples them per sub-network).
        max_size: Cap on the long side of the resized input.
        detector_args: Keyword arguments of :func:`build_detector` that rebuild this detector.
    """

    min_resolution = 32  # the smallest scale a stride-32 backbone takes

    def __init__(self, backbone: SlimmableBackboneWithFPN, num_classes: int, *, scales: tuple[int, ...],
                 max_size: int, **kwargs: Any) -> None:
        super().__init__(backbone, num_classes, min_size=scales[0], max_size=max_size, **kwargs)
        self.slim_state = backbone.slim_state
        self.width_range = backbone.width_range
        self.scales = tuple(int(s) for s in scales)
        self.max_size = int(max_size)
        self.detector_args: dict[str, Any] = {}
        self.set_config(self.width_range[1], self.scales[0])

    @property
    def width(self) -> float:
        return self.slim_state.width

    @property
    def scale(self) -> int:
        return int(self.slim_state.resolution)

    def set_config(self, width: float, scale: int, max_size: int | None = None) -> SlimmableMaskRCNN:
        """Run at backbone ``width`` on images resized to short side ``scale`` (long side <= ``max_size``)."""
        scale = int(scale)
        if scale < self.min_resolution:
            raise MutualNetError(f"input scale {scale} is too small for a detector with a stride-32 backbone")
        set_config(self, width, scale)
        if max_size is not None:
            self.max_size = int(max_size)
        return self

    def preprocess(self, images: list[Tensor], targets: list[dict] | None = None):  # noqa: ANN201
        """torchvision's transform (resize to the active scale, normalise, pad): ``(ImageList, targets)``."""
        self.transform.min_size, self.transform.max_size = (self.scale,), self.max_size
        return self.transform(images, targets)

    def backbone_features(self, images: list[Tensor]) -> dict[str, Tensor]:
        """The FPN features of ``images`` at the active configuration (what BN calibration runs)."""
        return self.backbone(self.preprocess(images)[0].tensors)

    def forward(self, images: list[Tensor], targets: list[dict] | None = None):  # noqa: ANN201
        self.transform.min_size, self.transform.max_size = (self.scale,), self.max_size
        return super().forward(images, targets)


def build_detector(
    backbone: str = "vgg16_bn",
    num_classes: int = 91,
    *,
    width_range: tuple[float, float] = (0.25, 1.0),
    scales: tuple[int, ...] = (600, 480, 360, 240),
    max_size: int = 1000,
    fpn_channels: int = 256,
    representation_size: int = 1024,
    mask_layers: tuple[int, ...] = (256, 256, 256, 256),
    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512),
    return_stages: list[int] | None = None,
    rpn_batch_size_per_image: int = 256,
    box_batch_size_per_image: int = 512,
    rpn_pre_nms_top_n_train: int = 2000,
    rpn_post_nms_top_n_train: int = 2000,
    rpn_pre_nms_top_n_test: int = 1000,
    rpn_post_nms_top_n_test: int = 1000,
    box_detections_per_img: int = 100,
) -> SlimmableMaskRCNN:
    """Mask R-CNN + FPN on a slimmable ``backbone`` (``vgg16_bn`` as in the paper, or ``resnet50``).

    Args:
        backbone: Registered model name; any model with at least 4 stages of stride >= 4 works.
        num_classes: Object classes including background (COCO: 91 ids incl. background).
        width_range: Backbone widths; sub-networks are sampled in it.
        scales: Input short sides, largest first (paper: 600, 480, 360, 240).
        max_size: Long-side cap (paper: 1000).
        fpn_channels, representation_size, mask_layers: Widths of the shared FPN and heads (torchvision's
            defaults 256 / 1024 / 4x256; smaller for tests).
        anchor_sizes: One anchor size per FPN level (5 levels: 4 stages + the max-pooled one).
        return_stages: Backbone stages the FPN reads (default: the last four with stride >= 4).
        rpn_*, box_*: torchvision's sampling and proposal counts.
    """
    if backbone not in list_models():
        raise MutualNetError(f"unknown backbone {backbone!r}; detection supports {', '.join(DETECTION_BACKBONES)} "
                             "(any registered model with four stages of stride >= 4 may work)")
    scales = tuple(sorted({int(s) for s in scales}, reverse=True))
    if not scales:
        raise MutualNetError("scales must list at least one input short side")
    lo, hi = (float(v) for v in width_range)
    args = dict(backbone=backbone, num_classes=int(num_classes), width_range=[lo, hi], scales=list(scales),
                max_size=int(max_size), fpn_channels=int(fpn_channels), representation_size=int(representation_size),
                mask_layers=[int(c) for c in mask_layers], anchor_sizes=[int(a) for a in anchor_sizes],
                return_stages=None if return_stages is None else [int(i) for i in return_stages],
                rpn_batch_size_per_image=rpn_batch_size_per_image, box_batch_size_per_image=box_batch_size_per_image,
                rpn_pre_nms_top_n_train=rpn_pre_nms_top_n_train, rpn_post_nms_top_n_train=rpn_post_nms_top_n_train,
                rpn_pre_nms_top_n_test=rpn_pre_nms_top_n_test, rpn_post_nms_top_n_test=rpn_post_nms_top_n_test,
                box_detections_per_img=box_detections_per_img)
    body = create_model(backbone, width_range=(lo, hi))
    fpn_backbone = SlimmableBackboneWithFPN(body, return_stages, fpn_channels)
    n_levels = len(fpn_backbone.return_stages) + 1  # + LastLevelMaxPool
    if len(anchor_sizes) != n_levels:
        raise MutualNetError(f"anchor_sizes needs one size per FPN level ({n_levels}), got {len(anchor_sizes)}")
    anchors = AnchorGenerator(tuple((int(a),) for a in anchor_sizes), ((0.5, 1.0, 2.0),) * n_levels)
    rpn_head = RPNHead(fpn_channels, anchors.num_anchors_per_location()[0], conv_depth=1)
    box_head = TwoMLPHead(fpn_channels * 7 * 7, representation_size)
    box_predictor = FastRCNNPredictor(representation_size, num_classes)
    mask_head = MaskRCNNHeads(fpn_channels, tuple(mask_layers), 1)
    mask_predictor = MaskRCNNPredictor(mask_layers[-1], mask_layers[-1], num_classes)
    model = SlimmableMaskRCNN(
        fpn_backbone, None, scales=scales, max_size=max_size, rpn_anchor_generator=anchors, rpn_head=rpn_head,
        box_head=box_head, box_predictor=box_predictor, mask_head=mask_head, mask_predictor=mask_predictor,
        rpn_batch_size_per_image=rpn_batch_size_per_image, box_batch_size_per_image=box_batch_size_per_image,
        rpn_pre_nms_top_n_train=rpn_pre_nms_top_n_train, rpn_post_nms_top_n_train=rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=rpn_pre_nms_top_n_test, rpn_post_nms_top_n_test=rpn_post_nms_top_n_test,
        box_detections_per_img=box_detections_per_img)
    model.detector_args = args
    model.model_name, model.model_args = f"maskrcnn_{backbone}", args  # what checkpoint_dict describes
    return model


def load_backbone_weights(model: SlimmableMaskRCNN, path: str | os.PathLike) -> list[str]:
    """Initialise the backbone from a mutualnet classification checkpoint or a torchvision state dict.

    Classifier weights are ignored (the detector has none). Returns the backbone keys left at their
    initialisation (empty when everything was loaded). A torchvision ``vgg16_bn`` / ``resnet50`` state dict
    (``torch.save(tv_model.state_dict(), path)``) maps 1:1 onto the width-1.0 backbone.
    """
    path = os.fspath(path)
    state, name = load_weights(path)
    if name is not None and name != model.detector_args.get("backbone"):
        raise MutualNetError(f"{path} holds a {name}, but the detector's backbone is "
                             f"{model.detector_args.get('backbone')}")
    body = model.backbone.body
    own = body.state_dict()
    wanted = {k: v for k, v in state.items() if k in own}
    if not wanted:
        raise MutualNetError(f"no weights in {path} match the {model.detector_args.get('backbone')} backbone")
    for k, v in wanted.items():
        if own[k].shape != v.shape:
            raise MutualNetError(f"backbone weight {k} has shape {tuple(v.shape)} in {path}, expected "
                                 f"{tuple(own[k].shape)} (was it trained for another width range?)")
    body.load_state_dict(wanted, strict=False)
    return [k for k in own if k not in wanted]


def detector_from_checkpoint(ckpt: dict | str | os.PathLike, *, map_location: str = "cpu") -> SlimmableMaskRCNN:
    """Rebuild a detector from a checkpoint written by :mod:`mutualnet.detection.train`."""
    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt, map_location=map_location)
    if ckpt.get("task") != TASK:
        raise MutualNetError("checkpoint holds a classifier, not a detector; use `mutualnet detect train` to make one")
    args = dict(ckpt["model_args"])
    args["width_range"] = tuple(args["width_range"])
    args["scales"] = tuple(args["scales"])
    args["mask_layers"] = tuple(args["mask_layers"])
    args["anchor_sizes"] = tuple(args["anchor_sizes"])
    model = build_detector(**args)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise MutualNetError(f"checkpoint weights do not match the detector they describe: "
                             f"{(first[1] if len(first) > 1 else first[0]).strip()[:300]}") from None
    return model


