"""Per-image prediction results with drawing and export to COCO json, YOLO txt and KITTI txt."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from centernet.data import visualize
from centernet.data.kitti import kitti_text
from centernet.data.objects3d import Objects3D


@dataclass
class Results:
    """Detections of one image in original image pixels.

    ``boxes`` ``[N, 4]`` xyxy, ``scores`` ``[N]``, ``labels`` ``[N]`` 0-based class indices into
    ``names``; ``keypoints`` ``[N, 17, 3]`` (x, y, confidence) for pose; ``boxes_3d`` for 3D (the one KITTI
    object type, ``data.kitti.Objects3D``; the 2D boxes, labels and scores are ``Results``' own).
    ``frame``: the 0-based index of the frame in its video, webcam or stream (``None`` for an image).
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    names: Sequence[str]
    image: np.ndarray | None = None
    path: Path | None = None
    keypoints: np.ndarray | None = None
    boxes_3d: Objects3D | None = None
    heatmap: np.ndarray | None = field(default=None, repr=False)
    frame: int | None = None

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
            None if b3 is None else b3.subset(keep),
            self.heatmap,
            self.frame,
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
        # Encoded here and written by Python: any file name (OpenCV's writer takes UTF-8 names only), any failure named.
        ok, encoded = cv2.imencode(path.suffix or ".jpg", self.plot(score_thresh))
        if not ok:
            raise OSError(f"cannot write {path}: OpenCV cannot encode a {path.suffix!r} image")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encoded.tobytes())
        except OSError as error:
            raise OSError(f"cannot write {path}: {error.strerror or error}") from error
        return path

    def to_coco(self, image_id: int, category_ids: Sequence[int] | None = None) -> list[dict]:
        """Rows in the COCO results format, as ``val --save-json`` writes them (``category_ids`` default ``1..C``).

        Boxes (and joints, for pose results) rounded to 2 decimals as the original's result files.
        """
        if self.keypoints is not None:
            joints = np.asarray(self.keypoints, np.float32)[:, :, :2].reshape(len(self), -1)
            rows = np.concatenate([np.asarray(self.boxes, np.float32), np.asarray(self.scores, np.float32)[:, None], joints], axis=1)
            return coco_keypoint_results(image_id, rows)
        ids = list(category_ids) if category_ids is not None else list(range(1, len(self.names) + 1))
        return coco_box_rows(image_id, self.boxes, self.scores, self.labels, ids)

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

    def kitti_objects(self) -> Objects3D:
        """These detections as one KITTI result frame, in the order the original's ``save_results``
        writes them: grouped by class in class order (Pedestrian, Car, Cyclist), each class's rows in
        their order here."""
        if self.boxes_3d is None:
            raise ValueError("KITTI results need 3D boxes")
        return dataclasses.replace(
            self.boxes_3d,
            types=[self.names[int(label)] for label in self.labels],
            boxes=self.boxes,
            scores=self.scores,
        ).subset(np.argsort(np.asarray(self.labels), kind="stable"))

    def to_kitti(self) -> str:
        """This image's KITTI result file (16 columns, 2 decimals; ``data.kitti.kitti_text``); empty without detections."""
        return kitti_text(self.kitti_objects())



def coco_box_rows(
    image_id: int,
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    category_ids: Sequence[int],
) -> list[dict]:
    """COCO box results of one image as the original's ``convert_eval_format`` writes them.

    ``bbox`` ``[x1, y1, x2 - x1, y2 - y1]`` with the differences taken in float32, every number
    rounded to 2 decimals; ``category_id`` is ``category_ids[label]``.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    sizes = boxes[:, 2:4] - boxes[:, 0:2]  # float32, as the original's numpy rows
    return [
        {
            "image_id": int(image_id),
            "category_id": int(category_ids[int(label)]),
            "bbox": [two_decimals(v) for v in (box[0], box[1], size[0], size[1])],
            "score": two_decimals(score),
        }
        for box, size, score, label in zip(boxes, sizes, np.asarray(scores, np.float32).reshape(-1), np.asarray(labels).reshape(-1))
    ]


def coco_keypoint_results(image_id: int, rows: np.ndarray) -> list[dict]:
    """COCO keypoint-detection results of one image, as the original writes them.

    Boxes become ``[x, y, w, h]``, every joint gets visibility 1, and box, joints and score are
    rounded to 2 decimals; the category is 1 (person).

    Args:
        image_id: COCO image id.
        rows: ``[N, 5 + 2J]`` rows of ``multi_pose_post_process`` (image pixels).
    """
    results = []
    for row in np.asarray(rows, dtype=np.float32):
        x1, y1, x2, y2, score = (float(v) for v in row[:5])
        joints = np.concatenate([row[5:].reshape(-1, 2), np.ones((len(row[5:]) // 2, 1), np.float32)], axis=1)
        results.append(
            {
                "image_id": int(image_id),
                "category_id": 1,
                "bbox": [two_decimals(v) for v in (x1, y1, x2 - x1, y2 - y1)],
                "score": two_decimals(score),
                "keypoints": [two_decimals(v) for v in joints.reshape(-1).tolist()],
            }
        )
    return results


def two_decimals(value: float) -> float:
    """The original's ``float("{:.2f}".format(v))``."""
    return float(f"{float(value):.2f}")
