"""Behaviour of the monocular 3D task: KITTI readers, targets, calibration, geometry, decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from centernet.data import objects3d
from centernet.data.geometry import ImageMeta
from centernet.tasks import ddd, ddd_decoding
from centernet.tasks.ddd import CLASS_NAMES, HEADS, IGNORE_VALUE, DddTask

IMAGE_HW = (96, 320)
OUTPUT_HW = (24, 80)
CALIB = np.array([[700.0, 0.0, 160.0, 45.0], [0.0, 700.0, 48.0, 0.2], [0.0, 0.0, 1.0, 0.003]], np.float32)


def _meta(calib=CALIB, **changes) -> ImageMeta:
    height, width = IMAGE_HW
    fields = {
        "center": np.array([width / 2, height / 2]),
        "scale": np.array([width, height], np.int32),
        "input_hw": (height, width),
        "output_hw": OUTPUT_HW,
        "image_hw": IMAGE_HW,
        "calib": calib,
    }
    return ImageMeta(**{**fields, **changes})


def _objects(*rows) -> dict[str, np.ndarray]:
    """Annotations from ``(type, x1, y1, x2, y2, alpha)`` rows; every object 1.5 x 1.6 x 4 m at 20 m."""
    n = len(rows)
    return {
        "types": np.array([r[0] for r in rows]),
        "boxes": np.array([r[1:5] for r in rows], np.float64).reshape(n, 4),
        "alpha": np.array([r[5] for r in rows], np.float64),
        "dims": np.tile([1.5, 1.6, 4.0], (n, 1)),
        "location": np.tile([1.0, 1.7, 20.0], (n, 1)),
        "rotation_y": np.zeros(n),
    }


def test_heads_follow_the_original_order():
    assert DddTask().heads == HEADS
    assert list(HEADS) == ["hm", "dep", "rot", "dim", "wh", "reg"]
    assert "wh" not in DddTask(regress_box_size=False).heads
    with pytest.raises(ValueError):
        DddTask(num_classes=80)


def test_missing_calibration_is_an_error_everywhere():
    task = DddTask()
    objects = _objects(("Car", 40, 20, 120, 70, 0.3))
    with pytest.raises(ValueError, match="camera matrix"):
        task.encode(objects, _meta(calib=None))
    dets = torch.zeros(1, 10, 18)
    with pytest.raises(ValueError, match="camera matrix"):
        task.post_process(dets[0], _meta(calib=None))
    with pytest.raises(ValueError, match="3x4"):
        task.post_process(dets[0], _meta(calib=np.eye(3)))


def test_ignored_and_skipped_types_shape_the_heat_map_only():
    objects = _objects(
        ("Car", 20, 20, 100, 70, 0.3),
        ("Van", 140, 20, 200, 70, 0.3),
        ("Person_sitting", 220, 30, 250, 80, 0.3),
        ("DontCare", 260, 10, 300, 40, -10),
        ("Tram", 100, 10, 300, 90, 0.0),
    )
    targets = DddTask().encode(objects, _meta())
    hm = targets["hm"]
    np.testing.assert_array_equal(targets["reg_mask"][:5], [1, 0, 0, 0, 0])
    assert len(targets["gt_det"]) == 1
    car, ped, cyclist = (CLASS_NAMES.index(name) for name in ("Car", "Pedestrian", "Cyclist"))

    def centre(box):  # output pixels of a box centre (image -> output is a 1/4 scale here)
        return int((box[1] + box[3]) / 8), int((box[0] + box[2]) / 8)

    assert hm[car][centre(objects["boxes"][0])] == 1.0
    assert hm[car][centre(objects["boxes"][1])] == IGNORE_VALUE and not hm[ped][centre(objects["boxes"][1])]
    assert hm[ped][centre(objects["boxes"][2])] == IGNORE_VALUE and not hm[car][centre(objects["boxes"][2])]
    for channel in (car, ped, cyclist):
        assert hm[channel][centre(objects["boxes"][3])] == IGNORE_VALUE
    # The Tram (last row) leaves no trace at all.
    without_tram = DddTask().encode({key: value[:-1] for key, value in objects.items()}, _meta())
    for key, value in without_tram.items():
        np.testing.assert_array_equal(targets[key], value, err_msg=key)


def test_unknown_kitti_type_is_an_error():
    with pytest.raises(ValueError, match="Lorry"):
        DddTask().encode(_objects(("Lorry", 20, 20, 100, 70, 0.3)), _meta())


def test_objects_beyond_max_objects_are_dropped():
    boxes = [("Car", 4 * i, 20, 4 * i + 30, 60, 0.1) for i in range(8)]
    targets = DddTask(max_objects=5).encode(_objects(*boxes), _meta())
    assert targets["reg_mask"].shape == (5,) and targets["reg_mask"].all()


def test_flipped_or_rotated_samples_are_refused():
    objects = _objects(("Car", 20, 20, 100, 70, 0.3))
    with pytest.raises(ValueError):
        DddTask().encode(objects, _meta(flipped=True))


@pytest.mark.parametrize("alpha", np.linspace(-np.pi, np.pi, 25))
def test_alpha_bins_round_trip(alpha):
    bins, residuals, rot8 = ddd.encode_alpha(float(alpha))
    assert any(bins)
    for b in range(2):
        assert rot8[4 * b + 1] == bins[b]
        if not bins[b]:
            assert residuals[b] == 0
    decoded = ddd_decoding.decode_alpha(np.array([rot8], np.float32))[0]
    assert np.isclose(np.cos(decoded - alpha), 1.0, atol=1e-6)


def test_back_projection_inverts_projection_and_yaw_follows_the_ray():
    rng = np.random.default_rng(3)
    location = np.stack([rng.uniform(-10, 10, 8), rng.uniform(0, 2, 8), rng.uniform(5, 60, 8)], 1).astype(np.float32)
    dims = rng.uniform(1, 4, (8, 3)).astype(np.float32)
    rotation_y = rng.uniform(-3, 3, 8).astype(np.float32)
    centre_3d = location - np.stack([np.zeros(8), dims[:, 0] / 2, np.zeros(8)], 1).astype(np.float32)
    centre_2d = objects3d.project_to_image(centre_3d, CALIB)
    # Projection's homogeneous depth, which is what the unprojection expects.
    depth = (centre_3d[:, 2] + CALIB[2, 3]).astype(np.float32)
    alpha = rotation_y - np.arctan2(centre_2d[:, 0] - CALIB[0, 2], CALIB[0, 0])
    found_location, found_yaw = ddd_decoding.locate_3d(
        centre_2d.astype(np.float32), alpha.astype(np.float32), dims, depth, CALIB
    )
    np.testing.assert_allclose(found_location, location, atol=1e-3)
    np.testing.assert_allclose(np.cos(found_yaw - rotation_y), 1.0, atol=1e-6)

    corners = objects3d.box_corners(dims, location, rotation_y)
    assert corners.shape == (8, 8, 3)
    np.testing.assert_allclose(corners.mean(1), centre_3d, atol=1e-4)
    np.testing.assert_allclose(corners[:, :4, 1], np.repeat(location[:, 1:2], 4, 1), atol=1e-5)  # bottom face at y


def test_decode_recovers_encoded_objects():
    objects = _objects(("Car", 20, 20, 100, 70, 0.3), ("Cyclist", 180, 30, 230, 90, -2.0))
    task = DddTask()
    meta = _meta()
    targets = task.encode(objects, meta)
    height, width = OUTPUT_HW
    outputs = {"hm": torch.logit(torch.from_numpy(targets["hm"]).clamp(1e-4, 1 - 1e-4))[None]}
    for name, channels in HEADS.items():
        if name != "hm":
            outputs[name] = torch.zeros(1, channels, height * width)
    for k, gt_row in zip(np.flatnonzero(targets["reg_mask"]), targets["gt_det"]):
        i = targets["ind"][k]
        depth = float(targets["dep"][k, 0])
        outputs["dep"][0, 0, i] = torch.logit(torch.tensor(1 / (depth + 1), dtype=torch.float64))  # inverse transform
        outputs["rot"][0, :, i] = torch.from_numpy(gt_row[3:11])
        for name in ("dim", "wh", "reg"):
            outputs[name][0, :, i] = torch.from_numpy(targets[name][k])
    outputs = {name: value.reshape(1, -1, height, width) for name, value in outputs.items()}

    results = ddd.keep_confident(task.post_process(task.decode(outputs, K=10)[0], meta))
    car = results[CLASS_NAMES.index("Car") + 1]
    cyclist = results[CLASS_NAMES.index("Cyclist") + 1]
    assert len(car) == 1 and len(cyclist) == 1 and len(results[CLASS_NAMES.index("Pedestrian") + 1]) == 0
    for row, k in ((car[0], 0), (cyclist[0], 1)):
        np.testing.assert_allclose(np.cos(row[0] - objects["alpha"][k]), 1.0, atol=1e-5)
        np.testing.assert_allclose(row[5:8], objects["dims"][k], atol=1e-5)
        np.testing.assert_allclose(row[10], objects["location"][k, 2] - CALIB[2, 3], atol=1e-2)  # depth -> z
        assert row[-1] > 0.99


def test_without_box_size_head_decoding_gives_centre_points_and_no_flip_test():
    task = DddTask(regress_box_size=False)
    generator = torch.Generator().manual_seed(0)
    outputs = {name: torch.randn(1, c, *OUTPUT_HW, generator=generator) for name, c in task.heads.items()}
    dets = task.decode(outputs, K=7)
    assert dets.shape == (1, 7, 16)
    rows = np.concatenate(list(task.post_process(dets[0], _meta()).values()))
    assert rows.shape == (7, 13)
    np.testing.assert_array_equal(rows[:, 1:3], rows[:, 3:5])  # zero-size 2D boxes at the centres
    with pytest.raises(ValueError, match="flip"):
        task.decode({name: torch.cat([v, v]) for name, v in outputs.items()}, K=7, flip=True)


def test_detections_flatten_results_by_class():
    car = np.arange(26, dtype=np.float32).reshape(2, 13)
    cyclist = np.arange(100, 113, dtype=np.float32).reshape(1, 13)
    found = DddTask().detections({1: np.zeros((0, 13), np.float32), 2: car, 3: cyclist})
    np.testing.assert_array_equal(found["labels"], [1, 1, 2])
    np.testing.assert_array_equal(found["boxes"][2], cyclist[0, 1:5])
    np.testing.assert_array_equal(found["scores"], [12, 25, 112])
    np.testing.assert_array_equal(found["dims"][0], car[0, 5:8])
    np.testing.assert_array_equal(found["locations"][1], car[1, 8:11])
    np.testing.assert_array_equal(found["alpha"], [0, 13, 100])
    np.testing.assert_array_equal(found["rotation_y"], [11, 24, 111])
