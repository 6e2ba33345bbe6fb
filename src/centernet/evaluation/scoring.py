"""Each task's standard metric over a data set's predictions, as one ``EvaluationReport``.

2D boxes: COCO AP through pycocotools (plus Pascal VOC07 mAP on VOC data). Pose: COCO keypoint
OKS AP. 3D: the KITTI evaluator (AP11 and AP40; 2D, AOS, BEV and 3D at the moderate level). A
task's ``score`` picks one of these; predictions map record index -> ``data.results.Results``.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from centernet.data.objects3d import Objects3D
from centernet.data.records import DetectionDataset, ImageRecord
from centernet.data.results import Results
from centernet.data.voc import find_voc_folders
from centernet.evaluation.coco import build_coco_ground_truth, evaluate_coco
from centernet.evaluation.kitti import EVALUATED_CLASSES, METRICS, evaluate_kitti_objects
from centernet.evaluation.voc import evaluate_voc

if TYPE_CHECKING:
    from centernet.tasks.base import Task


@dataclass
class EvaluationReport:
    """A task's metrics: ``stats`` by name, the headline ``primary`` value and a printable ``table``."""

    stats: dict[str, float]
    primary: float
    table: str
    detections: list[dict] = field(default_factory=list, repr=False)

    def stats_for_csv(self) -> dict[str, float]:
        return {k: round(v, 5) for k, v in self.stats.items()}


def score_coco(task: Task, data: DetectionDataset, predictions: Mapping[int, Results], keypoints: bool) -> EvaluationReport:
    """COCO box AP (plus VOC mAP on VOC data) or keypoint OKS AP, on the rows the task writes."""
    gt = build_coco_ground_truth(data.ground_truth(), data.class_names, data.category_ids, keypoints=keypoints)
    rows = coco_results(task, data, predictions)
    metrics = evaluate_coco(gt, rows, "keypoints" if keypoints else "bbox")
    title = "COCO keypoints (OKS)" if keypoints else "COCO boxes"
    stats, table = dict(metrics.stats), f"{title}, {len(data)} images\n{metrics.table}"
    if not keypoints and _is_voc(data):
        voc = _score_voc(data, predictions)
        stats["mAP_voc07"] = voc.mean_average_precision
        table += f"\n\nPascal VOC (IoU 0.5, VOC07 11-point)\n{voc.format_table()}"
    return EvaluationReport(stats, metrics.stats["AP"], table, rows)


def coco_results(task: Task, data: DetectionDataset, predictions: Mapping[int, Results]) -> list[dict]:
    """The COCO results list of ``predictions`` in record order, as the task writes it (the original's rows)."""
    rows: list[dict] = []
    for index, result in sorted(predictions.items()):
        rows += task.coco_rows(result, data.records[index].image_id, data.category_ids)
    return rows


def _is_voc(data: DetectionDataset) -> bool:
    source = Path(data.source) if data.source else None
    return source is not None and source.is_dir() and find_voc_folders(source) is not None


def _score_voc(data: DetectionDataset, predictions: Mapping[int, Results]):
    ground_truth, detections = [], []
    for index, record in enumerate(data.records):
        trained = record.labels >= 0
        ground_truth.append({"boxes": record.boxes[trained], "labels": record.labels[trained], "difficult": record.difficult[trained]})
        result = predictions[index]
        detections.append({"boxes": result.boxes, "labels": result.labels, "scores": result.scores})
    return evaluate_voc(ground_truth, detections, data.class_names)


def score_kitti(data: DetectionDataset, predictions: Mapping[int, Results]) -> EvaluationReport:
    ground_truth, detections = [], []
    for index, record in enumerate(data.records):
        ground_truth.append(_kitti_ground_truth(record))
        result = predictions.get(index)
        if result is None or result.boxes_3d is None or len(result) == 0:
            detections.append(Objects3D.empty())
            continue
        detections.append(
            dataclasses.replace(
                result.boxes_3d,
                types=[data.class_names[int(label)] for label in result.labels],
                boxes=result.boxes,
                scores=np.round(result.scores, 2),  # the original writes 2 decimals
            )
        )
    kitti = evaluate_kitti_objects(ground_truth, detections)
    stats = kitti.as_dict()
    # A class with ground truth but no detection left (all below peak_thresh) scores 0, not nothing.
    labelled = {t.lower() for record in data.records if record.objects_3d is not None for t in record.objects_3d.types}
    for class_name in sorted(labelled & set(EVALUATED_CLASSES)):
        for metric in METRICS:
            for kind in ("ap11", "ap40"):
                stats.setdefault(f"{class_name}/{metric}/moderate/{kind}", 0.0)
    primary = stats.get("car/3d/moderate/ap11", 0.0) / 100.0
    wanted = {k: v for k, v in stats.items() if k.endswith("moderate/ap11") or k.endswith("moderate/ap40")}
    return EvaluationReport(wanted, primary, kitti.format_table())


def _kitti_ground_truth(record: ImageRecord):
    if record.objects_3d is None:
        raise ValueError(f"{record.path}: 3D evaluation needs KITTI labels with 3D fields")
    return dataclasses.replace(record.objects_3d, boxes=record.boxes)
