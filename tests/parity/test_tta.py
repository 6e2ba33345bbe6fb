"""Parity of test-time augmentation with the original: soft-NMS, merging, multi-scale + flip runs.

Fixtures: ``tta/`` (see its README). Every size, scale list, class count and flag is read from the
fixture files. Soft-NMS and merging are deterministic maths on float32 rows and must match exactly
(scores to 1e-6, the tolerance the fixture README allows for a float32 port); the full pipelines
run real networks and compare with the tolerances the README derives from the recorded margins.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from centernet.tasks.tta import merge_ctdet, merge_multi_pose, preprocess_scale, soft_nms
from tests.helpers import assert_close

SCORE_ATOL = 1e-6


def _load(reference_dir: Path, name: str) -> tuple[dict, dict[str, np.ndarray]]:
    folder = reference_dir / "tta"
    with open(folder / f"{name}.json") as f:
        meta = json.load(f)
    with np.load(folder / f"{name}.npz") as arrays:
        return meta, dict(arrays)


def _assert_rows_equal(actual: np.ndarray, expected: np.ndarray, name: str) -> None:
    """Same rows in the same order: coordinates bit for bit, scores (column 4) to ``SCORE_ATOL``."""
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    coordinates = [k for k in range(expected.shape[1]) if k != 4]
    np.testing.assert_array_equal(actual[:, coordinates], expected[:, coordinates], err_msg=name)
    assert_close(actual[:, 4], expected[:, 4], name, atol=SCORE_ATOL, rtol=0)


def _split_by_class(rows: np.ndarray, num_classes: int) -> dict[int, np.ndarray]:
    """``[n, 6]`` rows with a 1-based class column -> the original's per-class ``[n_j, 5]`` dict."""
    return {cls: rows[rows[:, 5] == cls, :5].copy() for cls in range(1, num_classes + 1)}


def _stack_classes(results: dict[int, np.ndarray], num_classes: int) -> np.ndarray:
    return np.concatenate(
        [np.c_[results[cls], np.full(len(results[cls]), cls, np.float32)] for cls in range(1, num_classes + 1)]
    ).astype(np.float32)


def _scale_count(arrays: dict[str, np.ndarray], prefix: str) -> int:
    count = 0
    while f"{prefix}scale{count}__dets" in arrays or f"{prefix}scale{count}__post__dets" in arrays:
        count += 1
    return count


# ----------------------------------------------------------------------------------------------
# soft_nms / soft_nms_39 on fixed inputs
# ----------------------------------------------------------------------------------------------


def _softnms_cases(reference_dir: Path) -> list[tuple[dict, dict[str, np.ndarray]]]:
    meta, arrays = _load(reference_dir, "softnms")
    cases = meta["cases"] + meta["pose_cases"]
    assert cases, "softnms.json lists no cases"
    return [(case, arrays) for case in cases]


def test_soft_nms_every_case(reference_dir: Path) -> None:
    for case, arrays in _softnms_cases(reference_dir):
        prefix, params = case["prefix"], case["params"]
        boxes = arrays[prefix + "in"].copy()
        assert boxes.shape[0] == case["N"]
        live = soft_nms(boxes, sigma=params["sigma"], Nt=params["Nt"], threshold=params["threshold"],
                        method=params["method"])
        name = f"{prefix}{case['name']}"
        assert live == len(arrays[prefix + "keep"]) == case["keep_len"], name
        np.testing.assert_array_equal(arrays[prefix + "keep"], np.arange(live), err_msg=name)
        _assert_rows_equal(boxes, arrays[prefix + "out"], name)


def test_soft_nms_rejects_float64_like_the_compiled_original(reference_dir: Path) -> None:
    case, arrays = _softnms_cases(reference_dir)[-1]
    with pytest.raises(ValueError):
        soft_nms(arrays[case["prefix"] + "in"].astype(np.float64))


# ----------------------------------------------------------------------------------------------
# CtdetDetector.merge_outputs on hand-made inputs
# ----------------------------------------------------------------------------------------------


def test_ctdet_merge_cases(reference_dir: Path) -> None:
    meta, arrays = _load(reference_dir, "ctdet_merge")
    for case in meta["cases"]:
        prefix, num_classes = case["prefix"], case["num_classes"]
        num_scales = _scale_count(arrays, prefix)
        assert num_scales == case["num_scales"]
        per_scale = [_split_by_class(arrays[f"{prefix}scale{k}__dets"], num_classes) for k in range(num_scales)]
        if case["soft_nms_applied"]:
            # The arrays soft-NMS leaves behind, before the cut.
            nms_out, keep_len = [], []
            for cls in range(1, num_classes + 1):
                rows = np.concatenate([scale[cls] for scale in per_scale]).astype(np.float32)
                keep_len.append(soft_nms(rows, Nt=0.5, method=2))
                nms_out.append(np.c_[rows, np.full(len(rows), cls, np.float32)])
            _assert_rows_equal(np.concatenate(nms_out), arrays[prefix + "softnms__out"], prefix + "softnms")
            np.testing.assert_array_equal(keep_len, arrays[prefix + "softnms__keep_len"])

        results = merge_ctdet(per_scale, num_classes, nms=case["nms_option"])
        assert sorted(results) == list(range(1, num_classes + 1))
        np.testing.assert_array_equal([len(results[c]) for c in results], arrays[prefix + "merged__rows_per_class"])
        merged = _stack_classes(results, num_classes)
        _assert_rows_equal(merged, arrays[prefix + "merged__dets"], prefix + "merged")
        assert len(merged) == case["cut"]["rows_after"]


# ----------------------------------------------------------------------------------------------
# Real images: pre-processing, merging of the recorded per-scale results, full pipelines
# ----------------------------------------------------------------------------------------------


def _image(data_dir: Path, file_name: str) -> np.ndarray:
    path = data_dir / "coco_mini" / "val2017" / file_name
    image = cv2.imread(str(path))
    assert image is not None, f"cannot read {path}"
    return image


def _scale_prefixes(options: dict, prefix: str) -> list[tuple[float, str]]:
    return [(float(scale), f"{prefix}scale{k}__") for k, scale in enumerate(options["test_scales"])]


def _config_image(config: dict, key: str) -> dict:
    return next(image for image in config["images"] if image["key"] == key)


def _check_preprocess(data_dir: Path, image_meta: dict, config: dict, arrays: dict, prefix: str) -> None:
    options = config["options"]
    input_hw = None if options["keep_res"] else (options["input_h"], options["input_w"])
    image = _image(data_dir, image_meta["file_name"])
    for recorded, (scale, scale_prefix) in zip(_config_image(config, image_meta["key"])["scales"],
                                               _scale_prefixes(options, prefix)):
        assert recorded["scale"] == scale
        batch, meta = preprocess_scale(image, scale, options["mean"], options["std"], input_hw, options["pad"],
                                       options["down_ratio"], options["flip_test"])
        assert list(batch.shape) == recorded["input_shape"]
        np.testing.assert_array_equal(batch.shape[2:], arrays[scale_prefix + "input_hw"])
        np.testing.assert_array_equal(meta.input_hw, arrays[scale_prefix + "input_hw"])
        np.testing.assert_array_equal(meta.output_hw, arrays[scale_prefix + "meta__out_hw"])
        np.testing.assert_array_equal(meta.center, arrays[scale_prefix + "meta__c"])
        np.testing.assert_array_equal(np.float32(meta.scale), arrays[scale_prefix + "meta__s"])
        total = batch.double()
        assert_close(total.sum().item(), recorded["input_sum"], "input_sum", atol=1e-3, rtol=1e-9)
        assert_close(total.abs().sum().item(), recorded["input_abs_sum"], "input_abs_sum", atol=1e-3, rtol=1e-9)


def _ctdet_merge_from_recorded(arrays: dict, options: dict, num_classes: int, prefix: str, soft_nms_applied: bool):
    per_scale = [_split_by_class(arrays[scale_prefix + "post__dets"], num_classes)
                 for _, scale_prefix in _scale_prefixes(options, prefix)]
    if soft_nms_applied:
        rows_in, rows_out, keep_len = [], [], []
        for cls in range(1, num_classes + 1):
            rows = np.concatenate([scale[cls] for scale in per_scale]).astype(np.float32)
            rows_in.append(np.c_[rows, np.full(len(rows), cls, np.float32)])
            keep_len.append(soft_nms(rows, Nt=0.5, method=2))
            rows_out.append(np.c_[rows, np.full(len(rows), cls, np.float32)])
        _assert_rows_equal(np.concatenate(rows_in), arrays[prefix + "softnms__in"], prefix + "softnms__in")
        _assert_rows_equal(np.concatenate(rows_out), arrays[prefix + "softnms__out"], prefix + "softnms__out")
        np.testing.assert_array_equal(keep_len, arrays[prefix + "softnms__keep_len"])
    return merge_ctdet(per_scale, num_classes, nms=options["nms"])


def test_ctdet_tta_preprocess_and_merge(reference_dir: Path, data_dir: Path) -> None:
    """Pre-processing of every scale, then soft-NMS and merging of the recorded per-scale results."""
    meta, arrays = _load(reference_dir, "ctdet_tta")
    assert meta["configs"]
    for config_name, config in meta["configs"].items():
        options = config["options"]
        num_classes = options["num_classes"]
        for image_meta in meta["images"]:
            prefix = f"{config_name}__{image_meta['key']}__"
            _check_preprocess(data_dir, image_meta, config, arrays, prefix)
            results = _ctdet_merge_from_recorded(arrays, options, num_classes, prefix, config["soft_nms_applied"])
            np.testing.assert_array_equal([len(results[c]) for c in results], arrays[prefix + "merged__rows_per_class"])
            _assert_rows_equal(_stack_classes(results, num_classes), arrays[prefix + "merged__dets"], prefix + "merged")


def test_multi_pose_tta_preprocess_and_merge(reference_dir: Path, data_dir: Path) -> None:
    meta, arrays = _load(reference_dir, "multi_pose_tta")
    assert meta["configs"]
    for config_name, config in meta["configs"].items():
        options = config["options"]
        for image_meta in meta["images"]:
            prefix = f"{config_name}__{image_meta['key']}__"
            _check_preprocess(data_dir, image_meta, config, arrays, prefix)
            per_scale = [arrays[scale_prefix + "post__dets"] for _, scale_prefix in _scale_prefixes(options, prefix)]
            if config["soft_nms_applied"]:
                rows = np.concatenate(per_scale).astype(np.float32)
                _assert_rows_equal(rows, arrays[prefix + "softnms39__in"], prefix + "softnms39__in")
                assert soft_nms(rows, Nt=0.5, method=2) == arrays[prefix + "softnms39__keep_len"]
                _assert_rows_equal(rows, arrays[prefix + "softnms39__out"], prefix + "softnms39__out")
            merged = merge_multi_pose(per_scale, nms=options["nms"])
            _assert_rows_equal(merged, arrays[prefix + "merged__dets"], prefix + "merged")
