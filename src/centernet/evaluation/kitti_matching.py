"""The KITTI evaluator's greedy matching and its score thresholds, vectorised across frames.

Each frame's ground truth is matched in file order to the best remaining detection; the i-th
ground truth of every frame is matched in the same step. ``score_thresholds`` picks the at most
41 recall-spaced thresholds of the devkit from the true positives' scores.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from centernet.evaluation.kitti_overlaps import PairOverlaps

NUM_SAMPLE_POINTS = 41


@dataclass
class Matches:
    """Greedy assignments: threshold index, ground truth and detection of each."""

    step: np.ndarray
    gt: np.ndarray
    det: np.ndarray


def greedy_match(
    pairs: PairOverlaps, gt_frame: np.ndarray, priority: np.ndarray, scores: np.ndarray, min_scores: np.ndarray
) -> Matches:
    """Each frame's ground truth, in file order, takes its best remaining candidate detection.

    The j-th candidate-holding ground truth of every frame is matched in the same step (frames
    share no detections); all score thresholds are matched at once.

    Args:
        pairs: candidate pairs (overlap above threshold, neither side "other"), sorted by gt, det.
        gt_frame: [N_gt] frame of each ground truth.
        priority: [P] preference of each pair; ties go to the lower detection index (file order).
        scores: [N_det] detection scores.
        min_scores: [T] score thresholds: at step t only detections scoring >= min_scores[t] exist.

    Returns:
        The assignments over all thresholds.
    """
    if len(pairs.gt) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Matches(empty, empty, empty)
    gts, pair_to_gt = np.unique(pairs.gt, return_inverse=True)
    frames = gt_frame[gts]
    rank = np.arange(len(gts)) - np.searchsorted(frames, frames)  # position among the frame's candidates
    dets, pair_det = np.unique(pairs.det, return_inverse=True)
    present = scores[dets][None, :] >= min_scores[:, None]  # [T, D]
    taken = np.zeros_like(present)
    pair_rank = rank[pair_to_gt]
    by_step = np.argsort(pair_rank, kind="stable")  # keeps (gt, det) order within a step
    bounds = np.searchsorted(pair_rank[by_step], np.arange(rank.max() + 2))
    steps, matched_gt, matched_det = [], [], []
    for r in range(rank.max() + 1):
        sel = by_step[bounds[r] : bounds[r + 1]]
        candidate_det, owner = pair_det[sel], pair_to_gt[sel]
        starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
        available = present[:, candidate_det] & ~taken[:, candidate_det]  # [T, P]
        score = np.where(available, priority[sel], -np.inf)
        best = np.maximum.reduceat(score, starts, axis=1)  # [T, G]
        lengths = np.diff(np.r_[starts, len(sel)])
        is_best = available & (score == np.repeat(best, lengths, axis=1))
        first = np.minimum.reduceat(np.where(is_best, np.arange(len(sel)), len(sel)), starts, axis=1)
        step, group = np.nonzero(first < len(sel))
        chosen = first[step, group]
        taken[step, candidate_det[chosen]] = True
        steps.append(step)
        matched_gt.append(gts[owner[chosen]])
        matched_det.append(dets[candidate_det[chosen]])
    return Matches(np.concatenate(steps), np.concatenate(matched_gt), np.concatenate(matched_det))


def score_thresholds(scores: np.ndarray, num_valid: int) -> np.ndarray:
    """Up to 41 true-positive scores approximating recall 0, 1/40, ..., 1 (the binary's rule).

    The running recall target is accumulated by repeated float additions as in the binary;
    computing it as k/40 changes which score is chosen in tie cases.
    """
    scores = np.sort(scores)[::-1]
    chosen, target = [], 0.0
    last = len(scores) - 1
    for i, score in enumerate(scores):
        left = (i + 1) / num_valid
        right = (i + 2) / num_valid if i < last else left
        if i < last and (right - target) < (target - left):
            continue
        chosen.append(score)
        target += 1.0 / (NUM_SAMPLE_POINTS - 1.0)
    return np.asarray(chosen, dtype=np.float64)


def count_at_least(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """[T] number of ``values`` >= each threshold."""
    return len(values) - np.searchsorted(np.sort(values), thresholds, side="left")
