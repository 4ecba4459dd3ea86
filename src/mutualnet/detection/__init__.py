"""Detection and instance segmentation: Mask R-CNN + FPN on a slimmable backbone (MutualNet, Sec. 4.4).

    backbone.py   slimmable backbone + torchvision FPN with slimmable lateral convolutions
    model.py      SlimmableMaskRCNN (torchvision's MaskRCNN), build / rebuild from a checkpoint
    data.py       COCO-format dataset (annotation JSON + image folder)
    train.py      sandwich-rule training, one input scale per sub-network
    evaluate.py   BN calibration, COCO box / mask AP per (width, scale), MACs, the AP-MFLOPs query table
"""

from .backbone import SlimmableBackboneWithFPN
from .data import CocoDetection, collate, load_coco
from .evaluate import (
    calibrate_detector,
    coco_eval,
    coco_results,
    describe_detection_table,
    detector_macs,
    evaluate_coco,
    evaluate_grid,
    run_eval,
)
from .model import SlimmableMaskRCNN, build_detector, detector_from_checkpoint, load_backbone_weights
from .train import DetectionConfig, detection_step, train_detector, train_or_resume

__all__ = ["train_or_resume",
           "SlimmableBackboneWithFPN", "CocoDetection", "collate", "load_coco", "calibrate_detector", "coco_eval",
           "coco_results", "detector_macs", "evaluate_coco", "evaluate_grid", "run_eval",
           "describe_detection_table",
           "SlimmableMaskRCNN", "build_detector", "detector_from_checkpoint", "load_backbone_weights",
           "DetectionConfig", "detection_step", "train_detector"]
