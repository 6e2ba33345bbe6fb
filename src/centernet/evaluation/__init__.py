"""Evaluation: KITTI 3D object (the original's evaluator, AP11 / AP40) and Pascal VOC mAP.

KITTI's object type and files are in ``centernet.data.kitti`` (``Objects3D``, ``read_kitti_file``,
``write_kitti_results``).
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
