"""Evaluation: KITTI 3D object (the original's evaluator, AP11 / AP40) and Pascal VOC mAP."""

from centernet.evaluation.kitti import (
    KittiObjects,
    KittiResult,
    evaluate_kitti,
    evaluate_kitti_objects,
    read_kitti_file,
    write_kitti_results,
)
from centernet.evaluation.voc import VocResult, evaluate_voc, voc_average_precision

__all__ = [
    "KittiObjects",
    "KittiResult",
    "VocResult",
    "evaluate_kitti",
    "evaluate_kitti_objects",
    "evaluate_voc",
    "read_kitti_file",
    "voc_average_precision",
    "write_kitti_results",
]
