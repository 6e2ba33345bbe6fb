"""Records from our readers reproduce the original dataset's training targets on the fixture images.

The original's ``__getitem__`` reads annotations straight from its json; here the same images go
through ``read_coco`` / ``read_kitti`` first, and ``ImageRecord.annotations()`` feeds the task
encoders. Equal targets prove the records keep what the original used: annotation order, crowd
boxes, ``float32(x + w)`` corners, the category-id mapping, KITTI types, calibration and 3D fields.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from centernet.data import load_image, read_coco, read_kitti
from centernet.data.geometry import ImageMeta
from centernet.data.transforms import InputSpec, warp_to_input
from centernet.tasks import ddd
from centernet.tasks.ctdet import CtdetTask
from centernet.tasks.multi_pose import MultiPoseTask
from tests.helpers import assert_close

_META_KEYS = {"c", "s", "trans_input", "trans_output", "trans_output_rot", "gt_det", "input"}


def _fixture(reference_dir: Path, name: str) -> tuple[dict, dict[str, np.ndarray]]:
    info = json.loads((reference_dir / "targets" / f"{name}.json").read_text())
    assert info["images"], f"{name}.json lists no image"
    return info, dict(np.load(reference_dir / "targets" / f"{name}.npz"))


def _compare(targets: dict[str, np.ndarray], arrays: dict[str, np.ndarray], prefix: str) -> None:
    expected_keys = {key[len(prefix) :] for key in arrays if key.startswith(prefix)} - _META_KEYS
    assert expected_keys <= set(targets), f"{prefix}: missing targets {expected_keys - set(targets)}"
    for key in sorted(expected_keys):
        actual, expected = targets[key], arrays[prefix + key]
        assert actual.dtype == expected.dtype, f"{prefix}{key}: dtype {actual.dtype} != {expected.dtype}"
        if np.issubdtype(expected.dtype, np.integer):
            np.testing.assert_array_equal(actual, expected, err_msg=f"{prefix}{key}")
        else:
            assert_close(actual, expected, f"{prefix}{key}", atol=1e-6, rtol=1e-6)


def _whole_image(record, input_hw: tuple[int, int], output_hw: tuple[int, int], square: bool) -> ImageMeta:
    """The original's validation window: the whole image, centred; square (ctdet, pose) or ``(w, h)`` (ddd)."""
    height, width = record.height, record.width
    if square:
        center, scale = np.array([width / 2.0, height / 2.0], dtype=np.float32), max(height, width) * 1.0
    else:
        center, scale = np.array([width / 2.0, height / 2.0]), np.array([width, height], dtype=np.int32)
    return ImageMeta(center, scale, tuple(input_hw), tuple(output_hw), (height, width), calib=record.calib)


def test_coco_records_give_the_original_ctdet_targets(reference_dir: Path, data_dir: Path) -> None:
    info, arrays = _fixture(reference_dir, "ctdet_coco_val")
    dataset = read_coco(data_dir / "coco_mini" / "annotations" / "instances_val2017.json")
    assert list(dataset.category_ids) == info["valid_ids"]
    by_id = {record.image_id: index for index, record in enumerate(dataset)}
    task = CtdetTask(dataset.num_classes, max_objects=info["max_objs"])
    for image in info["images"]:
        prefix, index = image["key_prefix"], by_id[image["img_id"]]
        record = dataset[index]
        assert record.path.name == image["file_name"]
        assert (record.width, record.height) == (image["width"], image["height"])
        assert len(record) == image["num_annotations"]
        meta = _whole_image(record, (image["input_h"], image["input_w"]), (image["output_h"], image["output_w"]), True)
        np.testing.assert_array_equal(meta.center, arrays[prefix + "c"])
        targets = task.encode(record.annotations(), meta)
        _compare(targets, arrays, prefix)
        assert int(targets["reg_mask"].sum()) == image["num_valid_objects"]
        if image["has_input"]:
            spec = InputSpec(input_hw=meta.input_hw, mean=tuple(info["mean_bgr"]), std=tuple(info["std_bgr"]))
            network_input = spec.normalize(warp_to_input(dataset.load_image(index), meta).astype(np.float32) / 255.0)
            assert_close(network_input, arrays[prefix + "input"], f"{prefix}input", atol=1e-6, rtol=1e-6)


def test_coco_keypoint_records_give_the_original_multi_pose_targets(reference_dir: Path, data_dir: Path) -> None:
    info, arrays = _fixture(reference_dir, "multi_pose_coco_val")
    dataset = read_coco(data_dir / "coco_mini" / "annotations" / "person_keypoints_val2017.json")
    assert dataset.num_classes == info["num_classes"] and len(dataset.keypoint_names) == info["num_joints"]
    by_id = {record.image_id: record for record in dataset}
    task = MultiPoseTask(flip_pairs=info["flip_idx"], max_people=info["max_objs"])
    for image in info["images"]:
        prefix, record = image["key_prefix"], by_id[image["img_id"]]
        assert len(record) == image["num_people"]
        meta = _whole_image(record, (image["input_res"],) * 2, (image["output_res"],) * 2, True)
        targets = task.encode(record.annotations(), meta)
        _compare(targets, arrays, prefix)
        assert int(targets["reg_mask"].sum()) == image["num_valid_objects"]


@pytest.mark.parametrize("source", ["KITTI layout", "converted json"])
def test_kitti_records_give_the_original_ddd_targets(reference_dir: Path, data_dir: Path, source: str) -> None:
    info, arrays = _fixture(reference_dir, "ddd_kitti_val")
    kitti_dir = data_dir / "kitti_mini" / "training"
    if source == "KITTI layout":
        dataset = read_kitti(kitti_dir, frames=[Path(image["file_name"]).stem for image in info["images"]])
    else:
        dataset = read_coco(reference_dir / "targets" / "ddd_kitti_val_coco.json", image_dir=kitti_dir / "image_2")
    assert len(dataset.class_names) == info["num_classes"]
    by_id = {record.image_id: record for record in dataset}
    task = ddd.DddTask(num_classes=info["num_classes"], max_objects=info["max_objs"])
    for image in info["images"]:
        prefix, record = image["key_prefix"], by_id[image["img_id"]]
        annotations = record.annotations()
        assert [ddd.KITTI_TYPES.index(t) + 1 for t in annotations["types"]] == image["categories"]
        meta = _whole_image(record, (image["input_h"], image["input_w"]), (image["output_h"], image["output_w"]), False)
        np.testing.assert_array_equal(meta.center, arrays[prefix + "c"])
        targets = task.encode(annotations, meta)
        _compare(targets, arrays, prefix)
        assert int(targets["reg_mask"].sum()) == image["num_valid_objects"]


def test_loaded_pixels_are_the_originals_cv2_imread(reference_dir: Path, data_dir: Path) -> None:
    import cv2

    info, _ = _fixture(reference_dir, "ctdet_coco_val")
    for image in info["images"]:
        path = data_dir / "coco_mini" / "val2017" / image["file_name"]
        np.testing.assert_array_equal(load_image(path), cv2.imread(str(path)))
