"""Pascal VOC mAP on hand-computed cases and against a plain per-detection loop."""

from __future__ import annotations

import numpy as np
import pytest

from centernet.evaluation.voc import evaluate_voc, voc_average_precision


def _gt(boxes, labels=None, difficult=None) -> dict:
    n = len(boxes)
    image = {"boxes": np.asarray(boxes, float).reshape(-1, 4), "labels": np.zeros(n, int) if labels is None else labels}
    if difficult is not None:
        image["difficult"] = np.asarray(difficult, bool)
    return image


def _det(boxes, scores, labels=None) -> dict:
    n = len(boxes)
    return {
        "boxes": np.asarray(boxes, float).reshape(-1, 4),
        "scores": np.asarray(scores, float),
        "labels": np.zeros(n, int) if labels is None else labels,
    }


A, B, C = [10, 10, 59, 59], [100, 100, 149, 179], [200, 20, 260, 90]
FAR = [400, 300, 450, 350]


@pytest.mark.parametrize("eleven_point", [True, False])
def test_perfect_detections_score_one(eleven_point: bool) -> None:
    ground_truth = [_gt([A, B]), _gt([C])]
    detections = [_det([A, B], [0.9, 0.8]), _det([C], [0.7])]
    result = evaluate_voc(ground_truth, detections, ["thing"], eleven_point=eleven_point)
    assert result.average_precision["thing"] == 1.0
    assert result.mean_average_precision == 1.0


def test_one_false_positive() -> None:
    # Ranked: FP (0.9), TP (0.8) -> recall [0, 1], precision [0, 0.5]: AP 0.5 in both conventions.
    ground_truth = [_gt([A])]
    detections = [_det([FAR, A], [0.9, 0.8])]
    for eleven_point in (True, False):
        result = evaluate_voc(ground_truth, detections, ["thing"], eleven_point=eleven_point)
        assert result.average_precision["thing"] == pytest.approx(0.5)
    np.testing.assert_allclose(result.precision["thing"], [0.0, 0.5])
    np.testing.assert_allclose(result.recall["thing"], [0.0, 1.0])
    # Ranked after the only true positive, the same false positive costs nothing.
    late = evaluate_voc(ground_truth, [_det([FAR, A], [0.1, 0.8])], ["thing"])
    assert late.average_precision["thing"] == 1.0


def test_duplicate_is_a_false_positive() -> None:
    result = evaluate_voc([_gt([A, B])], [_det([A, A, B], [0.9, 0.8, 0.7])], ["thing"], eleven_point=False)
    np.testing.assert_allclose(result.precision["thing"], [1.0, 0.5, 2 / 3])
    np.testing.assert_allclose(result.recall["thing"], [0.5, 0.5, 1.0])


def test_difficult_objects_are_ignored() -> None:
    ground_truth = [_gt([A, B], difficult=[False, True])]
    # The top-ranked detection hits the difficult object: neither TP nor FP.
    result = evaluate_voc(ground_truth, [_det([B, A], [0.9, 0.8])], ["thing"])
    assert result.num_positives["thing"] == 1
    assert result.average_precision["thing"] == 1.0
    np.testing.assert_allclose(result.precision["thing"], [0.0, 1.0])  # 0 / eps for the ignored one
    # Missing the difficult object does not lower recall.
    assert evaluate_voc(ground_truth, [_det([A], [0.8])], ["thing"]).average_precision["thing"] == 1.0
    # Counted as an ordinary object, the same detections score lower.
    plain = evaluate_voc([_gt([A, B])], [_det([A], [0.8])], ["thing"])
    assert plain.average_precision["thing"] < 1.0


def test_eleven_point_differs_from_all_point() -> None:
    # Ranked TP, FP, TP on two objects: recall [.5, .5, 1], precision [1, .5, 2/3].
    ground_truth = [_gt([A, B])]
    detections = [_det([A, FAR, B], [0.9, 0.8, 0.7])]
    voc07 = evaluate_voc(ground_truth, detections, ["thing"], eleven_point=True).average_precision["thing"]
    voc10 = evaluate_voc(ground_truth, detections, ["thing"], eleven_point=False).average_precision["thing"]
    assert voc07 == pytest.approx((6 * 1.0 + 5 * 2 / 3) / 11)  # recall levels 0..0.5 get 1, 0.6..1 get 2/3
    assert voc10 == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)
    assert voc07 != pytest.approx(voc10)


def test_iou_uses_inclusive_pixels() -> None:
    # GT covers 9 x 10 pixels, the detection 5 x 10: IoU 50 / 90 = 0.56 with VOC's +1
    # (it would be 36 / 72 = 0.5, not a match, in continuous coordinates).
    result = evaluate_voc([_gt([[0, 0, 8, 9]])], [_det([[0, 0, 4, 9]], [0.9])], ["thing"])
    assert result.average_precision["thing"] == 1.0
    # IoU exactly 0.5 (50 / 100) is not a match.
    result = evaluate_voc([_gt([[0, 0, 9, 9]])], [_det([[0, 0, 9, 4]], [0.9])], ["thing"])
    assert result.average_precision["thing"] == 0.0


def test_classes_are_separate_and_classes_without_objects_are_nan() -> None:
    ground_truth = [_gt([A, B], labels=np.array([0, 1]))]
    detections = [_det([A, B], [0.9, 0.8], labels=np.array([0, 0]))]  # B reported as the wrong class
    result = evaluate_voc(ground_truth, detections, ["cat", "dog", "cow"], eleven_point=False)
    assert result.average_precision["cat"] == 1.0
    assert result.average_precision["dog"] == 0.0
    assert np.isnan(result.average_precision["cow"])
    assert result.mean_average_precision == 0.5
    assert "mAP" in result.format_table()


def _loop_reference(ground_truth, detections, num_classes, eleven_point):
    """The VOC procedure written as a plain loop over ranked detections."""
    aps = []
    for label in range(num_classes):
        dets = [
            (score, image, box)
            for image, d in enumerate(detections)
            for box, score, lab in zip(d["boxes"], d["scores"], d["labels"])
            if lab == label
        ]
        dets.sort(key=lambda item: -item[0])  # stable: input order on ties
        taken = {}
        positives = sum(
            int(lab == label and not diff)
            for g in ground_truth
            for lab, diff in zip(g["labels"], g.get("difficult", np.zeros(len(g["labels"]), bool)))
        )
        tp, fp = [], []
        for _, image, box in dets:
            g = ground_truth[image]
            best, best_j = -np.inf, -1
            for j, (gt_box, lab) in enumerate(zip(g["boxes"], g["labels"])):
                if lab != label:
                    continue
                iw = min(box[2], gt_box[2]) - max(box[0], gt_box[0]) + 1
                ih = min(box[3], gt_box[3]) - max(box[1], gt_box[1]) + 1
                inter = max(iw, 0) * max(ih, 0)
                union = (
                    (box[2] - box[0] + 1) * (box[3] - box[1] + 1)
                    + (gt_box[2] - gt_box[0] + 1) * (gt_box[3] - gt_box[1] + 1)
                    - inter
                )
                if inter / union > best:
                    best, best_j = inter / union, j
            difficult = g.get("difficult", np.zeros(len(g["labels"]), bool))
            if best > 0.5:
                if difficult[best_j]:
                    tp.append(0), fp.append(0)
                elif not taken.get((image, best_j)):
                    taken[(image, best_j)] = True
                    tp.append(1), fp.append(0)
                else:
                    tp.append(0), fp.append(1)
            else:
                tp.append(0), fp.append(1)
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        recall = tp / positives
        precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        aps.append(voc_average_precision(recall, precision, eleven_point=eleven_point))
    return aps


@pytest.mark.parametrize("eleven_point", [True, False])
def test_matches_plain_loop_on_random_data(eleven_point: bool) -> None:
    rng = np.random.default_rng(0)
    ground_truth, detections = [], []
    for _ in range(40):
        n = int(rng.integers(0, 6))
        xy = rng.uniform(0, 300, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(10, 80, (n, 2))], axis=1).round()
        ground_truth.append(_gt(boxes, rng.integers(0, 3, n), rng.random(n) < 0.2))
        m = int(rng.integers(0, 8))
        source = rng.integers(0, max(n, 1), m)
        jitter = rng.normal(0, 6, (m, 4))
        det_boxes = (boxes[source] if n else rng.uniform(0, 300, (m, 4))) + jitter
        det_boxes[:, 2:] = np.maximum(det_boxes[:, 2:], det_boxes[:, :2] + 1)
        labels = np.where(rng.random(m) < 0.8, ground_truth[-1]["labels"][source] if n else 0, rng.integers(0, 3, m))
        detections.append(_det(det_boxes, rng.uniform(0, 1, m).round(1), labels))  # 1 decimal: many ties
    result = evaluate_voc(ground_truth, detections, ["a", "b", "c"], eleven_point=eleven_point)
    expected = _loop_reference(ground_truth, detections, 3, eleven_point)
    np.testing.assert_allclose(list(result.average_precision.values()), expected, rtol=0, atol=1e-12)
    assert 0.1 < result.mean_average_precision < 0.99
