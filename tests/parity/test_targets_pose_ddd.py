"""Parity of the pose and 3D training targets with the original datasets (``targets/``).

Targets are rebuilt from the shared mini data sets (COCO keypoints; KITTI both through the
original's converted json and straight from KITTI's own label_2 / calib files). Images, sizes and
the letterbox come from the fixture json and the image files themselves.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from centernet.data.geometry import ImageMeta
from centernet.data.kitti import read_calib, read_kitti_file
from centernet.tasks import ddd
from centernet.tasks.ddd import DddTask
from centernet.tasks.multi_pose import MultiPoseTask
from tests.helpers import assert_close

# Float targets are deterministic float32 maths; integer targets must match exactly.
FLOAT_TOL = {"atol": 1e-6, "rtol": 1e-6}


def _assert_targets_equal(targets: dict[str, np.ndarray], arrays, prefix: str, source: str) -> None:
    for key, value in targets.items():
        expected = arrays[prefix + key]
        name = f"{source} {prefix}{key}"
        assert value.shape == expected.shape, f"{name}: shape {value.shape} != {expected.shape}"
        assert value.dtype == expected.dtype, f"{name}: dtype {value.dtype} != {expected.dtype}"
        if np.issubdtype(expected.dtype, np.integer):
            np.testing.assert_array_equal(value, expected, err_msg=name)
        else:
            assert_close(value, expected, name, **FLOAT_TOL)


def _image_hw(path) -> tuple[int, int]:
    image = cv2.imread(str(path))
    assert image is not None, f"cannot read {path}"
    return image.shape[0], image.shape[1]


# ----------------------------------------------------------------------------------------------
# multi_pose on COCO keypoints
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pose_fixture(reference_dir):
    doc = json.loads((reference_dir / "targets" / "multi_pose_coco_val.json").read_text())
    return doc, np.load(reference_dir / "targets" / "multi_pose_coco_val.npz")


@pytest.fixture(scope="module")
def coco_keypoints(data_dir):
    return COCO(str(data_dir / "coco_mini" / "annotations" / "person_keypoints_val2017.json"))


def test_multi_pose_targets(pose_fixture, coco_keypoints, data_dir):
    doc, arrays = pose_fixture
    task = MultiPoseTask(flip_pairs=doc["flip_idx"], max_people=doc["max_objs"])
    assert task.num_classes == doc["num_classes"]
    assert doc["images"], "fixture lists no image"
    for image in doc["images"]:
        prefix = image["key_prefix"]
        height, width = _image_hw(data_dir / "coco_mini" / "val2017" / image["file_name"])
        # The original's validation letterbox: the whole image, centred, square window.
        center = np.array([width / 2.0, height / 2.0], dtype=np.float32)
        scale = max(height, width) * 1.0
        assert_close(center, arrays[prefix + "c"], f"{prefix}c", atol=0, rtol=0)
        assert_close(scale, arrays[prefix + "s"], f"{prefix}s", atol=0, rtol=0)
        meta = ImageMeta(
            center=center,
            scale=scale,
            input_hw=(image["input_res"],) * 2,
            output_hw=(image["output_res"],) * 2,
            image_hw=(height, width),
        )
        assert_close(meta.input_transform(), arrays[prefix + "trans_input"], f"{prefix}trans_input", atol=1e-12)
        assert_close(
            meta.output_transform(), arrays[prefix + "trans_output_rot"], f"{prefix}trans_output_rot", atol=1e-12
        )
        assert_close(meta.output_transform(rot=0), arrays[prefix + "trans_output"], f"{prefix}trans_output", atol=1e-12)

        anns = coco_keypoints.loadAnns(coco_keypoints.getAnnIds(imgIds=[image["img_id"]]))
        assert len(anns) == image["num_people"]
        # COCO [x, y, w, h] -> corners, summed in float64 like the original before its float32 cast.
        boxes = np.array(
            [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns],
            dtype=np.float64,
        )
        keypoints = np.array([a["keypoints"] for a in anns], dtype=np.float32).reshape(len(anns), -1, 3)
        targets = task.encode({"boxes": boxes, "keypoints": keypoints}, meta)

        assert set(targets) == {k[len(prefix) :] for k in arrays.files if k.startswith(prefix)} - {
            "c",
            "s",
            "trans_input",
            "trans_output",
            "trans_output_rot",
        }
        _assert_targets_equal(targets, arrays, prefix, "multi_pose")
        assert int(targets["reg_mask"].sum()) == image["num_valid_objects"]


# ----------------------------------------------------------------------------------------------
# ddd on KITTI
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ddd_fixture(reference_dir):
    doc = json.loads((reference_dir / "targets" / "ddd_kitti_val.json").read_text())
    converted = json.loads((reference_dir / "targets" / "ddd_kitti_val_coco.json").read_text())
    return doc, converted, np.load(reference_dir / "targets" / "ddd_kitti_val.npz")


def test_kitti_type_roles_match_the_original(ddd_fixture):
    """The fixture's ``cat_ids`` (converted-json id -> channel, or the original's negative codes)."""
    doc, converted, _ = ddd_fixture
    assert tuple(doc["class_name"][1:]) == ddd.CLASS_NAMES
    assert [c["name"] for c in sorted(converted["categories"], key=lambda c: c["id"])] == list(ddd.KITTI_TYPES)
    for category_id, code in doc["cat_ids"].items():
        kitti_type = ddd.KITTI_TYPES[int(category_id) - 1]
        if code >= 0:
            assert ddd.CLASS_NAMES[code] == kitti_type
        elif code <= -99:
            assert kitti_type in ddd.SKIPPED_TYPES
        elif code == -1:
            assert ddd.IGNORED_AS[kitti_type] == ddd.CLASS_NAMES
        else:
            assert ddd.IGNORED_AS[kitti_type] == (ddd.CLASS_NAMES[-code - 2],)


def _read_kitti_label(path) -> dict[str, np.ndarray]:
    """A KITTI ``label_2`` file as ``DddTask.encode`` annotations (float64, as parsed)."""
    objects = read_kitti_file(path, detections=False)
    return {
        "types": np.array(objects.types),
        "boxes": objects.boxes,
        "alpha": objects.alpha,
        "dims": objects.dims,
        "location": objects.locations,
    }


def _from_converted_json(annotations: list[dict]) -> dict[str, np.ndarray]:
    """The same fields from the original's converted json (types numbered 1..9, boxes ``x, y, w, h``).

    Corners are rebuilt as ``x + w`` in float64 like the original's reader.
    """
    return {
        "types": np.array([ddd.KITTI_TYPES[a["category_id"] - 1] for a in annotations]),
        "boxes": np.array(
            [
                [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                for a in annotations
            ],
            dtype=np.float64,
        ).reshape(-1, 4),
        "alpha": np.array([a["alpha"] for a in annotations], dtype=np.float64),
        "dims": np.array([a["dim"] for a in annotations], dtype=np.float64).reshape(-1, 3),
        "location": np.array([a["location"] for a in annotations], dtype=np.float64).reshape(-1, 3),
    }


def _ddd_sources(image: dict, converted: dict, kitti_dir):
    """The frame's annotations and calibration from the converted json and from KITTI's own files."""
    info = next(i for i in converted["images"] if i["id"] == image["img_id"])
    anns = [a for a in converted["annotations"] if a["image_id"] == image["img_id"]]
    stem = image["file_name"].rsplit(".", 1)[0]
    yield "converted json", _from_converted_json(anns), np.array(info["calib"], dtype=np.float32)
    yield (
        "KITTI txt",
        _read_kitti_label(kitti_dir / "label_2" / f"{stem}.txt"),
        read_calib(kitti_dir / "calib" / f"{stem}.txt"),
    )


def test_ddd_targets(ddd_fixture, data_dir):
    doc, converted, arrays = ddd_fixture
    kitti_dir = data_dir / "kitti_mini" / "training"
    task = DddTask(num_classes=doc["num_classes"], max_objects=doc["max_objs"])
    assert doc["images"], "fixture lists no image"
    for image in doc["images"]:
        prefix = image["key_prefix"]
        height, width = _image_hw(kitti_dir / "image_2" / image["file_name"])
        # The original's validation window: the whole image (not keep_res), float64 centre.
        center = np.array([width / 2.0, height / 2.0])
        scale = np.array([width, height], dtype=np.int32)
        np.testing.assert_array_equal(center, arrays[prefix + "c"])
        np.testing.assert_array_equal(scale, arrays[prefix + "s"])
        for source, objects, calib in _ddd_sources(image, converted, kitti_dir):
            assert [ddd.KITTI_TYPES.index(t) + 1 for t in objects["types"]] == image["categories"], source
            meta = ImageMeta(
                center=center,
                scale=scale,
                input_hw=(image["input_h"], image["input_w"]),
                output_hw=(image["output_h"], image["output_w"]),
                image_hw=(height, width),
                calib=calib,
            )
            assert_close(meta.input_transform(), arrays[prefix + "trans_input"], f"{prefix}trans_input", atol=1e-12)
            assert_close(meta.output_transform(), arrays[prefix + "trans_output"], f"{prefix}trans_output", atol=1e-12)
            targets = task.encode(objects, meta)
            assert set(targets) == {k[len(prefix) :] for k in arrays.files if k.startswith(prefix)} - {
                "c",
                "s",
                "trans_input",
                "trans_output",
            }
            _assert_targets_equal(targets, arrays, prefix, source)
            assert int(targets["reg_mask"].sum()) == image["num_valid_objects"]


def test_ddd_targets_need_calibration(ddd_fixture):
    doc, converted, _ = ddd_fixture
    image = doc["images"][0]
    anns = [a for a in converted["annotations"] if a["image_id"] == image["img_id"]]
    meta = ImageMeta(
        center=np.array(image["c"]),
        scale=np.array(image["s"], dtype=np.int32),
        input_hw=(image["input_h"], image["input_w"]),
        output_hw=(image["output_h"], image["output_w"]),
        image_hw=(image["height"], image["width"]),
    )
    with pytest.raises(ValueError, match="camera matrix"):
        DddTask().encode(_from_converted_json(anns), meta)
