"""Data: readers, one internal representation, geometry, pre-processing, augmentation and results.

Concern: everything about images and their annotations before a network sees them and after its
detections are mapped back. Readers for COCO, VOC, YOLO, KITTI and a synthetic set
(``coco``, ``voc``, ``yolo``, ``kitti``, ``synthetic``) fill ``records.DetectionDataset``; ``check``
validates a set. Where the paper lives here: the output stride ``R = 4`` and the letterbox input
(``transforms``: ``DOWN_RATIO``, ``InputSpec``); the affine warps between image, input and output map
(``geometry``: ``ImageMeta``, ``get_affine_transform``, ``transform_preds``); the training
augmentation of section 5 (``augment``: random crop/scale, flip, colour jitter); KITTI's 3D boxes and
camera projection (``objects3d``); COCO's keypoints (``keypoints``); per-image detections with drawing
and COCO / YOLO / KITTI rows (``results``, ``visualize``).
"""

from centernet.data.check import check_dataset, load_dataset
from centernet.data.coco import read_coco
from centernet.data.image_io import ImageReadError, image_size, load_image
from centernet.data.kitti import KITTI_CLASSES, read_kitti
from centernet.data.objects3d import Objects3D
from centernet.data.records import DataFormatError, DataIssue, DataReport, DetectionDataset, ImageRecord
from centernet.data.synthetic import SHAPE_CLASSES, SyntheticShapes, synthetic_dataset
from centernet.data.voc import read_voc
from centernet.data.yolo import read_yolo

__all__ = [
    "KITTI_CLASSES",
    "SHAPE_CLASSES",
    "DataFormatError",
    "DataIssue",
    "DataReport",
    "DetectionDataset",
    "ImageReadError",
    "ImageRecord",
    "Objects3D",
    "SyntheticShapes",
    "check_dataset",
    "image_size",
    "load_dataset",
    "load_image",
    "read_coco",
    "read_kitti",
    "read_voc",
    "read_yolo",
    "synthetic_dataset",
]
