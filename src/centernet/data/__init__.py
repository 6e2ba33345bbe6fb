"""Data sets: readers for COCO, VOC, YOLO, KITTI and a built-in synthetic set, one internal representation."""

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
