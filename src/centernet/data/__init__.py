"""Data sets: readers for COCO, VOC, YOLO, KITTI and a built-in synthetic set, one internal representation."""
