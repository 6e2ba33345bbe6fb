"""Overlaps of same-frame KITTI ground truth and detections: image boxes, bird's-eye view, 3D.

Bird's-eye rectangles are intersected by convex polygon clipping (Sutherland-Hodgman) in
float64, the way the KITTI devkit's boost geometry measures them; 3D overlap multiplies the
footprint intersection by the vertical overlap. Units: pixels for image boxes, metres otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from centernet.evaluation.kitti import _Flat


@dataclass
class PairOverlaps:
    """Overlaps of same-frame (ground truth, detection) pairs with a non-zero intersection.

    Sorted by ground truth then detection index. ``iou`` is against the ground truth;
    ``of_detection`` is intersection / detection size, used against don't-care regions.
    """

    gt: np.ndarray
    det: np.ndarray
    iou: np.ndarray
    of_detection: np.ndarray

    def select(self, keep: np.ndarray) -> PairOverlaps:
        return PairOverlaps(self.gt[keep], self.det[keep], self.iou[keep], self.of_detection[keep])


def _same_frame_pairs(gt: _Flat, det: _Flat, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """All (gt index, det index) pairs of the same frame, sorted by gt then det."""
    det_counts = np.bincount(det.frame, minlength=num_frames)
    det_starts = np.cumsum(det_counts) - det_counts
    per_gt = det_counts[gt.frame]
    pair_gt = np.repeat(np.arange(len(gt.frame)), per_gt)
    pair_starts = np.cumsum(per_gt) - per_gt
    offset = np.arange(len(pair_gt)) - np.repeat(pair_starts, per_gt)
    pair_det = det_starts[gt.frame][pair_gt] + offset
    return pair_gt, pair_det


def frame_overlaps(gt: _Flat, det: _Flat) -> dict[str, PairOverlaps]:
    """Image, bird's-eye-view and 3D overlaps of every same-frame pair (zeros dropped)."""
    num_frames = int(max(gt.frame.max(initial=-1), det.frame.max(initial=-1))) + 1
    pair_gt, pair_det = _same_frame_pairs(gt, det, num_frames)
    g, d = gt.objects, det.objects

    # Image boxes in continuous pixels (no +1); no overlap unless width and height are > 0.
    gb, db = g.boxes[pair_gt], d.boxes[pair_det]
    width = np.minimum(gb[:, 2], db[:, 2]) - np.maximum(gb[:, 0], db[:, 0])
    height = np.minimum(gb[:, 3], db[:, 3]) - np.maximum(gb[:, 1], db[:, 1])
    hit = (width > 0) & (height > 0)
    inter = (width * height)[hit]
    gt_area = ((gb[:, 2] - gb[:, 0]) * (gb[:, 3] - gb[:, 1]))[hit]
    det_area = ((db[:, 2] - db[:, 0]) * (db[:, 3] - db[:, 1]))[hit]
    with np.errstate(divide="ignore", invalid="ignore"):
        image = PairOverlaps(pair_gt[hit], pair_det[hit], inter / (det_area + gt_area - inter), inter / det_area)

    # Bird's-eye view: only pairs whose circumscribed circles meet can intersect.
    g_radius = 0.5 * np.hypot(g.dims[:, 1], g.dims[:, 2])
    d_radius = 0.5 * np.hypot(d.dims[:, 1], d.dims[:, 2])
    gap = np.hypot(
        g.locations[pair_gt, 0] - d.locations[pair_det, 0], g.locations[pair_gt, 2] - d.locations[pair_det, 2]
    )
    near = gap < g_radius[pair_gt] + d_radius[pair_det]
    pair_gt, pair_det = pair_gt[near], pair_det[near]
    inter_area = rotated_rectangle_intersection(g.footprints()[pair_gt], d.footprints()[pair_det])
    hit = inter_area > 0
    pair_gt, pair_det, inter_area = pair_gt[hit], pair_det[hit], inter_area[hit]
    # Signed w*l equals the polygon area the binary computes (the corner order flips with sign).
    g_area = g.dims[pair_gt, 1] * g.dims[pair_gt, 2]
    d_area = d.dims[pair_det, 1] * d.dims[pair_det, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        ground = PairOverlaps(pair_gt, pair_det, inter_area / (d_area + g_area - inter_area), inter_area / d_area)

        # 3D: a box spans [y - h, y] vertically (y is the bottom; camera y points down).
        g_bottom, d_bottom = g.locations[pair_gt, 1], d.locations[pair_det, 1]
        g_top, d_top = g_bottom - g.dims[pair_gt, 0], d_bottom - d.dims[pair_det, 0]
        vertical = np.maximum(0.0, np.minimum(g_bottom, d_bottom) - np.maximum(g_top, d_top))
        inter_volume = inter_area * vertical
        g_volume = g_area * g.dims[pair_gt, 0]
        d_volume = d_area * d.dims[pair_det, 0]
        box3d = PairOverlaps(
            pair_gt, pair_det, inter_volume / (d_volume + g_volume - inter_volume), inter_volume / d_volume
        )
    return {"bbox": image, "bev": ground, "3d": box3d}


def _polygon_area(points: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Signed shoelace area of [N, K, 2] polygons whose first ``count[n]`` vertices are used."""
    k = np.arange(points.shape[1])
    nxt = np.where(k + 1 < count[:, None], k + 1, 0)
    following = np.take_along_axis(points, nxt[..., None], axis=1)
    cross = points[..., 0] * following[..., 1] - following[..., 0] * points[..., 1]
    return 0.5 * np.sum(np.where(k < count[:, None], cross, 0.0), axis=1)


def rotated_rectangle_intersection(first: np.ndarray, second: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Intersection areas of convex quadrilaterals, pair by pair (Sutherland-Hodgman clipping).

    Args:
        first: [N, 4, 2] corners in order (either orientation).
        second: [N, 4, 2] corners in order (either orientation).
        chunk: pairs clipped at once (bounds the memory).

    Returns:
        [N] non-negative areas, in the squared unit of the corners; 0 if either is degenerate.
    """
    areas = np.zeros(len(first))
    for start in range(0, len(first), chunk):
        stop = start + chunk
        areas[start:stop] = _clip_area(first[start:stop], second[start:stop])
    return areas


def _clip_area(subject: np.ndarray, clip: np.ndarray) -> np.ndarray:
    n = len(subject)
    four = np.full(n, 4)
    orientation = np.sign(_polygon_area(clip, four))
    points, count = subject, four
    for edge in range(4):
        if points.shape[1] == 0:
            break
        start, stop = clip[:, edge], clip[:, (edge + 1) % 4]
        direction = stop - start
        k = np.arange(points.shape[1])
        valid = k < count[:, None]
        nxt = np.where(k + 1 < count[:, None], k + 1, 0)
        # > 0 on the interior side of this edge, whatever the clip polygon's orientation.
        rel = points - start[:, None, :]
        side = orientation[:, None] * (direction[:, None, 0] * rel[..., 1] - direction[:, None, 1] * rel[..., 0])
        side_next = np.take_along_axis(side, nxt, axis=1)
        inside = side >= 0
        crosses = inside != (side_next >= 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(crosses, side / (side - side_next), 0.0)
        following = np.take_along_axis(points, nxt[..., None], axis=1)
        crossing = points + t[..., None] * (following - points)
        # Each vertex emits itself if inside, then the edge's crossing point if it leaves/enters.
        candidates = np.stack([points, crossing], axis=2).reshape(n, -1, 2)
        keep = np.stack([inside & valid, crosses & valid], axis=2).reshape(n, -1)
        count = keep.sum(axis=1)
        order = np.argsort(~keep, axis=1, kind="stable")[:, : int(count.max(initial=0))]
        points = np.take_along_axis(candidates, order[..., None], axis=1)
    area = np.abs(_polygon_area(points, count))
    return np.where((orientation != 0) & (_polygon_area(subject, four) != 0), area, 0.0)
