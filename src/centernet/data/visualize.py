"""Drawing predictions: boxes with labels, heat-map overlays, pose skeletons, projected 3D boxes, bird's-eye view."""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

# COCO's 17-joint skeleton (0-based joint pairs), as the COCO keypoint annotations define it.
COCO_SKELETON = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
    (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)
# Edges of the 8 corners returned by ``data.kitti.box_corners`` (bottom face 0-3, top face 4-7).
BOX3D_EDGES = ((0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7))


def class_color(label: int) -> tuple[int, int, int]:
    """A stable, well-separated BGR colour for a class index."""
    hue = (int(label) * 47) % 180
    hsv = np.uint8([[[hue, 200, 255]]])
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def draw_boxes(
    image_bgr: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    score_thresh: float = 0.3,
) -> np.ndarray:
    """A copy of ``image_bgr`` with the boxes (xyxy image pixels) above ``score_thresh`` drawn and labelled."""
    canvas = np.ascontiguousarray(image_bgr).copy()
    thickness = max(1, round(sum(canvas.shape[:2]) / 600))
    for box, score, label in zip(np.asarray(boxes), np.asarray(scores), np.asarray(labels)):
        if score < score_thresh:
            continue
        color = class_color(label)
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness)
        text = f"{names[int(label)] if int(label) < len(names) else int(label)} {score:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thickness, 1)
        left, top = label_origin((x1, y1), (tw, th + base), canvas.shape[:2])
        cv2.rectangle(canvas, (left, top), (left + tw, top + th + base), color, -1)
        cv2.putText(canvas, text, (left, top + th), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thickness, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def label_origin(corner: tuple[int, int], size: tuple[int, int], image_hw: tuple[int, int]) -> tuple[int, int]:
    """Top-left pixel of a box's label of ``size`` (width, height), kept whole inside the image.

    The label sits above the box's top-left ``corner``; where that would cross the top edge it moves
    just inside the box, and it slides left from the right edge (and right from the left one), so a
    box at an image border never has its label cut off.
    """
    (x1, y1), (width, height), (image_h, image_w) = corner, size, image_hw
    top = y1 - height if y1 - height >= 0 else y1
    top = min(max(top, 0), max(image_h - height, 0))
    left = min(max(x1, 0), max(image_w - width, 0))
    return left, top


def draw_heatmap_overlay(image_bgr: np.ndarray, heatmap: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the per-pixel maximum over classes of a ``[C, h, w]`` score map (0..1) onto the image."""
    peak = np.asarray(heatmap).max(axis=0) if np.ndim(heatmap) == 3 else np.asarray(heatmap)
    peak = cv2.resize(peak.astype(np.float32), (image_bgr.shape[1], image_bgr.shape[0]))
    colored = cv2.applyColorMap(np.clip(peak * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.addWeighted(np.ascontiguousarray(image_bgr), 1 - alpha, colored, alpha, 0)


def draw_keypoints(
    image_bgr: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, score_thresh: float = 0.3
) -> np.ndarray:
    """Draw COCO skeletons: ``keypoints`` ``[N, 17, 2 or 3]`` image pixels (a third column <= 0 hides a joint)."""
    canvas = np.ascontiguousarray(image_bgr).copy()
    for person, score in zip(np.asarray(keypoints), np.asarray(scores)):
        if score < score_thresh:
            continue
        visible = person[:, 2] > 0 if person.shape[1] > 2 else np.ones(len(person), bool)
        points = [(int(round(x)), int(round(y))) for x, y in person[:, :2]]
        for a, b in COCO_SKELETON:
            if visible[a] and visible[b]:
                cv2.line(canvas, points[a], points[b], class_color(a + b), 2, cv2.LINE_AA)
        for j, point in enumerate(points):
            if visible[j]:
                cv2.circle(canvas, point, 3, (255, 255, 255), -1, cv2.LINE_AA)
    return canvas


def draw_projected_boxes(
    image_bgr: np.ndarray, corners_2d: np.ndarray, labels: np.ndarray, scores: np.ndarray, score_thresh: float = 0.3
) -> np.ndarray:
    """Draw 3D boxes given their 8 projected corners ``[N, 8, 2]`` in image pixels."""
    canvas = np.ascontiguousarray(image_bgr).copy()
    for corners, label, score in zip(np.asarray(corners_2d), np.asarray(labels), np.asarray(scores)):
        if score < score_thresh:
            continue
        pts = [(int(round(x)), int(round(y))) for x, y in corners]
        for a, b in BOX3D_EDGES:
            cv2.line(canvas, pts[a], pts[b], class_color(label), 2, cv2.LINE_AA)
    return canvas


def draw_birds_eye_view(
    footprints: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
    ground_truth: np.ndarray | None = None,
    size: int = 600,
    depth_range: float = 60.0,
    score_thresh: float = 0.3,
) -> np.ndarray:
    """A top-down image of box footprints ``[N, 4, 2]`` (x right, z forward, metres); camera at bottom centre."""
    canvas = np.full((size, size, 3), 255, np.uint8)
    scale = size / depth_range

    def to_pixels(points: np.ndarray) -> np.ndarray:
        return np.stack([size / 2 + points[:, 0] * scale, size - points[:, 1] * scale], axis=1).round().astype(np.int32)

    for metres in range(10, int(depth_range), 10):
        y = int(size - metres * scale)
        cv2.line(canvas, (0, y), (size, y), (220, 220, 220), 1)
        cv2.putText(canvas, f"{metres} m", (4, y - 2), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (150, 150, 150), 1)
    if ground_truth is not None:
        for footprint in np.asarray(ground_truth):
            cv2.polylines(canvas, [to_pixels(footprint)], True, (0, 160, 0), 2)
    for footprint, label, score in zip(np.asarray(footprints), np.asarray(labels), np.asarray(scores)):
        if score >= score_thresh:
            cv2.polylines(canvas, [to_pixels(footprint)], True, class_color(label), 2)
    return canvas
