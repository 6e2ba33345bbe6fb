"""Parity of pose and 3D decoding, post-processing and flip test with the original detectors (``decode/``).

Sizes, K, flip pairs, the letterbox and the camera matrix come from the fixture files.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from centernet.data.geometry import ImageMeta
from centernet.tasks.ddd import DddTask
from centernet.tasks.ddd_decoding import depth_from_logits, keep_confident
from centernet.tasks.multi_pose import MultiPoseTask
from centernet.tasks.multi_pose_decoding import merge_flipped
from tests.helpers import assert_close

# Decoding is deterministic; detections in output pixels, post-processed rows in image pixels.
MAP_TOL = {"atol": 1e-6, "rtol": 1e-6}
IMAGE_TOL = {"atol": 1e-4, "rtol": 1e-6}


@pytest.fixture(scope="module")
def decode_doc(reference_dir):
    return json.loads((reference_dir / "decode" / "decode.json").read_text())


def _raw_outputs(arrays, prefix: str) -> dict[str, torch.Tensor]:
    return {key[len(prefix) :]: torch.from_numpy(arrays[key]) for key in arrays.files if key.startswith(prefix)}


def _meta(arrays, prefix: str, image_wh, calib=None) -> ImageMeta:
    """The warp of the fixture's image; the input size is not used by post-processing."""
    original = {key: arrays[prefix + f"meta__{key}"] for key in ("c", "s", "out_hw")}
    return ImageMeta.from_original({**original, "calib": calib}, image_hw=(image_wh[1], image_wh[0]))


@pytest.mark.parametrize("flip", [False, True], ids=["plain", "flip"])
def test_multi_pose_decode(flip, decode_doc, reference_dir):
    doc = decode_doc["multi_pose"]
    arrays = np.load(reference_dir / "decode" / "multi_pose.npz")
    prefix = "flip__" if flip else ""
    raw = _raw_outputs(arrays, prefix + "raw__")
    task = MultiPoseTask(flip_pairs=doc["flip_idx"])
    assert raw["hps"].shape[1] == 2 * doc["num_joints"]
    assert tuple(raw["hm"].shape[2:]) == tuple(doc["map_hw"])

    if flip:
        merged = merge_flipped(raw, task.flip_pairs)
        for name in ("hm", "wh", "hps", "hm_hp"):
            assert_close(merged[name], arrays[f"flip__merged_{name}"], f"flip merged {name}", **MAP_TOL)

    dets = task.decode(raw, K=doc["K"], flip=flip)
    assert_close(dets, arrays[prefix + "decode__dets"], f"{prefix}decode__dets", **MAP_TOL)

    rows = task.post_process(dets[0], _meta(arrays, prefix, doc["image_wh"]))
    assert_close(rows, arrays[prefix + "post__dets"], f"{prefix}post__dets", **IMAGE_TOL)
    # One scale, no soft-NMS: the original's merge keeps the rows as they are.
    assert_close(rows, arrays[prefix + "merged__dets"], f"{prefix}merged__dets", **IMAGE_TOL)


def _flatten(results: dict[int, np.ndarray]) -> np.ndarray:
    """``{cls1: [n, 13]}`` -> ``[N, 14]`` rows with the class id appended, grouped by class."""
    return np.concatenate(
        [np.concatenate([rows, np.full((len(rows), 1), cls, np.float32)], axis=1) for cls, rows in results.items()]
    )


def test_ddd_decode(decode_doc, reference_dir):
    doc = decode_doc["ddd"]
    arrays = np.load(reference_dir / "decode" / "ddd.npz")
    raw = _raw_outputs(arrays, "raw__")
    task = DddTask(num_classes=raw["hm"].shape[1])
    assert tuple(raw["hm"].shape[2:]) == tuple(doc["map_hw"])
    assert_close(arrays["meta__calib"], doc["calib"], "calib in json and npz", atol=1e-6)

    assert_close(depth_from_logits(raw["dep"]), arrays["processed__dep"], "processed dep", **MAP_TOL)
    dets = task.decode(raw, K=doc["K"])
    assert_close(dets, arrays["decode__dets"], "decode__dets", **MAP_TOL)

    results = task.post_process(dets[0], _meta(arrays, "", doc["image_wh"], calib=arrays["meta__calib"]))
    assert sorted(results) == list(range(1, task.num_classes + 1))
    assert_close(_flatten(results), arrays["post__dets"], "post__dets", **IMAGE_TOL)
    merged = keep_confident(results, doc["peak_thresh"])
    assert_close(_flatten(merged), arrays["merged__dets"], "merged__dets", **IMAGE_TOL)
    assert len(_flatten(merged)) == doc["num_merged"]


def test_ddd_post_process_needs_calibration(decode_doc, reference_dir):
    doc = decode_doc["ddd"]
    arrays = np.load(reference_dir / "decode" / "ddd.npz")
    task = DddTask(num_classes=arrays["raw__hm"].shape[1])
    with pytest.raises(ValueError, match="camera matrix"):
        task.post_process(arrays["decode__dets"][0], _meta(arrays, "", doc["image_wh"]))
