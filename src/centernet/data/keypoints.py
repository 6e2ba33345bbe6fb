"""COCO's 17 person keypoints: their count, their left/right pairs, and mirroring annotations with them."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NUM_JOINTS = 17
COCO_FLIP_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))
"""Left/right joint pairs of COCO's 17 keypoints (eyes, ears, shoulders, ... ankles), swapped when mirroring."""


def flip_pose_annotations(
    boxes: np.ndarray, keypoints: np.ndarray, width: int, flip_pairs: Sequence[tuple[int, int]] = COCO_FLIP_PAIRS
) -> tuple[np.ndarray, np.ndarray]:
    """Mirror boxes and joints of an image ``width`` pixels wide (``x -> width - x - 1``).

    Left and right joints swap roles, so their rows are exchanged as well.

    Args:
        boxes: ``[N, 4]`` xyxy image pixels; keypoints: ``[N, J, 3]`` ``(x, y, visibility)``.

    Returns:
        New ``(boxes, keypoints)`` arrays with the dtypes of the inputs.
    """
    boxes = boxes.copy()
    keypoints = keypoints.copy()
    boxes[:, [0, 2]] = width - boxes[:, [2, 0]] - 1
    keypoints[:, :, 0] = width - keypoints[:, :, 0] - 1
    for left, right in flip_pairs:
        keypoints[:, [left, right]] = keypoints[:, [right, left]]
    return boxes, keypoints
