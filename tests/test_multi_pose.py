"""Behaviour of the multi-person pose task: targets, loss, decoding, flip test and COCO results."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from centernet.data.geometry import ImageMeta
from centernet.data.results import coco_keypoint_results
from centernet.tasks.decoding import flip_lr, flip_lr_pairs
from centernet.data.keypoints import COCO_FLIP_PAIRS, NUM_JOINTS, flip_pose_annotations
from centernet.tasks.multi_pose import HEADS, IGNORE_VALUE, MultiPoseTask
from centernet.tasks.multi_pose_decoding import flip_joint_offsets

IMAGE_HW = (200, 240)
OUTPUT_HW = (50, 60)  # window of the whole image at stride 4


def _meta(**changes) -> ImageMeta:
    height, width = IMAGE_HW
    fields = {
        "center": np.array([width / 2, height / 2], np.float32),
        "scale": float(max(height, width)),
        "input_hw": (OUTPUT_HW[0] * 4, OUTPUT_HW[1] * 4),
        "output_hw": OUTPUT_HW,
        "image_hw": IMAGE_HW,
    }
    return ImageMeta(**{**fields, **changes})


def _person(x1: float, y1: float, x2: float, y2: float, visible: int = NUM_JOINTS) -> tuple[np.ndarray, np.ndarray]:
    """A box and joints spread inside it (each joint in its own output column), the first ``visible`` labelled."""
    steps = np.arange(NUM_JOINTS, dtype=np.float32)
    joints = np.zeros((NUM_JOINTS, 3), np.float32)
    joints[:, 0] = x1 + 2 + steps * (x2 - x1 - 4) / (NUM_JOINTS - 1)
    joints[:, 1] = y1 + 2 + (steps * 7 % NUM_JOINTS) * (y2 - y1 - 4) / (NUM_JOINTS - 1)
    joints[:visible, 2] = 2
    joints[visible:] = 0
    return np.array([x1, y1, x2, y2], np.float32), joints


def _annotations(*people) -> dict[str, np.ndarray]:
    return {"boxes": np.stack([p[0] for p in people]), "keypoints": np.stack([p[1] for p in people])}


def test_heads_follow_the_original_order_and_switches():
    assert MultiPoseTask().heads == HEADS
    assert list(HEADS) == ["hm", "wh", "hps", "reg", "hm_hp", "hp_offset"]
    assert "hm_hp" not in MultiPoseTask(joint_heatmaps=False).heads
    assert "hp_offset" not in MultiPoseTask(joint_offsets=False).heads
    with pytest.raises(ValueError):
        MultiPoseTask(num_classes=2)


def test_joints_outside_the_output_map_are_masked():
    box, joints = _person(20, 20, 100, 100)
    joints[3, :2] = (-30.0, 50.0)  # left of the image
    joints[4, :2] = (50.0, 500.0)  # below the image
    targets = MultiPoseTask().encode(_annotations((box, joints)), _meta())

    assert targets["reg_mask"][0] == 1
    for j in (3, 4):
        assert not targets["hps_mask"][0, 2 * j : 2 * j + 2].any()
        assert targets["hp_mask"][j] == 0
        assert not targets["hm_hp"][j].any()
        assert not targets["hps"][0, 2 * j : 2 * j + 2].any()
    inside = [j for j in range(NUM_JOINTS) if j not in (3, 4)]
    assert targets["hp_mask"][inside].all()
    assert all(targets["hm_hp"][j].max() == 1.0 for j in inside)


def test_person_without_labelled_joints_is_detected_but_not_regressed():
    labelled = _person(10, 10, 60, 90)
    unlabelled = _person(90, 20, 150, 110, visible=0)
    targets = MultiPoseTask().encode(_annotations(labelled, unlabelled), _meta())

    np.testing.assert_array_equal(targets["reg_mask"][:3], [1, 0, 0])
    centre = targets["ind"][1]
    assert targets["hm"][0].reshape(-1)[centre] == 1.0  # its Gaussian still peaks at 1
    assert targets["wh"][1].all()  # the size is written, the mask keeps it out of the loss
    assert not targets["hps_mask"][1].any()
    assert not targets["hp_mask"][NUM_JOINTS : 2 * NUM_JOINTS].any()
    assert len(targets["gt_det"]) == 2


def test_image_without_people_gives_empty_targets_and_a_finite_loss():
    task = MultiPoseTask()
    empty = {"boxes": np.zeros((0, 4), np.float32), "keypoints": np.zeros((0, NUM_JOINTS, 3), np.float32)}
    targets = task.encode(empty, _meta())
    assert not targets["hm"].any() and not targets["reg_mask"].any()
    assert targets["gt_det"].shape == (0, 5 + 2 * NUM_JOINTS + 1)

    batch = {k: torch.from_numpy(v)[None] for k, v in targets.items() if k != "gt_det"}
    outputs = {name: torch.zeros(1, c, *OUTPUT_HW, requires_grad=True) for name, c in task.heads.items()}
    total, stats = task.loss(outputs, batch)
    total.backward()
    assert torch.isfinite(total) and total > 0  # the focal loss's negative term alone
    assert stats["hp_loss"] == 0 and stats["wh_loss"] == 0


def test_flipped_meta_mirrors_boxes_and_swaps_joints():
    people = _annotations(_person(10, 10, 70, 100), _person(80, 30, 150, 110, visible=9))
    width = IMAGE_HW[1]
    task = MultiPoseTask()
    mirrored_center = np.array([width - IMAGE_HW[1] / 2 - 1, IMAGE_HW[0] / 2], np.float32)
    flipped = task.encode(people, _meta(flipped=True, center=mirrored_center))

    boxes, keypoints = flip_pose_annotations(people["boxes"], people["keypoints"], width)
    assert keypoints[0, 1, 0] == width - people["keypoints"][0, 2, 0] - 1  # left eye <- mirrored right eye
    manual = task.encode({"boxes": boxes, "keypoints": keypoints}, _meta(center=mirrored_center))
    for key in manual:
        np.testing.assert_array_equal(flipped[key], manual[key], err_msg=key)
    again = flip_pose_annotations(boxes, keypoints, width)
    np.testing.assert_allclose(again[1], people["keypoints"], atol=1e-4)


def test_rotation_turns_centre_map_into_ignore_and_masks_regression():
    targets = MultiPoseTask().encode(_annotations(_person(20, 20, 100, 100)), _meta(rot=15.0))
    assert (targets["hm"] == IGNORE_VALUE).all()
    assert not targets["reg_mask"].any() and not targets["hps_mask"].any()
    assert targets["hp_mask"].any() and targets["hm_hp"].max() == 1.0  # joint maps still train


def _ideal_outputs(targets: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Raw maps a perfect network would output for these targets."""
    height, width = targets["hm"].shape[1:]

    def logit(p: np.ndarray) -> torch.Tensor:
        return torch.logit(torch.from_numpy(p).clamp(1e-4, 1 - 1e-4))

    out = {"hm": logit(targets["hm"])[None], "hm_hp": logit(targets["hm_hp"])[None]}
    for name, channels in (("wh", 2), ("reg", 2), ("hps", 2 * NUM_JOINTS), ("hp_offset", 2)):
        out[name] = torch.zeros(1, channels, height * width)
    for k in np.flatnonzero(targets["reg_mask"]):
        for name in ("wh", "reg", "hps"):
            out[name][0, :, targets["ind"][k]] = torch.from_numpy(targets[name][k])
    for n in np.flatnonzero(targets["hp_mask"]):
        out["hp_offset"][0, :, targets["hp_ind"][n]] = torch.from_numpy(targets["hp_offset"][n])
    for name in ("wh", "reg", "hps", "hp_offset"):
        out[name] = out[name].reshape(1, -1, height, width)
    return out


def test_decode_recovers_encoded_people_in_image_pixels():
    people = _annotations(_person(10, 12, 112, 190), _person(124, 30, 230, 180))
    task = MultiPoseTask()
    meta = _meta()
    targets = task.encode(people, meta)
    dets = task.decode(_ideal_outputs(targets), K=5)
    assert dets.shape == (1, 5, 4 + 1 + 2 * NUM_JOINTS + 1)
    rows = task.post_process(dets[0], meta)[:2]
    rows = rows[np.argsort(rows[:, 0])]
    assert (rows[:, 4] > 0.99).all()
    np.testing.assert_allclose(rows[:, :4], people["boxes"], atol=1e-3)
    np.testing.assert_allclose(rows[:, 5:].reshape(2, NUM_JOINTS, 2), people["keypoints"][..., :2], atol=1e-3)


def test_joint_peaks_replace_regressed_joints_only_nearby_and_inside_the_box():
    task = MultiPoseTask()
    people = _annotations(_person(20, 20, 100, 100))
    targets = task.encode(people, _meta())
    outputs = _ideal_outputs(targets)
    exact = task.decode(outputs, K=3)[0, 0, 5:-1].reshape(NUM_JOINTS, 2)
    outputs["hps"] = outputs["hps"] + 0.7  # regression slightly off: the joint peaks correct it
    snapped = task.decode(outputs, K=3)[0, 0, 5:-1].reshape(NUM_JOINTS, 2)
    torch.testing.assert_close(snapped, exact)
    unsnapped = MultiPoseTask(joint_heatmaps=False).decode(outputs, K=3)[0, 0, 5:-1].reshape(NUM_JOINTS, 2)
    torch.testing.assert_close(unsnapped, exact + 0.7)
    outputs["hps"] = outputs["hps"] + 30.0  # too far from every peak (> 0.3 of the box): keep regression
    far = task.decode(outputs, K=3)[0, 0, 5:-1].reshape(NUM_JOINTS, 2)
    torch.testing.assert_close(far, exact + 30.7)


def test_flip_test_of_a_consistent_mirror_pair_equals_plain_decoding():
    generator = torch.Generator().manual_seed(0)
    raw = {name: torch.randn(1, c, 24, 24, generator=generator) for name, c in HEADS.items()}
    raw["hm"] = raw["hm"] - 3.0
    mirrored = {
        "hm": flip_lr(raw["hm"]),
        "wh": flip_lr(raw["wh"]),
        "hps": flip_joint_offsets(raw["hps"]),
        "hm_hp": flip_lr_pairs(raw["hm_hp"], COCO_FLIP_PAIRS),
        "reg": torch.zeros_like(raw["reg"]),
        "hp_offset": torch.zeros_like(raw["hp_offset"]),
    }
    pair = {name: torch.cat([raw[name], mirrored[name]]) for name in raw}
    task = MultiPoseTask()
    torch.testing.assert_close(task.decode(pair, K=10, flip=True), task.decode(raw, K=10), atol=1e-5, rtol=1e-5)


def test_coco_keypoint_results_format():
    row = np.array(
        [[10.004, 20.0, 50.5, 90.25, 0.876, *np.arange(2 * NUM_JOINTS, dtype=np.float32) + 0.333]], dtype=np.float32
    )
    [result] = coco_keypoint_results(397133, row)
    assert result["image_id"] == 397133 and result["category_id"] == 1
    assert result["bbox"] == [10.0, 20.0, 40.5, 70.25]
    assert result["score"] == 0.88
    assert len(result["keypoints"]) == 3 * NUM_JOINTS
    assert result["keypoints"][:6] == [0.33, 1.33, 1.0, 2.33, 3.33, 1.0]


def test_detections_flatten_post_processed_rows():
    rows = np.arange(3 * (5 + 2 * NUM_JOINTS), dtype=np.float32).reshape(3, -1)
    found = MultiPoseTask().detections(rows)
    np.testing.assert_array_equal(found["boxes"], rows[:, :4])
    np.testing.assert_array_equal(found["scores"], rows[:, 4])
    np.testing.assert_array_equal(found["labels"], [0, 0, 0])
    assert found["keypoints"].shape == (3, NUM_JOINTS, 3)
    np.testing.assert_array_equal(found["keypoints"][1, 2], [rows[1, 9], rows[1, 10], 1.0])
