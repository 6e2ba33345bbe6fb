"""COCO metrics through pycocotools: the 12 standard numbers for boxes, 10 for keypoints."""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

BBOX_STAT_NAMES = (
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)
KEYPOINT_STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


@dataclass
class CocoMetrics:
    """The pycocotools summary: ``stats`` by name (fractions in 0..1, -1 where undefined) and the table."""

    stats: dict[str, float]
    table: str

    def __getitem__(self, name: str) -> float:
        return self.stats[name]


def build_coco_ground_truth(
    images: Iterable[dict],
    category_names: Sequence[str],
    category_ids: Sequence[int] | None = None,
    keypoints: bool = False,
) -> COCO:
    """An in-memory pycocotools ``COCO`` from per-image ground truth.

    Args:
        images: dicts with ``image_id`` (int), ``width``, ``height``, ``boxes`` ``[N, 4]`` xyxy
            image pixels, ``labels`` ``[N]`` 0-based class indices, optional ``crowd`` ``[N]``
            bool (COCO ``iscrowd``: matched without penalty) and, with ``keypoints``,
            ``keypoints`` ``[N, 17, 3]``.
        category_names: class names in label order.
        category_ids: the COCO category id of each label (default ``1..C``).
    """
    ids = list(category_ids) if category_ids is not None else list(range(1, len(category_names) + 1))
    dataset: dict = {"images": [], "annotations": [], "categories": []}
    for cid, name in zip(ids, category_names):
        dataset["categories"].append({"id": int(cid), "name": str(name)})
    ann_id = 1
    for image in images:
        dataset["images"].append(
            {"id": int(image["image_id"]), "width": int(image["width"]), "height": int(image["height"])}
        )
        boxes = np.asarray(image["boxes"], dtype=np.float64).reshape(-1, 4)
        labels = np.asarray(image["labels"], dtype=np.int64).reshape(-1)
        crowd = np.asarray(image.get("crowd", np.zeros(len(boxes), bool)), dtype=bool).reshape(-1)
        kps = image.get("keypoints")
        for i, (box, label) in enumerate(zip(boxes, labels)):
            w, h = float(box[2] - box[0]), float(box[3] - box[1])
            ann = {
                "id": ann_id,
                "image_id": int(image["image_id"]),
                "category_id": int(ids[int(label)]),
                "bbox": [float(box[0]), float(box[1]), w, h],
                "area": w * h,
                "iscrowd": int(crowd[i]),
            }
            if keypoints and kps is not None:
                joints = np.asarray(kps[i], dtype=np.float64).reshape(-1, 3)
                ann["keypoints"] = joints.reshape(-1).tolist()
                ann["num_keypoints"] = int((joints[:, 2] > 0).sum())
            dataset["annotations"].append(ann)
            ann_id += 1
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def evaluate_coco(coco_gt: COCO, results: list[dict], iou_type: str = "bbox") -> CocoMetrics:
    """Run ``COCOeval`` (``bbox`` or ``keypoints``) on every image of ``coco_gt``.

    Images without detections count as misses; an empty ``results`` gives all-zero stats.
    """
    names = BBOX_STAT_NAMES if iou_type == "bbox" else KEYPOINT_STAT_NAMES
    if not results:
        return CocoMetrics({name: 0.0 for name in names}, "no detections")
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, coco_dt, iou_type)
        evaluator.params.imgIds = sorted(coco_gt.getImgIds())
        evaluator.evaluate()
        evaluator.accumulate()
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        evaluator.summarize()
    stats = {name: float(value) for name, value in zip(names, evaluator.stats)}  # -1: no ground truth in that range
    return CocoMetrics(stats, summary.getvalue().rstrip())
