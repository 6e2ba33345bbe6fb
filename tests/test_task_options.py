"""The original's target-set switches (--cat_spec_wh, --dense_hp, --not_hm_hp): config -> heads, targets, loss, decode."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from centernet.config import ConfigError, load_config
from centernet.data.geometry import ImageMeta
from centernet.models.detector import CenterNet
from centernet.engine.dataset import task_for
from centernet.tasks.registry import task_for_heads

META = ImageMeta(center=np.array([32.0, 32.0], np.float32), scale=64.0, input_hw=(64, 64), output_hw=(16, 16), image_hw=(64, 64))


def batch_of(targets: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v)[None] for k, v in targets.items() if k != "gt_det"}


def test_cat_spec_wh_trains_and_decodes_one_size_pair_per_class(tmp_path) -> None:
    task = task_for(load_config(None, ["train.cat_spec_wh=true"]), num_classes=3)
    assert task.heads == {"hm": 3, "wh": 6, "reg": 2}
    boxes = {"boxes": np.array([[4, 8, 20, 40], [36, 4, 60, 20]], np.float32), "labels": np.array([2, 0])}
    targets = task.encode(boxes, META)
    assert "wh" not in targets
    np.testing.assert_array_equal(targets["cat_spec_mask"][0], [0, 0, 0, 0, 1, 1])
    np.testing.assert_allclose(targets["cat_spec_wh"][0, 4:], [4.0, 8.0])
    np.testing.assert_allclose(targets["cat_spec_wh"][1, 0:2], [6.0, 4.0])

    # An output holding each class's size at the centres has zero size loss; other columns are free.
    batch = batch_of(targets)
    wh = torch.full((1, 6, 16, 16), 50.0)
    for k in range(2):
        y, x = divmod(int(targets["ind"][k]), 16)
        cols = targets["cat_spec_mask"][k].astype(bool)
        wh[0, torch.from_numpy(cols), y, x] = torch.from_numpy(targets["cat_spec_wh"][k][cols])
    outputs = {"hm": torch.zeros(1, 3, 16, 16), "wh": wh, "reg": torch.zeros(1, 2, 16, 16)}
    assert task.stack_losses(outputs, batch)["wh_loss"] == pytest.approx(0.0, abs=1e-6)
    outputs["wh"] = wh + 1.0
    assert task.stack_losses(outputs, batch)["wh_loss"] == pytest.approx(1.0, abs=1e-3)

    # Decoding reads the pair of the detected class.
    heat = torch.full((1, 3, 16, 16), -10.0)
    heat[0, 2, 6, 3] = 10.0
    wh = torch.zeros(1, 6, 16, 16)
    wh[0, :, 6, 3] = torch.tensor([1.0, 1.0, 2.0, 2.0, 4.0, 8.0])
    det = task.decode({"hm": heat, "wh": wh, "reg": torch.zeros(1, 2, 16, 16)}, K=1)[0, 0]
    assert det[5] == 2 and (det[2] - det[0], det[3] - det[1]) == (4.0, 8.0)

    # A saved detector comes back with per-class sizes from its heads alone.
    detector = CenterNet("res_18", task=task, input_size=(64, 64))
    detector.save(tmp_path / "model.pt")
    assert CenterNet.from_checkpoint(tmp_path / "model.pt").task.cat_spec_wh
    assert not task_for_heads("ctdet", 3, {"hm": 3, "wh": 2, "reg": 2}).cat_spec_wh
    with pytest.raises(ConfigError, match="exclude each other"):
        task_for(load_config(None, ["train.cat_spec_wh=true", "train.dense_wh=true"]), num_classes=3)


def pose_annotations() -> dict[str, np.ndarray]:
    keypoints = np.zeros((1, 17, 3), np.float32)
    keypoints[0, :, :2] = np.stack([np.linspace(20, 44, 17), np.linspace(12, 52, 17)], 1)
    keypoints[0, :, 2] = 2
    return {"boxes": np.array([[16, 8, 48, 56]], np.float32), "labels": np.zeros(1, np.int64), "keypoints": keypoints}


def test_dense_hp_regresses_joints_over_the_persons_gaussian() -> None:
    task = task_for(load_config(None, ["task=multi_pose", "train.dense_hp=true"]), num_classes=1)
    targets = task.encode(pose_annotations(), META)
    assert "hps" not in targets and targets["dense_hps"].shape == (34, 16, 16)
    mask = targets["dense_hps_mask"]
    np.testing.assert_array_equal(mask[0], targets["hm"][0])  # the centre Gaussian, per joint
    ys, xs = np.nonzero(mask[0])
    assert len(ys) > 1
    joint0 = np.array([20.0, 12.0]) / 4
    for y, x in zip(ys, xs):  # every pixel of the Gaussian points at the joint
        np.testing.assert_allclose(targets["dense_hps"][0:2, y, x], joint0 - [x, y], atol=1e-5)
    batch = batch_of(targets)
    outputs = {"hm": torch.zeros(1, 1, 16, 16), "wh": torch.zeros(1, 2, 16, 16), "reg": torch.zeros(1, 2, 16, 16),
               "hps": batch["dense_hps"].clone(), "hm_hp": torch.zeros(1, 17, 16, 16), "hp_offset": torch.zeros(1, 2, 16, 16)}
    assert task.stack_losses(outputs, batch)["hp_loss"] == pytest.approx(0.0, abs=1e-6)
    outputs["hps"] = batch["dense_hps"] + 2.0
    assert task.stack_losses(outputs, batch)["hp_loss"] == pytest.approx(2.0, rel=1e-3)


def test_not_hm_hp_drops_joint_heat_maps_and_offsets(tmp_path) -> None:
    task = task_for(load_config(None, ["task=multi_pose", "train.hm_hp=false"]), num_classes=1)
    assert set(task.heads) == {"hm", "wh", "hps", "reg"}
    targets = task.encode(pose_annotations(), META)
    assert not {"hm_hp", "hp_offset", "hp_ind", "hp_mask"} & set(targets)
    detector = CenterNet("res_18", task=task, input_size=(64, 64))
    detector.save(tmp_path / "pose.pt")
    assert set(CenterNet.from_checkpoint(tmp_path / "pose.pt").task.heads) == set(task.heads)
    with pytest.raises(ConfigError, match=r"task_options: unknown field\(s\) dense_hp.*ctdet task"):
        task_for(load_config(None, ["train.dense_hp=true"]), num_classes=3)
