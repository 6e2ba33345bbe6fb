"""Pascal VOC detection mAP: per-class AP at IoU 0.5, VOC07 11-point or VOC2010+ all-point.

Follows the VOC devkit and the ``voc_eval.py`` that the original CenterNet runs through
``tools/reval.py``:

- Boxes are (x1, y1, x2, y2) in VOC's inclusive pixel convention: a box covers
  ``x2 - x1 + 1`` pixels horizontally, so widths, heights and intersections get ``+ 1``. This is
  the convention of the VOC annotations and of the overlap the original's evaluation computes;
  ground truth and detections must use the same pixel origin (the original writes detections
  in 1-based pixels, as the annotations are).
- Per class, detections of all images are ranked by score. Each takes the ground truth of its
  image with the largest IoU (the first on ties). With IoU > threshold it is a true positive if
  that object is not yet taken, a false positive if it is taken; if that object is ``difficult``
  the detection counts as neither. Anything else is a false positive. ``difficult`` objects are
  not counted as positives (recall denominator).
- Ties in score keep the input order (images in order, then detections in order); ``voc_eval.py``
  used an unstable sort, so its order among equal scores is arbitrary.
- AP: ``eleven_point=True`` is VOC2007's mean of the best precision at recall >= 0, 0.1, ..., 1
  (what the original reports on VOC 2007 test); ``False`` is the area under the monotone
  precision envelope at every recall change (VOC2010 and later).
- A class without positives has AP ``nan`` and is left out of the mean.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from centernet.data.categories import VOC_CLASSES


def voc_average_precision(recall: np.ndarray, precision: np.ndarray, *, eleven_point: bool) -> float:
    """AP of one precision/recall curve (detections in descending score order).

    Args:
        recall: [M] cumulative recall after each ranked detection, in 0..1.
        precision: [M] cumulative precision after each ranked detection, in 0..1.
        eleven_point: VOC2007 11-point interpolation; otherwise VOC2010+ all-point area.

    Returns:
        AP in 0..1.
    """
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if eleven_point:
        # np.arange(0, 1.1, 0.1) on purpose: its float values (0.30000000000000004, ...) are
        # the recall levels voc_eval.py compares against.
        levels = np.arange(0.0, 1.1, 0.1)
        best = [precision[recall >= level].max(initial=0.0) for level in levels]
        return float(np.mean(best))
    recall = np.concatenate([[0.0], recall, [1.0]])
    envelope = np.maximum.accumulate(np.concatenate([[0.0], precision, [0.0]])[::-1])[::-1]
    changes = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[changes + 1] - recall[changes]) * envelope[changes + 1]))


@dataclass(frozen=True)
class VocResult:
    """Output of :func:`evaluate_voc`.

    Attributes:
        average_precision: class name -> AP in 0..1 (``nan`` without positives).
        recall: class name -> [M] recall after each ranked detection.
        precision: class name -> [M] precision after each ranked detection.
        num_positives: class name -> number of non-difficult ground-truth objects.
        eleven_point: whether AP is the VOC2007 11-point one.
    """

    average_precision: Mapping[str, float]
    recall: Mapping[str, np.ndarray]
    precision: Mapping[str, np.ndarray]
    num_positives: Mapping[str, int]
    eleven_point: bool

    @property
    def mean_average_precision(self) -> float:
        """Mean AP over the classes that have positives (``nan`` if none has)."""
        values = [ap for ap in self.average_precision.values() if not np.isnan(ap)]
        return float(np.mean(values)) if values else float("nan")

    def format_table(self) -> str:
        """One line per class with its AP in percent, then the mAP."""
        kind = "VOC07 11-point" if self.eleven_point else "VOC2010+ all-point"
        width = max(len(name) for name in [*self.average_precision, "mAP"]) + 2
        lines = [f"Pascal VOC AP ({kind}, %)"]
        lines += [f"{name:<{width}}{100 * ap:7.2f}" for name, ap in self.average_precision.items()]
        lines.append(f"{'mAP':<{width}}{100 * self.mean_average_precision:7.2f}")
        return "\n".join(lines)


def _inclusive_iou(boxes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """[P] IoU of paired [P, 4] boxes with VOC's inclusive pixels (+1 to every extent)."""
    width = np.maximum(np.minimum(boxes[:, 2], others[:, 2]) - np.maximum(boxes[:, 0], others[:, 0]) + 1.0, 0.0)
    height = np.maximum(np.minimum(boxes[:, 3], others[:, 3]) - np.maximum(boxes[:, 1], others[:, 1]) + 1.0, 0.0)
    inter = width * height
    area = (boxes[:, 2] - boxes[:, 0] + 1.0) * (boxes[:, 3] - boxes[:, 1] + 1.0)
    other_area = (others[:, 2] - others[:, 0] + 1.0) * (others[:, 3] - others[:, 1] + 1.0)
    return inter / (area + other_area - inter)


def _rank_outcomes(
    det_image: np.ndarray,
    det_boxes: np.ndarray,
    gt_image: np.ndarray,
    gt_boxes: np.ndarray,
    gt_difficult: np.ndarray,
    iou_threshold: float,
) -> tuple[np.ndarray, np.ndarray]:
    """True / false positive flags of one class's detections, given in ranked order.

    Args:
        det_image: [M] image index of each detection, ranked by descending score.
        det_boxes: [M, 4] their boxes.
        gt_image: [N] image index of each ground-truth object, sorted.
        gt_boxes: [N, 4] their boxes.
        gt_difficult: [N] bool.
        iou_threshold: a match needs IoU strictly above it.

    Returns:
        ([M] bool true positive, [M] bool false positive); a detection on a difficult object
        is neither.
    """
    num_images = int(max(det_image.max(initial=-1), gt_image.max(initial=-1))) + 1
    gt_counts = np.bincount(gt_image, minlength=num_images)
    gt_starts = np.cumsum(gt_counts) - gt_counts
    # Every (detection, ground truth of the same image) pair, grouped by detection.
    per_det = gt_counts[det_image]
    pair_det = np.repeat(np.arange(len(det_image)), per_det)
    pair_start = np.cumsum(per_det) - per_det
    pair_gt = gt_starts[det_image][pair_det] + np.arange(len(pair_det)) - np.repeat(pair_start, per_det)
    iou = _inclusive_iou(det_boxes[pair_det], gt_boxes[pair_gt])

    has_gt = per_det > 0
    starts = pair_start[has_gt]
    best_iou = np.full(len(det_image), -np.inf)
    best_gt = np.full(len(det_image), -1)
    if len(iou):
        best_iou[has_gt] = np.maximum.reduceat(iou, starts)
        is_best = iou == best_iou[pair_det]
        first = np.minimum.reduceat(np.where(is_best, np.arange(len(iou)), len(iou)), starts)
        best_gt[has_gt] = pair_gt[first]

    hit = best_iou > iou_threshold
    on_difficult = hit & gt_difficult[np.maximum(best_gt, 0)]
    claims = hit & ~on_difficult
    # Only the highest-ranked detection claiming an object gets it; later claims are duplicates.
    first_claim = np.zeros(len(det_image), dtype=bool)
    claimed = np.flatnonzero(claims)
    _, first_index = np.unique(best_gt[claimed], return_index=True)
    first_claim[claimed[first_index]] = True
    true_positive = first_claim
    false_positive = ~hit | (claims & ~first_claim)
    return true_positive, false_positive


def _stack_images(
    images: Sequence[Mapping[str, np.ndarray]], extra: str, *, optional: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Concatenates per-image ``boxes``, ``labels`` and ``extra`` (zeros if ``optional`` and absent).

    Returns:
        [K] image index, [K, 4] float64 boxes, [K] int labels, [K] float64 ``extra``.
    """
    labels = [np.asarray(image["labels"], dtype=np.int64).reshape(-1) for image in images]
    counts = [len(lab) for lab in labels]
    boxes = [np.asarray(image["boxes"], dtype=np.float64).reshape(-1, 4) for image in images]
    extras = [
        np.asarray(np.zeros(n) if optional and extra not in image else image[extra], dtype=np.float64).reshape(-1)
        for image, n in zip(images, counts)
    ]
    return (
        np.repeat(np.arange(len(images)), counts),
        np.concatenate([np.zeros((0, 4)), *boxes]),
        np.concatenate([np.zeros(0, dtype=np.int64), *labels]),
        np.concatenate([np.zeros(0), *extras]),
    )


def evaluate_voc(
    ground_truth: Sequence[Mapping[str, np.ndarray]],
    detections: Sequence[Mapping[str, np.ndarray]],
    class_names: Sequence[str] = VOC_CLASSES,
    *,
    iou_threshold: float = 0.5,
    eleven_point: bool = True,
) -> VocResult:
    """Per-class AP and mAP over a set of images.

    Args:
        ground_truth: per image ``{"boxes": [N, 4], "labels": [N] int}`` and optionally
            ``"difficult": [N] bool``; boxes in inclusive pixels (x1, y1, x2, y2).
        detections: per image (same order) ``{"boxes": [M, 4], "labels": [M] int,
            "scores": [M] float}``.
        class_names: name of each label index (labels are 0-based indices into it).
        iou_threshold: a match needs IoU strictly above it (0.5 in VOC).
        eleven_point: VOC2007 11-point AP (the original's VOC number); ``False`` for VOC2010+.

    Returns:
        Per-class AP, curves and positives.
    """
    if len(ground_truth) != len(detections):
        raise ValueError(f"{len(ground_truth)} ground-truth images but {len(detections)} detection images")

    gt_image, gt_boxes, gt_labels, gt_difficult = _stack_images(ground_truth, "difficult", optional=True)
    det_image, det_boxes, det_labels, det_scores = _stack_images(detections, "scores", optional=False)
    gt_difficult = gt_difficult.astype(bool)

    average_precision, recalls, precisions, positives = {}, {}, {}, {}
    for label, name in enumerate(class_names):
        g = gt_labels == label
        d = np.flatnonzero(det_labels == label)
        ranked = d[np.argsort(-det_scores[d], kind="stable")]
        true_positive, false_positive = _rank_outcomes(
            det_image[ranked], det_boxes[ranked], gt_image[g], gt_boxes[g], gt_difficult[g], iou_threshold
        )
        num_positives = int(np.sum(~gt_difficult[g]))
        tp, fp = np.cumsum(true_positive), np.cumsum(false_positive)
        precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        recall = tp / num_positives if num_positives else np.zeros(len(tp))
        recalls[name], precisions[name], positives[name] = recall, precision, num_positives
        average_precision[name] = (
            voc_average_precision(recall, precision, eleven_point=eleven_point) if num_positives else float("nan")
        )
    return VocResult(average_precision, recalls, precisions, positives, eleven_point)


__all__ = ["VOC_CLASSES", "VocResult", "evaluate_voc", "voc_average_precision"]
