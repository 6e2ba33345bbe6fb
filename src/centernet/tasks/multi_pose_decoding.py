"""Pose decoding: top-K people, their regressed joints snapped to joint heat-map peaks, the flip test.

Paper, section 4.2: the joints are regressed as offsets from each person's centre (``hps``); each
is then snapped to the nearest confident peak of its joint heat map (``hm_hp``) inside the
person's box. Rows are in output-map pixels until ``multi_pose_post_process`` maps them to image
pixels.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from centernet.data.geometry import transform_preds
from centernet.data.keypoints import COCO_FLIP_PAIRS
from centernet.tasks.base import HeadOutputs
from centernet.tasks.decoding import ExportDecoder, flip_lr, flip_lr_pairs, gather_features, peak_filter, to_image_pixels, topk


JOINT_THRESH = 0.1  # joint heat-map peaks below this score never replace a regressed joint
SNAP_DISTANCE = 0.3  # a peak further than this fraction of the box's longer side is not the same joint


def flip_joint_offsets(hps: torch.Tensor, flip_pairs: Sequence[tuple[int, int]] = COCO_FLIP_PAIRS) -> torch.Tensor:
    """Un-mirror joint offset maps ``[B, 2J, H, W]``: flip left-right, negate x, swap left/right joints."""
    batch, channels, height, width = hps.shape
    per_joint = hps.reshape(batch, channels // 2, 2, height, width)
    sign = torch.tensor([-1.0, 1.0], dtype=hps.dtype, device=hps.device).view(1, 1, 2, 1, 1)
    return flip_lr_pairs(per_joint * sign, flip_pairs).reshape(batch, channels, height, width)


def _topk_per_channel(scores: torch.Tensor, K: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-``K`` pixels of every channel separately: ``(scores, inds, ys, xs)``, each ``[B, C, K]``."""
    batch, channels, _, width = scores.shape
    top_scores, inds = torch.topk(scores.reshape(batch, channels, -1), K)
    ys = torch.div(inds, width, rounding_mode="floor").float()
    xs = (inds % width).float()
    return top_scores, inds, ys, xs


def _snap_to_joint_peaks(
    joints: torch.Tensor,
    boxes: torch.Tensor,
    hm_hp: torch.Tensor,
    hp_offset: torch.Tensor | None,
    thresh: float = JOINT_THRESH,
) -> torch.Tensor:
    """Replace regressed joints by the nearest confident peak of their joint heat map.

    For each person and joint the nearest of the joint map's top-K peaks (scores above ``thresh``)
    is taken, unless it lies outside the person's box or further than ``SNAP_DISTANCE`` times the
    box's longer side: then the regressed joint stays.

    Args:
        joints: ``[B, K, J, 2]`` regressed joints; boxes: ``[B, K, 4]`` xyxy; both output pixels.
        hm_hp: ``[B, J, H, W]`` joint scores (after sigmoid); hp_offset: ``[B, 2, H, W]`` or None.

    Returns:
        ``[B, K, J, 2]`` joints.
    """
    batch, num_people, num_joints, _ = joints.shape
    regressed = joints.permute(0, 2, 1, 3)  # [B, J, K, 2]
    peak_scores, peak_inds, peak_ys, peak_xs = _topk_per_channel(peak_filter(hm_hp), num_people)
    if hp_offset is not None:
        offset = gather_features(hp_offset, peak_inds.reshape(batch, -1)).reshape(batch, num_joints, num_people, 2)
        peak_xs = peak_xs + offset[..., 0]
        peak_ys = peak_ys + offset[..., 1]
    else:
        peak_xs = peak_xs + 0.5
        peak_ys = peak_ys + 0.5
    confident = peak_scores > thresh
    peak_scores = torch.where(confident, peak_scores, torch.full_like(peak_scores, -1.0))
    peaks = torch.stack([peak_xs, peak_ys], dim=-1)
    peaks = torch.where(confident.unsqueeze(-1), peaks, torch.full_like(peaks, -10000.0))  # [B, J, P, 2]

    # Distance of every regressed joint (dim 2) to every peak of its joint map (dim 3).
    dist = ((regressed.unsqueeze(3) - peaks.unsqueeze(2)) ** 2).sum(dim=4) ** 0.5
    min_dist, nearest = dist.min(dim=3)  # [B, J, K]
    nearest_score = peak_scores.gather(2, nearest)
    nearest_peak = peaks.gather(2, nearest.unsqueeze(-1).expand(batch, num_joints, num_people, 2))

    left, top, right, bottom = (boxes[..., i].unsqueeze(1) for i in range(4))  # [B, 1, K]
    keep_regressed = (
        (nearest_peak[..., 0] < left)
        | (nearest_peak[..., 0] > right)
        | (nearest_peak[..., 1] < top)
        | (nearest_peak[..., 1] > bottom)
        | (nearest_score < thresh)
        | (min_dist > torch.max(bottom - top, right - left) * SNAP_DISTANCE)
    )
    snapped = torch.where(keep_regressed.unsqueeze(-1), regressed, nearest_peak)
    return snapped.permute(0, 2, 1, 3)


def multi_pose_decode(
    heat: torch.Tensor,
    wh: torch.Tensor,
    hps: torch.Tensor,
    reg: torch.Tensor | None = None,
    hm_hp: torch.Tensor | None = None,
    hp_offset: torch.Tensor | None = None,
    K: int = 100,
) -> torch.Tensor:
    """Top-K people with their boxes and joints (the original's ``multi_pose_decode``).

    Joints are regressed from the integer centre pixel; with ``hm_hp`` they are snapped to joint
    heat-map peaks (see ``_snap_to_joint_peaks``).

    Args:
        heat: ``[B, 1, H, W]`` centre scores (after sigmoid).
        wh: ``[B, 2, H, W]`` box size; hps: ``[B, 2J, H, W]`` joint offsets; both output pixels.
        reg: optional ``[B, 2, H, W]`` centre offset; without it the pixel centre (+0.5) is used.
        hm_hp: optional ``[B, J, H, W]`` joint scores (after sigmoid).
        hp_offset: optional ``[B, 2, H, W]`` joint sub-pixel offset.
        K: detections per image.

    Returns:
        ``[B, K, 4 + 1 + 2J + 1]`` rows ``[x1, y1, x2, y2, score, joints (x, y)..., cls0]`` in
        output pixels, sorted by score.
    """
    batch = heat.shape[0]
    num_joints = hps.shape[1] // 2
    scores, inds, classes, ys, xs = topk(peak_filter(heat), K)
    joints = gather_features(hps, inds).reshape(batch, K, num_joints, 2)
    joints = joints + torch.stack([xs, ys], dim=-1).unsqueeze(2)
    if reg is not None:
        offset = gather_features(reg, inds)
        xs = xs + offset[..., 0]
        ys = ys + offset[..., 1]
    else:
        xs = xs + 0.5
        ys = ys + 0.5
    size = gather_features(wh, inds)
    boxes = torch.stack(
        [xs - size[..., 0] / 2, ys - size[..., 1] / 2, xs + size[..., 0] / 2, ys + size[..., 1] / 2], dim=2
    )
    if hm_hp is not None:
        joints = _snap_to_joint_peaks(joints, boxes, hm_hp, hp_offset)
    return torch.cat(
        [boxes, scores.unsqueeze(2), joints.reshape(batch, K, 2 * num_joints), classes.unsqueeze(2).float()], dim=2
    )


def merge_flipped(
    output: HeadOutputs, flip_pairs: Sequence[tuple[int, int]] = COCO_FLIP_PAIRS
) -> dict[str, torch.Tensor]:
    """Average a batch of images and their mirrored copies into ``B`` maps (the original's flip test).

    ``hm`` (after sigmoid), ``wh``, ``hps`` (x negated, joints swapped) and ``hm_hp`` (after sigmoid,
    joints swapped) are averaged; ``reg`` and ``hp_offset`` come from the unmirrored images only.

    Args:
        output: raw head maps ``[2B, C, H, W]``: ``B`` images then their ``B`` mirrored copies.

    Returns:
        Maps ``[B, C, H, W]`` with ``hm`` and ``hm_hp`` as scores, ready for ``multi_pose_decode``.
    """
    half = output["hm"].shape[0] // 2
    merged = {
        "hm": (output["hm"][:half].sigmoid() + flip_lr(output["hm"][half:].sigmoid())) / 2,
        "wh": (output["wh"][:half] + flip_lr(output["wh"][half:])) / 2,
        "hps": (output["hps"][:half] + flip_joint_offsets(output["hps"][half:], flip_pairs)) / 2,
    }
    if "hm_hp" in output:
        hm_hp = output["hm_hp"].sigmoid()
        merged["hm_hp"] = (hm_hp[:half] + flip_lr_pairs(hm_hp[half:], flip_pairs)) / 2
    for name in ("reg", "hp_offset"):
        if name in output:
            merged[name] = output[name][:half]
    return merged


def multi_pose_post_process(
    dets: np.ndarray, center: np.ndarray, scale: float | np.ndarray, output_size: tuple[int, int]
) -> np.ndarray:
    """Decoded rows of one image -> image pixels (the original's ``multi_pose_post_process``).

    Args:
        dets: ``[K, 4 + 1 + 2J + 1]`` rows of ``multi_pose_decode`` for one image.
        center, scale: the letterbox window of the image (see ``get_affine_transform``).
        output_size: ``(width, height)`` of the output map.

    Returns:
        ``[K, 4 + 1 + 2J]`` float32 rows ``[x1, y1, x2, y2, score, joints (x, y)...]`` (no class).
    """
    dets = np.asarray(dets, dtype=np.float32)
    num_people, num_joints = dets.shape[0], (dets.shape[1] - 6) // 2
    boxes = transform_preds(dets[:, :4].reshape(-1, 2), center, scale, output_size).reshape(num_people, 4)
    joints = transform_preds(dets[:, 5 : 5 + 2 * num_joints].reshape(-1, 2), center, scale, output_size)
    return np.concatenate([boxes, dets[:, 4:5], joints.reshape(num_people, 2 * num_joints)], axis=1).astype(np.float32)


class MultiPoseExportDecoder(ExportDecoder):
    """Pose in a graph: ``trans [B, 2, 3]`` -> ``boxes [B, K, 4]`` xyxy, ``scores [B, K]``, ``keypoints [B, K, J, 2]`` (image pixels)."""

    outputs = ("boxes", "scores", "keypoints")

    def to_outputs(self, dets: torch.Tensor, trans: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch, k = dets.shape[:2]
        joints = (dets.shape[2] - 6) // 2
        points = torch.cat([dets[..., :4].reshape(batch, 2 * k, 2), dets[..., 5 : 5 + 2 * joints].reshape(batch, k * joints, 2)], dim=1)
        mapped = to_image_pixels(points, trans)
        return mapped[:, : 2 * k].reshape(batch, k, 4), dets[..., 4], mapped[:, 2 * k :].reshape(batch, k, joints, 2)
