"""COCO metrics: in-memory ground truth, results format, perfect and imperfect detections."""
from __future__ import annotations

import numpy as np

from centernet.evaluation.coco import build_coco_ground_truth, detections_to_coco_results, evaluate_coco

IMAGES = [
    {"image_id": 7, "width": 200, "height": 100, "boxes": [[10, 10, 60, 80], [100, 20, 190, 90]], "labels": [0, 1]},
    {"image_id": 9, "width": 200, "height": 100, "boxes": [[30, 30, 90, 70]], "labels": [1]},
]
CATEGORY_IDS = [3, 17]  # sparse, as COCO's 1..90


def _gt():
    return build_coco_ground_truth(IMAGES, ["cat", "dog"], CATEGORY_IDS)


def test_perfect_detections_score_one():
    results = []
    for image in IMAGES:
        n = len(image["labels"])
        results += detections_to_coco_results(image["image_id"], np.array(image["boxes"]), np.ones(n), np.array(image["labels"]), CATEGORY_IDS)
    assert {r["category_id"] for r in results} == {3, 17}
    metrics = evaluate_coco(_gt(), results)
    assert metrics["AP"] == 1.0 and metrics["AP50"] == 1.0
    assert "Average Precision" in metrics.table


def test_missing_and_wrong_class_lower_ap():
    image = IMAGES[0]
    results = detections_to_coco_results(7, np.array(image["boxes"]), np.array([0.9, 0.8]), np.array([0, 0]), CATEGORY_IDS)
    metrics = evaluate_coco(_gt(), results)
    assert 0.0 < metrics["AP"] < 1.0


def test_no_detections_give_zero():
    assert evaluate_coco(_gt(), [])["AP"] == 0.0


def test_keypoint_results_format():
    rows = detections_to_coco_results(1, np.array([[0, 0, 10, 10]]), np.array([0.5]), np.array([0]), [1], keypoints=np.zeros((1, 17, 2)))
    assert len(rows[0]["keypoints"]) == 51 and rows[0]["bbox"] == [0.0, 0.0, 10.0, 10.0]
