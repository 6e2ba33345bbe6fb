"""Parity of the pose and 3D losses and the ddd geometry helpers with the original (``functions.npz``).

Every input, size, seed and weight comes from the fixture files (the hidden acceptance set differs).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from centernet.data import objects3d
from centernet.tasks import ddd, ddd_decoding
from centernet.tasks.ddd import DddTask
from centernet.tasks.multi_pose import MultiPoseTask
from tests.helpers import assert_close

# Deterministic float32 maths: only summation order may differ from the original.
TIGHT = {"atol": 1e-6, "rtol": 1e-5}

# The original's option names -> our named loss terms (off_weight also weights hp_offset).
OPTION_TO_LOSSES = {
    "hm_weight": ("hm_loss",),
    "wh_weight": ("wh_loss",),
    "off_weight": ("off_loss", "hp_offset_loss"),
    "hp_weight": ("hp_loss",),
    "hm_hp_weight": ("hm_hp_loss",),
    "dep_weight": ("dep_loss",),
    "dim_weight": ("dim_loss",),
    "rot_weight": ("rot_loss",),
}
TASKS = {"multi_pose": (MultiPoseTask, "multi_pose_coco_val"), "ddd": (DddTask, "ddd_kitti_val")}
# Per-image entries of the target fixtures that describe the warp, not training targets.
META_KEYS = {"c", "s", "gt_det", "calib", "input", "trans_input", "trans_output", "trans_output_rot"}


@pytest.fixture(scope="module")
def functions(reference_dir):
    return np.load(reference_dir / "functions.npz")


@pytest.fixture(scope="module")
def functions_doc(reference_dir):
    return json.loads((reference_dir / "functions.json").read_text())


def _t(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array))


def test_l1_mean_loss(functions):
    loss = ddd.l1_mean_loss(
        _t(functions["regl1__output"]),
        _t(functions["regl1__mask"]),
        _t(functions["regl1__ind"]),
        _t(functions["regl1__target"]),
    )
    assert_close(loss, functions["l1mean__loss"], "L1Loss (mean over all entries)", **TIGHT)


def test_bin_rot_loss(functions):
    loss = ddd.bin_rot_loss(
        _t(functions["binrot__output"]),
        _t(functions["regl1__mask"]),
        _t(functions["regl1__ind"]),
        _t(functions["binrot__rotbin"]),
        _t(functions["binrot__rotres"]),
    )
    assert_close(loss, functions["binrot__loss"], "BinRotLoss", **TIGHT)


def test_depth_transform(functions):
    depth = ddd.depth_from_logits(_t(functions["depth__raw"]))
    assert_close(depth, functions["depth__decoded"], "1/(sigmoid+1e-6)-1", atol=1e-6, rtol=1e-6)


def test_locate_3d(functions):
    location, rotation_y = ddd_decoding.locate_3d(
        functions["ddd__centers"],
        functions["ddd__alpha"],
        functions["ddd__dim"],
        functions["ddd__depth"],
        functions["ddd__calib"],
    )
    assert_close(location, functions["ddd__location"], "ddd2locrot location", atol=1e-5, rtol=1e-6)
    assert_close(rotation_y, functions["ddd__rotation_y"], "ddd2locrot rotation_y", atol=1e-6, rtol=1e-6)


def test_box3d_corners_and_projection(functions):
    calib = functions["ddd__calib"]
    corners = objects3d.box_corners(
        functions["ddd__dim"], functions["ddd__location"], functions["ddd__rotation_y"], dtype=np.float32
    )
    assert_close(corners, functions["ddd__box3d_corners"], "compute_box_3d", atol=1e-5, rtol=1e-6)
    projected = objects3d.project_to_image(np.asarray(functions["ddd__box3d_corners"], np.float32), calib)
    assert_close(projected, functions["ddd__box3d_projected"], "project_to_image", atol=1e-4, rtol=1e-6)


def test_decode_alpha(functions):
    alpha = ddd_decoding.decode_alpha(functions["ddd__rot8"])
    assert_close(alpha, functions["ddd__get_alpha"], "get_alpha", atol=1e-6, rtol=1e-6)


def _seeded_outputs(spec: dict) -> dict[str, torch.Tensor]:
    """The fixture's random raw outputs, regenerated from its seeds and checked against its checksums."""
    height, width = spec["output_shape_hw"]
    outputs = {}
    for head, channels in spec["heads"].items():
        generator = torch.Generator().manual_seed(spec["output_seeds"][head])
        raw = torch.randn((spec["batch_size"], channels, height, width), generator=generator)
        outputs[head] = raw - 4.0 if head.startswith("hm") else raw
        total, first, last = spec["output_checksums"][head]
        flat = outputs[head].reshape(-1)
        assert_close(flat.double().sum(), total, f"{head} checksum (sum)", atol=1e-6 * max(1.0, abs(total)), rtol=0)
        assert_close([flat[0], flat[-1]], [first, last], f"{head} checksum (first, last)", atol=0, rtol=0)
    return outputs


def _target_batch(reference_dir, target_name: str, image_ids: list[int]) -> dict[str, torch.Tensor]:
    """The stored targets of the batch's images, collated in batch order."""
    arrays = np.load(reference_dir / "targets" / f"{target_name}.npz")
    doc = json.loads((reference_dir / "targets" / f"{target_name}.json").read_text())
    prefix_of = {image["img_id"]: image["key_prefix"] for image in doc["images"]}
    prefixes = [prefix_of[image_id] for image_id in image_ids]
    keys = {key[len(prefixes[0]) :] for key in arrays.files if key.startswith(prefixes[0])} - META_KEYS
    return {key: _t(np.stack([arrays[prefix + key] for prefix in prefixes])) for key in keys}


@pytest.mark.parametrize("task_name", sorted(TASKS))
def test_task_loss(task_name, functions_doc, reference_dir):
    spec = functions_doc["task_losses"][task_name]
    task_class, target_name = TASKS[task_name]
    weights = {loss: float(spec["weights"][option]) for option, losses in OPTION_TO_LOSSES.items() for loss in losses}
    defaults = task_class().loss_weights
    assert defaults == {name: weights[name] for name in defaults}, "default loss weights differ from the original's"

    task = task_class(loss_weights={name: weights[name] for name in defaults})
    assert task.heads == spec["heads"], "head names/channels/order differ from the original"
    outputs = _seeded_outputs(spec)
    batch = _target_batch(reference_dir, target_name, spec["batch_images"])
    total, stats = task.loss(outputs, batch)

    assert set(stats) == set(spec["stats"])
    for name, expected in spec["stats"].items():
        assert_close(stats[name], expected, f"{task_name} {name}", **TIGHT)
    assert_close(total, spec["loss"], f"{task_name} total", **TIGHT)


@pytest.mark.parametrize("task_name", sorted(TASKS))
def test_heads_match_the_original_manifests(task_name, reference_dir):
    manifests = sorted((reference_dir / "manifests").glob(f"*__{task_name}.json"))
    assert manifests, f"no {task_name} manifest in the fixtures"
    for path in manifests:
        manifest = json.loads(path.read_text())
        heads = TASKS[task_name][0](num_classes=manifest["num_classes"]).heads
        assert list(heads.items()) == list(manifest["heads"].items()), path.name
