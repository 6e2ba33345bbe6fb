"""Multi-person pose estimation (the original's ``multi_pose`` task) on COCO keypoints.

Each person is a peak on the centre heat map (``hm``, one class); at the peak the network regresses
the box size (``wh``), the sub-pixel centre offset (``reg``) and the 17 joints as offsets from the
integer centre (``hps``, 34 channels). Two optional heads refine the joints bottom-up: a heat map
per joint (``hm_hp``, 17 channels) and a shared sub-pixel joint offset (``hp_offset``). Decoding
snaps each regressed joint to the nearest confident joint peak inside the person's box.

Units: target arrays and decoded rows are in output-map pixels (input / 4); post-processed rows in
original image pixels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from centernet.data.categories import numbered_categories
from centernet.data.geometry import ImageMeta, affine_transform
from centernet.data.keypoints import COCO_FLIP_PAIRS, NUM_JOINTS, flip_pose_annotations
from centernet.data.records import DataFormatError, DetectionDataset
from centernet.data.results import Results
from centernet.evaluation.scoring import score_coco
from centernet.tasks.base import HeadOutputs, Task, final_stack
from centernet.tasks.losses import clamped_sigmoid, dense_l1_loss, focal_loss, reg_l1_loss, reg_weighted_l1_loss
from centernet.tasks.multi_pose_decoding import MultiPoseExportDecoder, merge_flipped, multi_pose_decode, multi_pose_post_process
from centernet.tasks.registry import register_task
from centernet.tasks.targets import draw_dense_reg, draw_gaussian, gaussian_radius
from centernet.tasks.tta import merge_multi_pose

if TYPE_CHECKING:
    from centernet.data.augment import AugmentedImage, AugmentRandom, TrainAugmentation

HEADS = {"hm": 1, "wh": 2, "hps": 2 * NUM_JOINTS, "reg": 2, "hm_hp": NUM_JOINTS, "hp_offset": 2}
"""Head name -> channels, in the original's options order (checkpoint compatible)."""

MAX_PEOPLE = 32
IGNORE_VALUE = 0.9999  # below 1, so the focal loss sees no positive, and its negative weight (1 - 0.9999)^4 ~ 0
# The original defaults, in the order it sums the terms (hp_offset shares off_weight).
LOSS_WEIGHTS = {
    "hm_loss": 1.0,
    "wh_loss": 0.1,
    "off_loss": 1.0,
    "hp_loss": 1.0,
    "hm_hp_loss": 1.0,
    "hp_offset_loss": 1.0,
}


@dataclass
class MultiPoseOptions:
    """The pose task's switches (a recipe's ``task_options``), the original's target-set options."""

    # The original's --dense_hp: joint offsets regressed over each person's Gaussian (weighted by
    # it), not at the centre pixel alone.
    dense_hp: bool = False
    # Joint heat maps (False: the original's --not_hm_hp, which also drops hp_offset).
    hm_hp: bool = True
    # Joint sub-pixel offsets (False: the original's --not_reg_hp_offset).
    hp_offset: bool = True


# ----------------------------------------------------------------------------------------------
# Targets
# ----------------------------------------------------------------------------------------------


def encode_multi_pose(
    boxes: np.ndarray,
    keypoints: np.ndarray,
    trans_output: np.ndarray,
    trans_output_rot: np.ndarray,
    output_size: tuple[int, int],
    rotated: bool = False,
    max_people: int = MAX_PEOPLE,
    dense_hp: bool = False,
) -> dict[str, np.ndarray]:
    """Training targets of one image, exactly as the original ``MultiPoseDataset``.

    Row ``k`` is person ``k`` (annotation order; at most ``max_people``). Per person with a valid
    box: the centre Gaussian (radius from the rounded-up box size), box size and centre offset;
    per labelled joint that lands inside the output map: its offset from the integer centre,
    a joint Gaussian with the person's radius, and its sub-pixel offset. A person without any
    labelled joint gets the centre Gaussian (peak 1) but ``reg_mask = 0``. Joints outside the map
    and unlabelled joints are masked out.

    Args:
        boxes: ``[N, 4]`` float32 xyxy in (already mirrored, if flipped) image pixels.
        keypoints: ``[N, J, 3]`` joints ``(x, y, v)`` in the same pixels; ``v > 0`` is labelled.
        trans_output: ``[2, 3]`` image -> output-map affine WITHOUT rotation (used for boxes).
        trans_output_rot: the same WITH the rotation augmentation (used for joints).
        output_size: ``(width, height)`` of the output map.
        rotated: whether a rotation augmentation was applied; as in the original, the centre heat
            map then becomes ``IGNORE_VALUE`` everywhere and centre/joint regression masks are 0
            (rotated boxes are not trusted; only the joint maps train).
        max_people: target rows.
        dense_hp: the original's ``--dense_hp``: instead of ``hps`` / ``hps_mask``, return
            ``dense_hps [2J, Ho, Wo]`` (at each pixel a person's Gaussian rules, the offset from
            that pixel to each of its joints, channel ``2j`` = x) and ``dense_hps_mask [2J, Ho, Wo]``
            (the person's centre Gaussian, for both channels of each joint on the map).

    Returns:
        ``hm [1, Ho, Wo]``, ``wh``/``reg [M, 2]``, ``ind [M]`` int64, ``reg_mask [M]`` uint8,
        ``hps [M, 2J]`` joint minus integer centre, ``hps_mask [M, 2J]`` uint8, ``hm_hp [J, Ho, Wo]``,
        ``hp_offset [M*J, 2]``, ``hp_ind [M*J]`` int64, ``hp_mask [M*J]`` int64 (index
        ``person * J + joint``), and ``gt_det [n, 5 + 2J + 1]`` rows
        ``[x1, y1, x2, y2, 1, joints (x, y)..., cls0]`` in output pixels.
    """
    out_w, out_h = int(output_size[0]), int(output_size[1])
    num_joints = keypoints.shape[1]
    hm = np.zeros((1, out_h, out_w), dtype=np.float32)
    hm_hp = np.zeros((num_joints, out_h, out_w), dtype=np.float32)
    wh = np.zeros((max_people, 2), dtype=np.float32)
    reg = np.zeros((max_people, 2), dtype=np.float32)
    ind = np.zeros((max_people,), dtype=np.int64)
    reg_mask = np.zeros((max_people,), dtype=np.uint8)
    hps = np.zeros((max_people, 2 * num_joints), dtype=np.float32)
    hps_mask = np.zeros((max_people, 2 * num_joints), dtype=np.uint8)
    hp_offset = np.zeros((max_people * num_joints, 2), dtype=np.float32)
    hp_ind = np.zeros((max_people * num_joints,), dtype=np.int64)
    hp_mask = np.zeros((max_people * num_joints,), dtype=np.int64)
    if dense_hp:
        dense_kps = np.zeros((num_joints, 2, out_h, out_w), dtype=np.float32)
        dense_kps_mask = np.zeros((num_joints, out_h, out_w), dtype=np.float32)
    gt_det = []

    for k in range(min(len(boxes), max_people)):
        bbox = np.asarray(boxes[k], dtype=np.float32).copy()
        joints = np.asarray(keypoints[k], dtype=np.float32).copy()
        bbox[:2] = affine_transform(bbox[:2], trans_output)
        bbox[2:] = affine_transform(bbox[2:], trans_output)
        bbox[[0, 2]] = np.clip(bbox[[0, 2]], 0, out_w - 1)
        bbox[[1, 3]] = np.clip(bbox[[1, 3]], 0, out_h - 1)
        h, w = bbox[3] - bbox[1], bbox[2] - bbox[0]
        if not ((h > 0 and w > 0) or rotated):
            continue
        radius = max(0, int(gaussian_radius((math.ceil(h), math.ceil(w)))))
        ct = np.array([(bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2], dtype=np.float32)
        ct_int = ct.astype(np.int32)
        wh[k] = w, h
        ind[k] = ct_int[1] * out_w + ct_int[0]
        reg[k] = ct - ct_int
        reg_mask[k] = 1
        if joints[:, 2].sum() == 0:
            # Still a person to detect (Gaussian drawn below), but nothing to regress.
            hm[0, ct_int[1], ct_int[0]] = IGNORE_VALUE
            reg_mask[k] = 0

        for j in range(num_joints):
            if joints[j, 2] <= 0:
                continue
            joints[j, :2] = affine_transform(joints[j, :2], trans_output_rot)
            if not (0 <= joints[j, 0] < out_w and 0 <= joints[j, 1] < out_h):
                continue
            hps[k, 2 * j : 2 * j + 2] = joints[j, :2] - ct_int
            hps_mask[k, 2 * j : 2 * j + 2] = 1
            joint_int = joints[j, :2].astype(np.int32)
            hp_offset[k * num_joints + j] = joints[j, :2] - joint_int
            hp_ind[k * num_joints + j] = joint_int[1] * out_w + joint_int[0]
            hp_mask[k * num_joints + j] = 1
            if dense_hp:
                # Before this person's centre Gaussian: the ruling test sees the others only.
                draw_dense_reg(dense_kps[j], hm[0:1], ct_int, hps[k, 2 * j : 2 * j + 2], radius, is_offset=True)
                draw_gaussian(dense_kps_mask[j], ct_int, radius)
            draw_gaussian(hm_hp[j], joint_int, radius)
        draw_gaussian(hm[0], ct_int, radius)
        gt_det.append(
            [ct[0] - w / 2, ct[1] - h / 2, ct[0] + w / 2, ct[1] + h / 2, 1.0, *joints[:, :2].reshape(-1).tolist(), 0.0]
        )

    if rotated:
        hm[:] = IGNORE_VALUE
        reg_mask[:] = 0
        hps_mask[:] = 0
    targets = {
        "hm": hm,
        "wh": wh,
        "reg": reg,
        "ind": ind,
        "reg_mask": reg_mask,
        "hps": hps,
        "hps_mask": hps_mask,
        "hm_hp": hm_hp,
        "hp_offset": hp_offset,
        "hp_ind": hp_ind,
        "hp_mask": hp_mask,
        "gt_det": np.array(gt_det, dtype=np.float32).reshape(-1, 5 + 2 * num_joints + 1),
    }
    if dense_hp:
        del targets["hps"], targets["hps_mask"]
        targets["dense_hps"] = dense_kps.reshape(2 * num_joints, out_h, out_w)
        targets["dense_hps_mask"] = np.repeat(dense_kps_mask, 2, axis=0)
    return targets


# ----------------------------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# Task
# ----------------------------------------------------------------------------------------------


@register_task
class MultiPoseTask(Task):
    """Multi-person pose: heads, targets, loss, decoder and post-processing.

    Args:
        num_classes: must be 1 (person).
        joint_heatmaps: keep the ``hm_hp`` head and its loss (the original's ``hm_hp``).
        joint_offsets: keep the ``hp_offset`` head and its loss (the original's ``reg_hp_offset``).
        flip_pairs: left/right joint pairs, for mirroring annotations and the flip test.
        loss_weights: overrides of ``LOSS_WEIGHTS``.
        max_people: target rows per image.
        dense_hp: the original's ``--dense_hp``: the joint loss covers each person's Gaussian
            (dense targets weighted by it) instead of its centre pixel alone; heads unchanged.
    """

    name = "multi_pose"
    default_loss_weights = LOSS_WEIGHTS
    options_class = MultiPoseOptions
    object_cap_option = "max_people"
    optional_heads = frozenset({"hm_hp", "hp_offset"})

    def __init__(
        self,
        num_classes: int = 1,
        joint_heatmaps: bool = True,
        joint_offsets: bool = True,
        flip_pairs: Sequence[tuple[int, int]] = COCO_FLIP_PAIRS,
        loss_weights: Mapping[str, float] | None = None,
        max_people: int = MAX_PEOPLE,
        dense_hp: bool = False,
    ) -> None:
        if num_classes != 1:
            raise ValueError(f"multi_pose detects one class (person); got num_classes={num_classes}")
        super().__init__(num_classes, loss_weights, {"hm_hp": joint_heatmaps, "hp_offset": joint_offsets})
        self.joint_heatmaps = joint_heatmaps
        self.joint_offsets = joint_offsets
        self.flip_pairs = tuple(tuple(pair) for pair in flip_pairs)
        self.max_people = max_people
        self.dense_hp = dense_hp

    @classmethod
    def default_categories(cls, num_classes: int) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """COCO's one ``person`` class (id 1), else numbered ones."""
        return (("person",), (1,)) if num_classes == 1 else numbered_categories(num_classes)

    def require_annotations(self, dataset: DetectionDataset) -> None:
        """Person keypoints with COCO's 17 joints."""
        if dataset.keypoint_names is None:
            raise DataFormatError(
                f"{dataset.source}: has no keypoint annotations; the multi_pose task needs person keypoints "
                "(a COCO person_keypoints json or a YOLO pose yaml with kpt_shape)"
            )
        if len(dataset.keypoint_names) != NUM_JOINTS:
            raise DataFormatError(
                f"{dataset.source}: {len(dataset.keypoint_names)} keypoints per person; the multi_pose task "
                f"has COCO's {NUM_JOINTS} joints"
            )

    @classmethod
    def head_channels(cls, num_classes: int) -> dict[str, int]:
        return {**HEADS, "hm": num_classes}

    @classmethod
    def constructor_options(cls, options: MultiPoseOptions) -> dict[str, bool]:
        # The original's --not_hm_hp also drops the joint offsets (they refine joint heat-map peaks).
        return {
            "dense_hp": options.dense_hp,
            "joint_heatmaps": options.hm_hp,
            "joint_offsets": options.hm_hp and options.hp_offset,
        }

    @classmethod
    def options_for_heads(cls, heads: Mapping[str, int], num_classes: int) -> dict[str, bool]:
        return {"joint_heatmaps": "hm_hp" in heads, "joint_offsets": "hp_offset" in heads}

    def augment(self, image: np.ndarray, augmentation: TrainAugmentation, rng: AugmentRandom) -> AugmentedImage:
        """The original pose data set's augmentation: the 2D window jitter, then the rotation test
        (drawn on every sample, ``rotate_prob``; an angle only when it fires), the flip, colours.

        Under rotation the input and the joints turn; boxes keep the unrotated output warp.
        """
        height, width = image.shape[:2]
        center, window = augmentation.square_window(height, width)
        window = augmentation.jitter_window(center, window, height, width, rng)
        rot = augmentation.draw_rotation(rng)
        flipped = augmentation.draw_flip(rng)
        return augmentation.render(image, center, window, rng, rot=rot, flipped=flipped)

    def encode(self, annotations: Mapping[str, np.ndarray], meta: ImageMeta) -> dict[str, np.ndarray]:
        """Targets of one image (see ``encode_multi_pose``).

        Annotations: ``boxes [N, 4]`` xyxy and ``keypoints [N, J, 3]`` in source pixels, not
        mirrored (mirrored here when ``meta.flipped``).
        """
        boxes = np.asarray(annotations["boxes"], dtype=np.float32).reshape(-1, 4)
        keypoints = np.asarray(annotations["keypoints"], dtype=np.float32).reshape(len(boxes), NUM_JOINTS, 3)
        if meta.flipped:
            boxes, keypoints = flip_pose_annotations(boxes, keypoints, meta.image_hw[1], self.flip_pairs)
        targets = encode_multi_pose(
            boxes,
            keypoints,
            meta.output_transform(rot=0),
            meta.output_transform(),
            meta.output_hw[::-1],
            rotated=meta.rot != 0,
            max_people=self.max_people,
            dense_hp=self.dense_hp,
        )
        if not self.joint_heatmaps:
            del targets["hm_hp"]
        if not self.joint_offsets:
            for name in ("hp_offset", "hp_ind", "hp_mask"):
                del targets[name]
        return targets

    def stack_losses(self, output: HeadOutputs, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The original ``MultiPoseLoss`` terms, unweighted.

        Focal loss on ``hm`` and ``hm_hp``; per-coordinate L1 (``reg_weighted_l1_loss``) on the
        joints ``hps``; L1 normalised by the object count (``reg_l1_loss``) on ``wh``, ``reg``
        (``reg_mask``) and ``hp_offset`` (``hp_mask``). Terms whose head is off or whose weight is 0 are 0.
        """
        weights = self.loss_weights
        zero = output["hm"].new_zeros(())
        ind, reg_mask = batch["ind"], batch["reg_mask"]
        if self.dense_hp:
            hp_loss = dense_l1_loss(output["hps"], batch["dense_hps"], batch["dense_hps_mask"])
        else:
            hp_loss = reg_weighted_l1_loss(output["hps"], batch["hps_mask"], ind, batch["hps"])
        losses = {
            "hm_loss": focal_loss(clamped_sigmoid(output["hm"]), batch["hm"]),
            "hp_loss": hp_loss,
            "wh_loss": zero,
            "off_loss": zero,
            "hm_hp_loss": zero,
            "hp_offset_loss": zero,
        }
        if weights["wh_loss"] > 0:
            losses["wh_loss"] = reg_l1_loss(output["wh"], reg_mask, ind, batch["wh"])
        if "reg" in output and weights["off_loss"] > 0:
            losses["off_loss"] = reg_l1_loss(output["reg"], reg_mask, ind, batch["reg"])
        if "hp_offset" in output and weights["hp_offset_loss"] > 0:
            losses["hp_offset_loss"] = reg_l1_loss(
                output["hp_offset"], batch["hp_mask"], batch["hp_ind"], batch["hp_offset"]
            )
        if "hm_hp" in output and weights["hm_hp_loss"] > 0:
            losses["hm_hp_loss"] = focal_loss(clamped_sigmoid(output["hm_hp"]), batch["hm_hp"])
        return {name: losses[name] for name in LOSS_WEIGHTS}

    def decode(self, outputs: HeadOutputs | list[HeadOutputs], K: int = 100, flip: bool = False) -> torch.Tensor:
        """``multi_pose_decode`` rows ``[B, K, 40]`` from raw head maps (sigmoid, optional flip merge)."""
        output = final_stack(outputs)
        if flip:
            maps = merge_flipped(output, self.flip_pairs)
        else:
            maps = {name: value for name, value in output.items()}
            maps["hm"] = output["hm"].sigmoid()
            if "hm_hp" in output:
                maps["hm_hp"] = output["hm_hp"].sigmoid()
        return multi_pose_decode(
            maps["hm"],
            maps["wh"],
            maps["hps"],
            reg=maps.get("reg"),
            hm_hp=maps.get("hm_hp") if self.joint_heatmaps else None,
            hp_offset=maps.get("hp_offset") if self.joint_offsets else None,
            K=K,
        )

    def post_process(self, dets: torch.Tensor | np.ndarray, meta: ImageMeta) -> np.ndarray:
        """``[K, 39]`` rows of one image in source pixels (see ``multi_pose_post_process``)."""
        if isinstance(dets, torch.Tensor):
            dets = dets.detach().cpu().numpy()
        return multi_pose_post_process(dets, meta.center, meta.scale, meta.output_hw[::-1])

    def detections(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """``post_process`` rows as flat per-detection arrays, in decode order.

        Returns:
            ``boxes [N, 4]`` float32 image pixels, ``scores [N]``, ``labels [N]`` int64 (all 0,
            person), ``keypoints [N, J, 3]`` joints ``(x, y, 1)`` in image pixels (the model gives
            no per-joint confidence; 1 as in the original's COCO results).
        """
        rows = np.asarray(rows, dtype=np.float32)
        joints = rows[:, 5:].reshape(len(rows), -1, 2)
        keypoints = np.concatenate([joints, np.ones((*joints.shape[:2], 1), np.float32)], axis=2)
        return {
            "boxes": rows[:, :4],
            "scores": rows[:, 4],
            "labels": np.zeros(len(rows), np.int64),
            "keypoints": keypoints,
        }

    # ------------------------------------------------------------------ test-time behaviour
    def merge_outputs(self, per_scale: Sequence[np.ndarray], nms: bool = False, max_per_image: int = 100) -> np.ndarray:
        """The original ``MultiPoseDetector.merge_outputs``: all scales' rows, soft-NMS, no cut."""
        return merge_multi_pose(per_scale, nms=nms)

    def to_results(self, merged: np.ndarray, names, image=None, path=None, calib=None):
        """Pose ``Results`` (boxes, scores, ``keypoints [N, J, 3]``) of one image, best first."""
        found = self.detections(np.asarray(merged, np.float32).reshape(-1, 5 + 2 * NUM_JOINTS))
        order = np.argsort(-found["scores"], kind="stable")
        return Results(
            found["boxes"][order], found["scores"][order], found["labels"][order], names, image, path, found["keypoints"][order]
        )

    def coco_rows(self, result, image_id: int, category_ids: Sequence[int]) -> list[dict]:
        """COCO keypoint results of one image as the original writes them (``Results.to_coco``)."""
        return result.to_coco(image_id)

    def score(self, data, predictions):
        """COCO keypoint OKS AP."""
        return score_coco(self, data, predictions, keypoints=True)

    def export_decoder(self, K: int = 100, flip: bool = False) -> MultiPoseExportDecoder:
        return MultiPoseExportDecoder(self, K, flip)

    def from_export(self, outputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """``[K, 39]`` rows of one image's graph outputs, as ``post_process``."""
        boxes = np.asarray(outputs["boxes"], np.float32)
        joints = np.asarray(outputs["keypoints"], np.float32).reshape(len(boxes), -1)
        return np.concatenate([boxes, np.asarray(outputs["scores"], np.float32)[:, None], joints], axis=1)
