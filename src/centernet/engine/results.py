"""Per-image prediction results with drawing and export to COCO json, YOLO txt and KITTI txt."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from centernet.engine import visualize
from centernet.evaluation.coco import detections_to_coco_results


@dataclass
class Boxes3D:
    """Monocular 3D boxes in KITTI camera coordinates (metres, radians).

    ``dims`` ``[N, 3]`` as (height, width, length); ``locations`` ``[N, 3]`` bottom centre (x, y, z);
    ``rotation_y`` ``[N]`` yaw; ``alpha`` ``[N]`` observation angle; ``calib`` ``[3, 4]`` the camera
    matrix the boxes were lifted with.
    """

    dims: np.ndarray
    locations: np.ndarray
    rotation_y: np.ndarray
    alpha: np.ndarray
    calib: np.ndarray

    def corners(self) -> np.ndarray:
        """The 8 corners of every box, ``[N, 8, 3]``."""
        from centernet.tasks.ddd import compute_box_3d

        return np.stack([compute_box_3d(d, loc, ry) for d, loc, ry in zip(self.dims, self.locations, self.rotation_y)]) if len(self.dims) else np.zeros((0, 8, 3))

    def projected_corners(self) -> np.ndarray:
        """The 8 corners projected into the image, ``[N, 8, 2]`` pixels."""
        from centernet.tasks.ddd import project_to_image

        corners = self.corners()
        return np.stack([project_to_image(c, self.calib) for c in corners]) if len(corners) else np.zeros((0, 8, 2))


@dataclass
class Results:
    """Detections of one image in original image pixels.

    ``boxes`` ``[N, 4]`` xyxy, ``scores`` ``[N]``, ``labels`` ``[N]`` 0-based class indices into
    ``names``; ``keypoints`` ``[N, 17, 3]`` (x, y, confidence) for pose; ``boxes_3d`` for 3D.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    names: Sequence[str]
    image: np.ndarray | None = None
    path: Path | None = None
    keypoints: np.ndarray | None = None
    boxes_3d: Boxes3D | None = None
    heatmap: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.scores)

    def filter(self, score_thresh: float) -> "Results":
        """The detections scoring at least ``score_thresh``."""
        keep = np.asarray(self.scores) >= score_thresh
        b3 = self.boxes_3d
        return Results(
            self.boxes[keep],
            self.scores[keep],
            self.labels[keep],
            self.names,
            self.image,
            self.path,
            None if self.keypoints is None else self.keypoints[keep],
            None if b3 is None else Boxes3D(b3.dims[keep], b3.locations[keep], b3.rotation_y[keep], b3.alpha[keep], b3.calib),
            self.heatmap,
        )

    def plot(self, score_thresh: float = 0.3, heatmap: bool = False) -> np.ndarray:
        """The image (BGR) with the detections drawn: boxes, skeletons or projected 3D boxes."""
        if self.image is None:
            raise ValueError("these results carry no image to draw on")
        canvas = self.image
        if heatmap and self.heatmap is not None:
            canvas = visualize.draw_heatmap_overlay(canvas, self.heatmap)
        if self.boxes_3d is not None:
            canvas = visualize.draw_projected_boxes(canvas, self.boxes_3d.projected_corners(), self.labels, self.scores, score_thresh)
        else:
            canvas = visualize.draw_boxes(canvas, self.boxes, self.scores, self.labels, self.names, score_thresh)
        if self.keypoints is not None:
            canvas = visualize.draw_keypoints(canvas, self.keypoints, self.scores, score_thresh)
        return canvas

    def plot_birds_eye_view(self, score_thresh: float = 0.3) -> np.ndarray:
        """Top-down view of the 3D boxes' footprints (x, z)."""
        if self.boxes_3d is None:
            raise ValueError("bird's-eye view needs 3D boxes")
        footprints = self.boxes_3d.corners()[:, :4][:, :, [0, 2]]
        return visualize.draw_birds_eye_view(footprints, self.labels, self.scores, score_thresh=score_thresh)

    def save(self, path: str | Path, score_thresh: float = 0.3) -> Path:
        """Write the drawn image to ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(path), self.plot(score_thresh)):
            raise OSError(f"{path}: could not write image")
        return path

    def to_coco(self, image_id: int, category_ids: Sequence[int] | None = None) -> list[dict]:
        """Rows in the COCO results format (``category_ids`` default ``1..C``)."""
        ids = list(category_ids) if category_ids is not None else list(range(1, len(self.names) + 1))
        return detections_to_coco_results(image_id, self.boxes, self.scores, self.labels, ids, self.keypoints)

    def to_yolo(self, width: int, height: int, score_thresh: float = 0.0) -> str:
        """YOLO txt lines ``class cx cy w h score`` normalised by the image size."""
        lines = []
        for box, score, label in zip(self.boxes, self.scores, self.labels):
            if score < score_thresh:
                continue
            x1, y1, x2, y2 = (float(v) for v in box)
            cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
            lines.append(f"{int(label)} {cx:.6f} {cy:.6f} {(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f} {float(score):.5f}")
        return "\n".join(lines) + ("\n" if lines else "")

    def to_kitti(self) -> str:
        """KITTI result lines (16 columns, 2 decimals), as the original writes them."""
        if self.boxes_3d is None:
            raise ValueError("KITTI results need 3D boxes")
        b3 = self.boxes_3d
        lines = []
        for i in range(len(self)):
            values = [b3.alpha[i], *self.boxes[i], *b3.dims[i], *b3.locations[i], b3.rotation_y[i], self.scores[i]]
            lines.append(f"{self.names[int(self.labels[i])]} 0.0 0 " + " ".join(f"{float(v):.2f}" for v in values))
        return "\n".join(lines) + ("\n" if lines else "")
