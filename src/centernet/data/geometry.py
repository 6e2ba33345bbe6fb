"""Where a network input sits in its source image: affine warps and the per-image ``ImageMeta``.

Affine matrices are float64 ``[2, 3]`` acting on ``[x, y, 1]``; they are built from float32
correspondences exactly as the original, so released checkpoints and the reference fixtures see
bit-identical warps. Every map from output-map pixels back to source pixels goes through
``ImageMeta.output_transform(inv=True)`` or ``transform_preds``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

ArrayLike = np.ndarray | Sequence[float] | float


def _rotate(point: Sequence[float], angle_rad: float) -> list[float]:
    sn, cs = np.sin(angle_rad), np.cos(angle_rad)
    return [point[0] * cs - point[1] * sn, point[0] * sn + point[1] * cs]


def _third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The point making ``(a, b, result)`` a right angle at ``b`` (fixes the affine's shear)."""
    direction = a - b
    return b + np.array([-direction[1], direction[0]], dtype=np.float32)


def get_affine_transform(
    center: ArrayLike,
    scale: ArrayLike,
    rot: float,
    output_size: Sequence[int],
    shift: ArrayLike = (0.0, 0.0),
    inv: bool = False,
) -> np.ndarray:
    """Affine matrix mapping a ``scale``-sized window around ``center`` onto an output canvas.

    The window's width ``scale[0]`` maps onto the output width (aspect ratio preserved; the
    height of the window follows the output's aspect), rotated by ``rot`` degrees.
    The three correspondences are built in float32 like the original so the float64 matrix that
    ``cv2.getAffineTransform`` solves for is bit-identical.

    Args:
        center: ``(x, y)`` window centre in source pixels.
        scale: window size in source pixels, a scalar (square window) or ``(w, h)``.
        rot: rotation in degrees (counter-clockwise in image coordinates as the original).
        output_size: ``(width, height)`` of the destination canvas, in pixels.
        shift: window shift as a fraction of ``scale``.
        inv: return the inverse map (destination -> source) instead.

    Returns:
        ``[2, 3]`` float64 matrix acting on ``[x, y, 1]``.
    """
    # A scalar (including a 0-d array) means a square window; numpy's type promotion from here on
    # follows the original's so that the float32 correspondences round identically.
    scale = np.array([scale, scale], dtype=np.float32) if np.ndim(scale) == 0 else np.asarray(scale)
    shift = np.asarray(shift, dtype=np.float32)
    center = np.asarray(center)
    src_w = scale[0]
    dst_w, dst_h = output_size[0], output_size[1]

    src_dir = _rotate([0, src_w * -0.5], np.pi * rot / 180)
    dst_dir = np.array([0, dst_w * -0.5], np.float32)

    src = np.zeros((3, 2), dtype=np.float32)
    dst = np.zeros((3, 2), dtype=np.float32)
    src[0, :] = center + scale * shift
    src[1, :] = center + src_dir + scale * shift
    dst[0, :] = [dst_w * 0.5, dst_h * 0.5]
    dst[1, :] = np.array([dst_w * 0.5, dst_h * 0.5], np.float32) + dst_dir
    src[2, :] = _third_point(src[0, :], src[1, :])
    dst[2, :] = _third_point(dst[0, :], dst[1, :])

    if inv:
        return cv2.getAffineTransform(dst, src)
    return cv2.getAffineTransform(src, dst)


def affine_transform(points: ArrayLike, t: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to one point ``(2,)`` or to many ``[..., 2]``.

    Points are rounded to float32 first, as the original does, then mapped in float64.

    Returns:
        Float64 array with the shape of ``points``.
    """
    points = np.asarray(points, dtype=np.float32)
    flat = points.reshape(-1, 2).astype(np.float64)
    mapped = flat[:, 0:1] * t[:, 0] + flat[:, 1:2] * t[:, 1] + t[:, 2]
    return mapped.reshape(points.shape)


def transform_preds(
    coords: np.ndarray, center: ArrayLike, scale: ArrayLike, output_size: Sequence[int]
) -> np.ndarray:
    """Map points from output-map pixels back to source-image pixels.

    Args:
        coords: ``[N, 2]`` points ``(x, y)`` in output-map pixels.
        center, scale: the window used for the forward warp (see ``get_affine_transform``).
        output_size: ``(width, height)`` of the output map.

    Returns:
        ``[N, 2]`` float64 points in source-image pixels.
    """
    trans = get_affine_transform(center, scale, 0, output_size, inv=True)
    return affine_transform(np.asarray(coords)[:, 0:2], trans)


@dataclass(frozen=True)
class ImageMeta:
    """How one network input was cut out of its source image (the original's ``meta`` dict).

    Attributes:
        center: ``(x, y)`` window centre in source-image pixels (float32; already mirrored,
            ``width - x - 1``, when ``flipped``).
        scale: window size in source pixels: a scalar (square window, fix-res) or ``(w, h)``.
        input_hw: network input ``(height, width)`` in pixels.
        output_hw: output map ``(height, width)`` in pixels (input / down ratio).
        image_hw: source image ``(height, width)`` in pixels.
        rot: rotation of the window in degrees (training augmentation of pose; 0 otherwise).
        flipped: whether the source image was mirrored before the warp (training augmentation).
        calib: camera projection ``[3, 4]`` for 3D tasks, ``None`` otherwise.
        augmented: the 3D scale/shift augmentation was applied (its depth and size targets are off).
    """

    center: np.ndarray
    scale: float | np.ndarray
    input_hw: tuple[int, int]
    output_hw: tuple[int, int]
    image_hw: tuple[int, int]
    rot: float = 0.0
    flipped: bool = False
    calib: np.ndarray | None = None
    augmented: bool = False

    @classmethod
    def from_original(
        cls, meta: Mapping[str, Any], input_hw: tuple[int, int] | None = None, image_hw: tuple[int, int] | None = None
    ) -> ImageMeta:
        """The meta of the original detector's ``pre_process`` (``{'c', 's', 'out_height', 'out_width'}``).

        The original's ``s`` takes every form its detectors give it: a Python or NumPy scalar
        (fix-res, ``max(h, w)``), a 0-d array, or the 2-vector ``[w, h]`` (keep-res, ddd); each is
        kept as it is (scalar -> float, vector -> float32 ``[2]``). ``out_height`` / ``out_width``
        may also come as ``out_hw``; the input defaults to 4x the output map.
        """
        scale = np.asarray(meta["s"], dtype=np.float32)
        if scale.size == 1:
            window: float | np.ndarray = float(scale.reshape(()))
        elif scale.size == 2:
            window = scale.reshape(2)
        else:
            raise ValueError(f"original meta 's' must be a scalar or [w, h], got shape {scale.shape}")
        if "out_hw" in meta:
            out_hw = tuple(int(v) for v in np.asarray(meta["out_hw"]).reshape(2))
        else:
            out_hw = (int(meta["out_height"]), int(meta["out_width"]))
        return cls(
            center=np.asarray(meta["c"], dtype=np.float32).reshape(2),
            scale=window,
            input_hw=input_hw or (out_hw[0] * 4, out_hw[1] * 4),
            output_hw=out_hw,
            image_hw=image_hw or out_hw,
            calib=None if meta.get("calib") is None else np.asarray(meta["calib"], np.float32).reshape(3, 4),
        )

    def input_transform(self, rot: float | None = None, inv: bool = False) -> np.ndarray:
        """``[2, 3]`` float64 map from (mirrored) source pixels to input pixels (``inv``: back)."""
        rot = self.rot if rot is None else rot
        return get_affine_transform(self.center, self.scale, rot, self.input_hw[::-1], inv=inv)

    def output_transform(self, rot: float | None = None, inv: bool = False) -> np.ndarray:
        """``[2, 3]`` float64 map from (mirrored) source pixels to output-map pixels (``inv``: back)."""
        rot = self.rot if rot is None else rot
        return get_affine_transform(self.center, self.scale, rot, self.output_hw[::-1], inv=inv)
