"""KITTI's 3D object type and the camera geometry around it.

``Objects3D`` holds the objects of one frame, as one label or result file does; data records,
the evaluator (``evaluation.kitti``) and prediction results (``data.results.Results.boxes_3d``)
all use it. Geometry: ``box_corners`` and ``project_to_image`` (the original's
``compute_box_3d`` and ``project_to_image``), and the inverse used by 3D decoding:
``unproject_to_3d`` (an image point at a depth back to camera coordinates) and
``alpha_to_rotation_y`` (observation angle to yaw through the viewing ray).

Units: camera coordinates (x right, y down, z forward) in metres, the location being the bottom
centre of the box; angles in radians; 2D boxes ``(x1, y1, x2, y2)`` in image pixels.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class Objects3D:
    """The KITTI objects of one frame: what one label or result file holds, one object per line.

    The 3D part is always present. The rest is optional where another holder keeps it: an
    ``ImageRecord`` holds the validated 2D boxes and the calibration itself, a ``Results`` its
    boxes, labels and scores; give them (``dataclasses.replace``) to write or evaluate the objects.
    Every array is stored as float64 (int64 for ``occlusion``), whatever it was given as.

    Attributes:
        dims: ``[N, 3]`` object size ``(h, w, l)``, metres.
        locations: ``[N, 3]`` bottom centre ``(x, y, z)`` in camera coordinates, metres.
        rotation_y: ``[N]`` yaw around the camera y axis.
        alpha: ``[N]`` observation angle (``-10`` in a result line: not provided).
        calib: ``[3, 4]`` float32 camera matrix (KITTI ``P2``) the boxes project with, or ``None``.
        types: KITTI type of each object (``Car``, ``Van``, ``DontCare``...), or ``None``.
        boxes: ``[N, 4]`` 2D boxes ``(x1, y1, x2, y2)``, image pixels, or ``None``.
        truncation: ``[N]`` 0 (inside the image) .. 1 (leaving it); 0 when not given (detections).
        occlusion: ``[N]`` 0 visible, 1 partly, 2 largely occluded, 3 unknown; 0 when not given.
        scores: ``[N]`` detection confidence; 1 when not given (ground truth).
    """

    dims: np.ndarray
    locations: np.ndarray
    rotation_y: np.ndarray
    alpha: np.ndarray
    calib: np.ndarray | None = None
    types: tuple[str, ...] | None = None
    boxes: np.ndarray | None = None
    truncation: np.ndarray | None = None
    occlusion: np.ndarray | None = None
    scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(np.asarray(self.rotation_y).reshape(-1))

        def column(value, width: int | None, default: float | None = None, dtype=np.float64) -> np.ndarray | None:
            if value is None:
                return None if default is None else np.full(n, default, dtype=dtype)
            shape = (n,) if width is None else (n, width)
            return np.asarray(value, dtype=dtype).reshape(shape)

        set_ = object.__setattr__
        set_(self, "dims", column(self.dims, 3))
        set_(self, "locations", column(self.locations, 3))
        set_(self, "rotation_y", column(self.rotation_y, None))
        set_(self, "alpha", column(self.alpha, None))
        set_(self, "calib", None if self.calib is None else np.asarray(self.calib, dtype=np.float32).reshape(3, 4))
        if self.types is not None:
            set_(self, "types", tuple(str(t) for t in self.types))
            if len(self.types) != n:
                raise ValueError(f"{len(self.types)} types for {n} objects")
        set_(self, "boxes", column(self.boxes, 4))
        set_(self, "truncation", column(self.truncation, None, 0.0))
        set_(self, "occlusion", column(self.occlusion, None, 0, np.int64))
        set_(self, "scores", column(self.scores, None, 1.0))

    def __len__(self) -> int:
        return len(self.rotation_y)

    @classmethod
    def empty(cls) -> Objects3D:
        """A frame without objects (an empty result file: evaluated, nothing detected)."""
        return cls(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), np.zeros(0), types=(), boxes=np.zeros((0, 4)))

    @property
    def depth(self) -> np.ndarray:
        """``[N]`` distance along the optical axis (``locations[:, 2]``), metres."""
        return self.locations[:, 2]

    def subset(self, keep: np.ndarray | Sequence[int]) -> Objects3D:
        """The objects selected by a boolean mask ``[N]`` or by indices (in the order given)."""
        index = np.asarray(keep)
        index = np.flatnonzero(index) if index.dtype == bool else index.astype(np.int64).reshape(-1)
        return dataclasses.replace(
            self,
            dims=self.dims[index],
            locations=self.locations[index],
            rotation_y=self.rotation_y[index],
            alpha=self.alpha[index],
            types=None if self.types is None else tuple(self.types[i] for i in index),
            boxes=None if self.boxes is None else self.boxes[index],
            truncation=self.truncation[index],
            occlusion=self.occlusion[index],
            scores=self.scores[index],
        )

    def corners(self) -> np.ndarray:
        """``[N, 8, 3]`` corners of every box (see ``box_corners``), metres."""
        return box_corners(self.dims, self.locations, self.rotation_y)

    def projected_corners(self, calib: np.ndarray | None = None) -> np.ndarray:
        """``[N, 8, 2]`` corners projected into the image (pixels) with ``calib``, else ``self.calib``."""
        calib = self.calib if calib is None else calib
        if calib is None:
            raise ValueError("projecting 3D boxes needs the camera matrix (calib)")
        return project_to_image(self.corners(), calib)

    def footprints(self) -> np.ndarray:
        """``[N, 4, 2]`` bird's-eye-view rectangles: the bottom face's corners in the ``(x, z)`` plane."""
        return self.corners()[:, :4][:, :, [0, 2]]


def box_corners(dims: np.ndarray, locations: np.ndarray, rotation_y: np.ndarray, dtype=np.float64) -> np.ndarray:
    """The 8 corners of KITTI 3D boxes (the original's ``compute_box_3d``, for many boxes).

    The length runs along ``(cos ry, 0, -sin ry)`` and the width along ``(sin ry, 0, cos ry)``.

    Args:
        dims: ``[N, 3]`` ``(h, w, l)`` metres; locations: ``[N, 3]`` bottom centres; rotation_y: ``[N]``.
        dtype: Precision of the arithmetic (the original computes in float32).

    Returns:
        ``[N, 8, 3]`` corners: bottom face 0-3, top face 4-7 (y points down, so the top is at ``-h``).
    """
    dims = np.asarray(dims, dtype=dtype).reshape(-1, 3)
    locations = np.asarray(locations, dtype=dtype).reshape(-1, 3)
    rotation_y = np.asarray(rotation_y, dtype=dtype).reshape(-1, 1)
    c, s = np.cos(rotation_y), np.sin(rotation_y)
    h, w, l = dims[:, 0:1], dims[:, 1:2], dims[:, 2:3]
    along = (l / 2) * np.array([1, 1, -1, -1, 1, 1, -1, -1], dtype=dtype)  # [N, 8]
    across = (w / 2) * np.array([1, -1, -1, 1, 1, -1, -1, 1], dtype=dtype)
    up = -h * np.array([0, 0, 0, 0, 1, 1, 1, 1], dtype=dtype)
    x = c * along + s * across + locations[:, 0:1]
    y = up + locations[:, 1:2]
    z = -s * along + c * across + locations[:, 2:3]
    return np.stack([x, y, z], axis=-1)


def project_to_image(points_3d: np.ndarray, calib: np.ndarray) -> np.ndarray:
    """Camera points ``[..., 3]`` projected with the ``[3, 4]`` matrix: ``[..., 2]`` image pixels."""
    points_3d = np.asarray(points_3d)
    homogeneous = np.concatenate([points_3d, np.ones((*points_3d.shape[:-1], 1), dtype=points_3d.dtype)], axis=-1)
    projected = homogeneous @ np.asarray(calib).T
    return projected[..., :2] / projected[..., 2:]


def unproject_to_3d(points: np.ndarray, depth: np.ndarray, calib: np.ndarray) -> np.ndarray:
    """Camera coordinates of image points at a known depth, through the 3x4 matrix ``P``.

    ``P`` carries a translation column (KITTI's rectified cameras are offset from the reference
    camera), hence ``z = depth - P[2, 3]`` and the ``P[:, 3]`` terms.

    Args:
        points: ``[N, 2]`` image pixels; depth: ``[N]`` metres; calib: ``[3, 4]``.

    Returns:
        ``[N, 3]`` camera coordinates in metres.
    """
    z = depth - calib[2, 3]
    x = (points[:, 0] * depth - calib[0, 3] - calib[0, 2] * z) / calib[0, 0]
    y = (points[:, 1] * depth - calib[1, 3] - calib[1, 2] * z) / calib[1, 1]
    return np.stack([x, y, z], axis=1)


def alpha_to_rotation_y(alpha: np.ndarray, x: np.ndarray, cx: float, fx: float) -> np.ndarray:
    """Yaw from the observation angle and the ray through image column ``x``, wrapped to [-pi, pi]."""
    rotation_y = alpha + np.arctan2(x - cx, fx)
    rotation_y = np.where(rotation_y > np.pi, rotation_y - 2 * np.pi, rotation_y)
    return np.where(rotation_y < -np.pi, rotation_y + 2 * np.pi, rotation_y)


def require_calib(calib: np.ndarray | None) -> np.ndarray:
    """The 3x4 camera matrix as float32; a clear error instead of any silent default camera."""
    if calib is None:
        raise ValueError(
            "ddd needs the image's own 3x4 camera matrix (KITTI P2, e.g. centernet.data.kitti.read_calib); "
            "no default calibration is assumed"
        )
    calib = np.asarray(calib, dtype=np.float32)
    if calib.shape != (3, 4):
        raise ValueError(f"calib must be the 3x4 projection matrix P2, got shape {calib.shape}")
    return calib
