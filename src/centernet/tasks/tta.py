"""Test-time augmentation maths: Gaussian soft-NMS and the merge of several test scales.

The driver that runs the scales is ``models.predictor.Predictor``; the tasks' ``merge_outputs`` call
``merge_ctdet`` / ``merge_multi_pose``.

Everything here reproduces what the original CenterNet does at test time with ``--test_scales``,
``--flip_test``, ``--nms`` and ``--keep_res`` (``BaseDetector.run``, ``CtdetDetector.merge_outputs``,
``MultiPoseDetector.merge_outputs`` and the compiled ``external/nms.pyx``), including the behaviours
that are arguably bugs but shape the published numbers:

* soft-NMS works in place and the detectors ignore the number of survivors it returns, so rows left
  past the live range (stale copies of moved rows, dropped rows) still take part in the final cut;
* the top-``max_per_image`` cut keeps every row tied with the threshold score;
* scores already below the threshold are only dropped when they overlap a higher box.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

# Boxes per image the original keeps after merging 2D detections (``BaseDetector.max_per_image``).
MAX_PER_IMAGE = 100

# Soft-NMS overlap re-scoring, as the original's ``method`` argument numbers them.
HARD_NMS, LINEAR_NMS, GAUSSIAN_NMS = 0, 1, 2


def soft_nms(
    boxes: np.ndarray,
    sigma: float = 0.5,
    Nt: float = 0.3,  # the original's argument name
    threshold: float = 0.001,
    method: int = GAUSSIAN_NMS,
) -> int:
    """Soft-NMS in place, bit for bit as the original's compiled ``soft_nms`` / ``soft_nms_39``.

    Rows are selected greedily: at step ``i`` the first row with the largest score among the live
    rows ``i..N-1`` is swapped into row ``i``, then every later live row overlapping it has its score
    multiplied by a weight of their IoU (boxes use the +1 pixel convention: width ``x2 - x1 + 1``).
    A row whose decayed score falls below ``threshold`` is dropped: columns 0-4 of the last live row
    are *copied* over it and the live count shrinks; columns 5 and beyond (the keypoints of
    ``soft_nms_39``) are *swapped* with the last live row. A row that does not overlap the selected
    box is neither decayed nor tested, so scores that start below ``threshold`` survive unless they
    overlap a higher box.

    The arithmetic follows the generated C: float32 coordinates and scores, the ``+ 1`` and the area
    products in float64 rounded to float32 where the original stores them, ``exp`` in float64.

    The decay of one step is computed for all live rows in one vector operation (each row's new score
    depends only on the selected box and itself); only the drops are then replayed one by one, since
    they move rows.

    Args:
        boxes: ``[N, 5 + E]`` float32 rows ``[x1, y1, x2, y2, score, extra...]``, modified in place.
            CenterNet passes ``E = 0`` (2D boxes of one class) or ``E = 34`` (17 joints ``x, y``).
        sigma: Gaussian width for ``method`` 2, weight ``exp(-iou^2 / sigma)``.
        Nt: IoU threshold of the linear (1) and hard (0) methods; unused by the Gaussian method.
        threshold: rows decayed below this score are dropped.
        method: 0 hard NMS, 1 linear, 2 Gaussian (what CenterNet uses).

    Returns:
        ``n``, the number of surviving rows: rows ``0..n-1`` hold them in selection order (scores
        non-increasing). Rows ``n..N-1`` are left-overs (the original returns ``list(range(n))``).
    """
    if not isinstance(boxes, np.ndarray) or boxes.dtype != np.float32 or boxes.ndim != 2 or boxes.shape[1] < 5:
        raise ValueError(f"soft_nms needs a float32 [N, 5+] array, got {getattr(boxes, 'dtype', type(boxes))} "
                         f"{getattr(boxes, 'shape', '')}")
    if method not in (HARD_NMS, LINEAR_NMS, GAUSSIAN_NMS):
        raise ValueError(f"unknown soft-NMS method {method}")
    sigma32, nt32, threshold32 = np.float32(sigma), np.float32(Nt), np.float32(threshold)
    total = boxes.shape[0]
    # Work on contiguous columns; extra columns only ever swap, so they follow a permutation.
    columns = np.ascontiguousarray(boxes[:, :5].T)
    extra_order = np.arange(total)
    live = total
    for i in range(total):
        if i + 1 >= live:
            break
        window = columns[4, i:live]
        offset = int(window.argmax())  # the first maximum wins, as in the original's scan
        if math.isnan(window[offset]):  # argmax stops at a NaN; the original's "<" scan never picks one
            offset = 0 if math.isnan(window[0]) else int(np.nanargmax(window))
        best = i + offset
        if best != i:
            selected = columns[:, best].copy()
            columns[:, best] = columns[:, i]
            columns[:, i] = selected
            extra_order[i], extra_order[best] = extra_order[best], extra_order[i]
        live = i + 1 + _decay_and_drop(
            columns[:, i], columns[:, i + 1:live], extra_order[i + 1:live], sigma32, nt32, threshold32, method
        )
    boxes[:, :5] = columns.T
    if boxes.shape[1] > 5:
        boxes[:, 5:] = boxes[extra_order, 5:]
    return live


def _decay_and_drop(
    selected: np.ndarray,
    rows: np.ndarray,
    extra_order: np.ndarray,
    sigma: np.float32,
    nt: np.float32,
    threshold: np.float32,
    method: int,
) -> int:
    """One soft-NMS step: decay the live rows after the selected one, then replay the drops.

    Args:
        selected: ``[5]`` the selected box and score.
        rows: ``[5, n]`` view of the live rows after it (columns), modified in place.
        extra_order: ``[n]`` view: input row whose extra columns sit at each position, modified.
        sigma, nt, threshold, method: as :func:`soft_nms`.

    Returns:
        The number of rows still live at the front of ``rows``.
    """
    tx1, ty1, tx2, ty2 = selected[0], selected[1], selected[2], selected[3]
    x1, y1, x2, y2, scores = rows
    inter_w = np.minimum(tx2, x2) - np.maximum(tx1, x1) + np.float32(1)
    inter_h = np.minimum(ty2, y2) - np.maximum(ty1, y1) + np.float32(1)
    overlapping = ((inter_w > 0) & (inter_h > 0)).nonzero()[0]
    if overlapping.size == 0:
        return scores.shape[0]
    inter_w, inter_h = inter_w[overlapping], inter_h[overlapping]
    x1, y1, x2, y2 = x1[overlapping], y1[overlapping], x2[overlapping], y2[overlapping]
    # The C code evaluates "+ 1" and the area products in double and rounds where it stores.
    area = (((x2 - x1).astype(np.float64) + 1.0) * ((y2 - y1).astype(np.float64) + 1.0)).astype(np.float32)
    selected_area = (np.float64(tx2 - tx1) + 1.0) * (np.float64(ty2 - ty1) + 1.0)
    intersection = inter_w * inter_h
    union = (selected_area + area.astype(np.float64) - intersection.astype(np.float64)).astype(np.float32)
    if not union.all():
        raise ZeroDivisionError("float division: soft-NMS union area is 0 (degenerate inverted boxes)")
    iou = intersection / union
    if method == GAUSSIAN_NMS:
        weight = np.exp((-(iou * iou) / sigma).astype(np.float64)).astype(np.float32)
    elif method == LINEAR_NMS:
        weight = np.where(iou > nt, np.float32(1) - iou, np.float32(1))
    else:
        weight = np.where(iou > nt, np.float32(0), np.float32(1))
    decayed = weight * scores[overlapping]
    below = decayed < threshold
    if not below.any():
        scores[overlapping] = decayed
        return scores.shape[0]
    undecayed = scores.copy()
    scores[overlapping] = decayed
    return _replay_drops(rows, extra_order, overlapping[below].tolist(), undecayed)


def _replay_drops(rows: np.ndarray, extra_order: np.ndarray, dropped: list[int], undecayed: np.ndarray) -> int:
    """Replay the original's drops of one step on rows whose scores are already decayed.

    The original walks ``pos`` forward; a dropped row is overwritten by the last live row, which is
    then examined at ``pos`` (it had not been visited yet). The physical last row stays behind with
    the score it had before this step; a row dropped when it is itself the last live row keeps its
    decayed score. Only drop events cost Python work.

    Args:
        rows: ``[5, n]`` live rows after the selected one (columns), scores already decayed.
        extra_order: ``[n]`` input row of the extra columns at each position.
        dropped: ascending positions whose (original) row falls below the threshold.
        undecayed: ``[n]`` the scores before this step.

    Returns:
        The number of live rows left.
    """
    is_dropped = set(dropped)
    end = rows.shape[1]
    for pos in dropped:
        if pos >= end:
            break
        while True:
            end -= 1
            if end == pos:
                break
            rows[:, pos] = rows[:, end]
            rows[4, end] = undecayed[end]
            extra_order[pos], extra_order[end] = extra_order[end], extra_order[pos]
            if end not in is_dropped:
                break
    return end


def merge_ctdet(
    per_scale_results: Sequence[Mapping[int, np.ndarray]],
    num_classes: int,
    max_per_image: int = MAX_PER_IMAGE,
    nms: bool = False,
) -> dict[int, np.ndarray]:
    """Merge 2D detections of several scales as the original ``CtdetDetector.merge_outputs``.

    Per class the rows of all scales are concatenated in scale order; with more than one scale or
    ``nms`` Gaussian soft-NMS (sigma 0.5) runs in place on each class and *all* its rows are kept,
    left-overs included. Then, if more than ``max_per_image`` rows remain over all classes, every
    row scoring at least the ``max_per_image``-th largest score is kept (ties at the cut are all
    kept, so more rows can come out); otherwise nothing is cut.

    Args:
        per_scale_results: one dict per scale, 1-based class id -> ``[n, 5]`` rows
            ``[x1, y1, x2, y2, score]`` in original image pixels.
        num_classes: number of classes ``C``; classes absent from a dict count as empty.
        max_per_image: rows kept over all classes (100 in the original, not an option there).
        nms: the original ``--nms`` flag: soft-NMS even for a single scale.

    Returns:
        1-based class id -> ``[n_j, 5]`` float32 rows, every class ``1..C`` present.
    """
    apply_soft_nms = len(per_scale_results) > 1 or nms
    results: dict[int, np.ndarray] = {}
    for cls in range(1, num_classes + 1):
        parts = [np.asarray(scale.get(cls, np.zeros((0, 5), np.float32)), np.float32).reshape(-1, 5)
                 for scale in per_scale_results]
        merged = np.concatenate(parts, axis=0) if parts else np.zeros((0, 5), np.float32)
        if apply_soft_nms:
            soft_nms(merged, sigma=0.5, Nt=0.5, threshold=0.001, method=GAUSSIAN_NMS)
        results[cls] = merged
    scores = np.concatenate([results[cls][:, 4] for cls in results]) if results else np.zeros(0, np.float32)
    if scores.size > max_per_image:
        kth = scores.size - max_per_image
        thresh = np.partition(scores, kth)[kth]
        results = {cls: rows[rows[:, 4] >= thresh] for cls, rows in results.items()}
    return results


def merge_multi_pose(per_scale_results: Sequence[np.ndarray], nms: bool = False) -> np.ndarray:
    """Merge pose detections of several scales as the original ``MultiPoseDetector.merge_outputs``.

    The rows of all scales are concatenated in scale order; with more than one scale or ``nms``
    Gaussian soft-NMS runs in place (drops copy the box and score of the last live row but swap the
    joints) and *all* rows are returned, left-overs included: no top-K cut, no score threshold.

    Args:
        per_scale_results: one ``[K, 5 + 2J]`` array per scale, rows
            ``[x1, y1, x2, y2, score, x_0, y_0, ..., x_{J-1}, y_{J-1}]`` in original image pixels.
        nms: the original ``--nms`` flag: soft-NMS even for a single scale.

    Returns:
        ``[sum K, 5 + 2J]`` float32 rows.
    """
    merged = np.concatenate([np.asarray(rows, np.float32) for rows in per_scale_results], axis=0)
    if len(per_scale_results) > 1 or nms:
        soft_nms(merged, sigma=0.5, Nt=0.5, threshold=0.001, method=GAUSSIAN_NMS)
    return merged


# A task's post-processed detections of one image: per-class rows (ctdet) or one array (pose).
PerScaleResult = Mapping[int, np.ndarray] | np.ndarray


def to_source_pixels(result: PerScaleResult, scale: float) -> PerScaleResult:
    """Divide every coordinate column (all but the score, column 4) of float32 rows by ``scale``."""
    if isinstance(result, Mapping):
        return {cls: to_source_pixels(rows, scale) for cls, rows in result.items()}
    rows = np.array(result, dtype=np.float32)  # a copy: float32 division, as the original's in-place /=
    rows[:, :4] /= scale
    rows[:, 5:] /= scale
    return rows
