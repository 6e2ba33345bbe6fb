"""Evaluation: each task's standard metric, numerically faithful to the tools the paper reports with.

Concern: scoring detections against ground truth. ``coco`` (pycocotools: box AP and keypoint OKS
AP, the paper's tables 1-4), ``voc`` (Pascal VOC07 11-point mAP), ``kitti`` with ``kitti_overlaps``
and ``kitti_matching`` (the KITTI 3D evaluator the original runs: AP11 and AP40 for 2D, AOS, BEV and
3D), and ``scoring``, which turns one task's predictions into an ``EvaluationReport``. KITTI's object
type and files are in ``centernet.data.objects3d`` and ``centernet.data.kitti``.
"""

from centernet.evaluation.kitti import KittiResult, evaluate_kitti, evaluate_kitti_objects
from centernet.evaluation.voc import VocResult, evaluate_voc, voc_average_precision

__all__ = [
    "KittiResult",
    "VocResult",
    "evaluate_kitti",
    "evaluate_kitti_objects",
    "evaluate_voc",
    "voc_average_precision",
]
