"""3D decoding: depth, two-bin orientation and size at each peak, back-projected with the image's camera.

Paper, section 4.1: depth is regressed through ``d = 1 / sigmoid(x) - 1`` (``depth_from_logits``);
the observation angle from two overlapping bins (``decode_alpha``); the centre is
back-projected at that depth with THIS image's 3x4 camera matrix and the yaw recovered from the
viewing ray (``locate_3d``). Rows are in output-map pixels until ``ddd_post_process`` maps them
to image pixels and camera coordinates (metres).
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from centernet.data.geometry import transform_preds
from centernet.data.kitti import KITTI_CLASSES as CLASS_NAMES
from centernet.data.objects3d import alpha_to_rotation_y, require_calib, unproject_to_3d
from centernet.tasks.decoding import ExportDecoder, gather_features, peak_filter, to_image_pixels, topk


DEPTH_EPS = 1e-6


PEAK_THRESH = 0.2  # the original's --peak_thresh for keeping 3D results


# Centres of the two overlapping orientation bins (see encode_alpha), radians.
BIN_CENTRES = (-0.5 * np.pi, 0.5 * np.pi)


def depth_from_logits(x: torch.Tensor) -> torch.Tensor:
    """Depth in metres from the raw ``dep`` head: ``1 / (sigmoid(x) + 1e-6) - 1`` (in (0, 1e6))."""
    return 1.0 / (x.sigmoid() + DEPTH_EPS) - 1.0


def ddd_decode(
    heat: torch.Tensor,
    rot: torch.Tensor,
    depth: torch.Tensor,
    dim: torch.Tensor,
    wh: torch.Tensor | None = None,
    reg: torch.Tensor | None = None,
    K: int = 100,
) -> torch.Tensor:
    """Top-K centre peaks with their 3D attributes (the original's ``ddd_decode``).

    Args:
        heat: ``[B, C, H, W]`` centre scores (after sigmoid).
        rot: ``[B, 8, H, W]`` raw rotation bins; depth: ``[B, 1, H, W]`` metres (after
            ``depth_from_logits``); dim: ``[B, 3, H, W]`` metres.
        wh: optional ``[B, 2, H, W]`` 2D box size in output pixels.
        reg: optional ``[B, 2, H, W]`` sub-pixel offset; without it the pixel centre (+0.5) is used.
        K: detections per image.

    Returns:
        ``[B, K, 18]`` rows ``[x, y, score, rot8, depth, h, w, l, box_w, box_h, cls0]`` in
        output pixels (``[B, K, 16]`` without ``wh``), sorted by score.
    """
    batch = heat.shape[0]
    scores, inds, classes, ys, xs = topk(peak_filter(heat), K)
    if reg is not None:
        offset = gather_features(reg, inds)
        xs = xs.view(batch, K, 1) + offset[:, :, 0:1]
        ys = ys.view(batch, K, 1) + offset[:, :, 1:2]
    else:
        xs = xs.view(batch, K, 1) + 0.5
        ys = ys.view(batch, K, 1) + 0.5
    columns = [
        xs,
        ys,
        scores.view(batch, K, 1),
        gather_features(rot, inds),
        gather_features(depth, inds),
        gather_features(dim, inds),
    ]
    if wh is not None:
        columns.append(gather_features(wh, inds))
    columns.append(classes.view(batch, K, 1).float())
    return torch.cat(columns, dim=2)


def decode_alpha(rot8: np.ndarray) -> np.ndarray:
    """Observation angle from the 8 rotation outputs (the original's ``get_alpha``).

    The bin with the larger second logit wins; its angle is ``atan2(sin, cos)`` plus its centre.

    Args:
        rot8: ``[N, 8]`` raw rotation outputs.

    Returns:
        ``[N]`` alpha in radians (float32 for float32 input).
    """
    alpha1 = np.arctan2(rot8[:, 2], rot8[:, 3]) + BIN_CENTRES[0]
    alpha2 = np.arctan2(rot8[:, 6], rot8[:, 7]) + BIN_CENTRES[1]
    return np.where(rot8[:, 1] > rot8[:, 5], alpha1, alpha2)


def locate_3d(
    centers: np.ndarray, alpha: np.ndarray, dims: np.ndarray, depth: np.ndarray, calib: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """KITTI location and yaw of objects from their projected 3D centre (the original's ``ddd2locrot``).

    The centre is back-projected at ``depth``; KITTI locations are box bottoms, so the y (down) axis
    is moved by half the height.

    Args:
        centers: ``[N, 2]`` image pixels; alpha: ``[N]`` radians; dims: ``[N, 3]`` (h, w, l) metres;
            depth: ``[N]`` metres; calib: ``[3, 4]``.

    Returns:
        ``(location [N, 3] metres, rotation_y [N] radians)``.
    """
    location = unproject_to_3d(centers, depth, calib)
    location[:, 1] += dims[:, 0] / 2
    return location, alpha_to_rotation_y(alpha, centers[:, 0], calib[0, 2], calib[0, 0])


def ddd_post_process(
    dets: np.ndarray,
    center: np.ndarray,
    scale: np.ndarray,
    calib: np.ndarray | None,
    output_size: tuple[int, int],
    num_classes: int = len(CLASS_NAMES),
) -> dict[int, np.ndarray]:
    """Decoded rows of one image -> KITTI results per class.

    The centre goes to image pixels through the inverse letterbox, the angle is decoded from its
    bins, and the 3D location is recovered with THIS image's camera matrix. Quirk kept from the
    original: the 2D box size ``(w, h)`` is mapped with ``transform_preds`` as if it were a point,
    so the letterbox translation is added to it (a sub-pixel to few-pixel bias, trained in).

    Args:
        dets: ``[K, 18]`` (or ``[K, 16]`` without 2D size) rows of ``ddd_decode`` for one image.
        center, scale: the letterbox window of the image (see ``get_affine_transform``).
        calib: the image's ``[3, 4]`` camera matrix; required.
        output_size: ``(width, height)`` of the output map.
        num_classes: number of classes.

    Returns:
        ``{cls1: [n, 13] float32}`` rows ``[alpha, x1, y1, x2, y2, h, w, l, x, y, z, rotation_y,
        score]``, class ids 1-based, rows in decode order.
    """
    calib = require_calib(calib)
    dets = np.asarray(dets, dtype=np.float32)
    centers = transform_preds(dets[:, 0:2], center, scale, output_size).astype(np.float32)
    if dets.shape[1] > 16:
        sizes = transform_preds(dets[:, 15:17], center, scale, output_size).astype(np.float32)
    else:
        sizes = np.zeros((len(dets), 2), dtype=np.float32)
    alpha = decode_alpha(dets[:, 3:11]).astype(np.float32)
    depth, dims, scores = dets[:, 11], dets[:, 12:15], dets[:, 2]
    location, rotation_y = locate_3d(centers, alpha, dims, depth, calib)
    rows = np.concatenate(
        [
            alpha[:, None],
            centers - sizes / 2,
            centers + sizes / 2,
            dims,
            location,
            rotation_y[:, None],
            scores[:, None],
        ],
        axis=1,
    ).astype(np.float32)
    classes = dets[:, -1]
    return {c + 1: rows[classes == c] for c in range(num_classes)}


def keep_confident(results: Mapping[int, np.ndarray], thresh: float = PEAK_THRESH) -> dict[int, np.ndarray]:
    """Drop results whose score (last column) is not above ``thresh`` (the original's ``merge_outputs``)."""
    return {cls: rows[rows[:, -1] > thresh] for cls, rows in results.items()}


class DddExportDecoder(ExportDecoder):
    """3D in a graph: ``trans [B, 2, 3]`` and each image's camera ``calib [B, 3, 4]`` -> the rows of
    ``ddd_post_process``, before the ``peak_thresh`` cut: ``boxes [B, K, 4]`` (image pixels, the
    original's size quirk included), ``scores``, ``labels`` (int64 0-based), ``alpha``, ``dims [B, K, 3]``,
    ``locations [B, K, 3]`` (metres), ``rotation_y`` (radians)."""

    extra_inputs = ("trans", "calib")
    outputs = ("boxes", "scores", "labels", "alpha", "dims", "locations", "rotation_y")

    def to_outputs(self, dets: torch.Tensor, trans: torch.Tensor, calib: torch.Tensor) -> tuple[torch.Tensor, ...]:
        centers = to_image_pixels(dets[..., 0:2], trans)
        sizes = to_image_pixels(dets[..., 15:17], trans) if dets.shape[2] > 16 else torch.zeros_like(centers)
        rot = dets[..., 3:11]  # decode_alpha, batched
        alpha = torch.where(
            rot[..., 1] > rot[..., 5],
            torch.atan2(rot[..., 2], rot[..., 3]) + BIN_CENTRES[0],
            torch.atan2(rot[..., 6], rot[..., 7]) + BIN_CENTRES[1],
        )
        depth, dims = dets[..., 11], dets[..., 12:15]
        p = calib[:, None]  # [B, 1, 3, 4] against [B, K] rows: unproject_to_3d and alpha_to_rotation_y, batched
        u, v = centers[..., 0], centers[..., 1]
        z = depth - p[..., 2, 3]
        x = (u * depth - p[..., 0, 3] - p[..., 0, 2] * z) / p[..., 0, 0]
        y = (v * depth - p[..., 1, 3] - p[..., 1, 2] * z) / p[..., 1, 1] + dims[..., 0] / 2
        rotation_y = alpha + torch.atan2(u - p[..., 0, 2], p[..., 0, 0])
        rotation_y = torch.where(rotation_y > np.pi, rotation_y - 2 * np.pi, rotation_y)
        rotation_y = torch.where(rotation_y < -np.pi, rotation_y + 2 * np.pi, rotation_y)
        boxes = torch.cat([centers - sizes / 2, centers + sizes / 2], dim=2)
        locations = torch.stack([x, y, z], dim=2)
        return boxes, dets[..., 2], dets[..., -1].to(torch.int64), alpha, dims, locations, rotation_y
