"""COCO metrics: in-memory ground truth, results format, perfect and imperfect detections."""
from __future__ import annotations

import numpy as np

from centernet.evaluation.coco import build_coco_ground_truth, evaluate_coco
from centernet.data.results import coco_box_rows

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
        results += coco_box_rows(image["image_id"], np.array(image["boxes"]), np.ones(n), np.array(image["labels"]), CATEGORY_IDS)
    assert {r["category_id"] for r in results} == {3, 17}
    metrics = evaluate_coco(_gt(), results)
    assert metrics["AP"] == 1.0 and metrics["AP50"] == 1.0
    assert "Average Precision" in metrics.table


def test_missing_and_wrong_class_lower_ap():
    image = IMAGES[0]
    results = coco_box_rows(7, np.array(image["boxes"]), np.array([0.9, 0.8]), np.array([0, 0]), CATEGORY_IDS)
    metrics = evaluate_coco(_gt(), results)
    assert 0.0 < metrics["AP"] < 1.0


def test_no_detections_give_zero():
    assert evaluate_coco(_gt(), [])["AP"] == 0.0


def test_box_rows_are_the_originals_two_decimal_rows():
    """Widths are differences taken in float32, then every number is rounded to 2 decimals."""
    [row] = coco_box_rows(5, np.array([[10.123456, 20.0, 30.5, 40.004]]), np.array([0.87654]), np.array([1]), CATEGORY_IDS)
    assert row == {"image_id": 5, "category_id": 17, "bbox": [10.12, 20.0, 20.38, 20.0], "score": 0.88}


def test_results_to_coco_writes_the_rows_val_writes():
    from centernet.data.results import Results
    from centernet.tasks.registry import get_task

    boxes = np.array([[0.0, 0.0, 10.0, 10.0]], np.float32)
    keypoints = np.zeros((1, 17, 3), np.float32)
    pose = Results(boxes, np.array([0.5], np.float32), np.array([0]), ("person",), keypoints=keypoints)
    [row] = pose.to_coco(1)
    assert len(row["keypoints"]) == 51 and row["bbox"] == [0.0, 0.0, 10.0, 10.0] and row["category_id"] == 1
    assert get_task("multi_pose", 1).coco_rows(pose, 1, [1]) == [row]
    boxes_only = Results(boxes, np.array([0.123456], np.float32), np.array([1]), ("cat", "dog"))
    assert boxes_only.to_coco(3, CATEGORY_IDS) == get_task("ctdet", 2).coco_rows(boxes_only, 3, CATEGORY_IDS)
    assert boxes_only.to_coco(3, CATEGORY_IDS)[0]["score"] == 0.12
