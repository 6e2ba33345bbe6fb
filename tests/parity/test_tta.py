"""Parity of test-time augmentation with the original: soft-NMS, merging, multi-scale + flip runs.

Fixtures: ``tta/`` (see its README). Every size, scale list, class count and flag is read from the
fixture files. Soft-NMS and merging are deterministic maths on float32 rows and must match exactly
(scores to 1e-6, the tolerance the fixture README allows for a float32 port); the full pipelines
run real networks and compare within their measured float noise, minding the recorded margins.
"""
from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from centernet import build_model
from centernet.data.transforms import InputSpec
from centernet.models.predictor import Predictor
from centernet.tasks.registry import get_task
from centernet.tasks.tta import (
    merge_ctdet,
    merge_multi_pose,
    soft_nms,
)
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


def _input_spec(options: dict) -> InputSpec:
    """The original's resolved options as our input spec (BGR, as the original reads images)."""
    return InputSpec(
        input_hw=None if options["keep_res"] else (options["input_h"], options["input_w"]),
        pad=options["pad"],
        mean=tuple(options["mean"]),
        std=tuple(options["std"]),
        channel_order="bgr",
        down_ratio=options["down_ratio"],
    )


def _config_image(config: dict, key: str) -> dict:
    image = next(image for image in config["images"] if image["key"] == key)
    assert [scale["scale"] for scale in image["scales"]] == config["options"]["test_scales"]
    return image


def _check_preprocess(data_dir: Path, image_meta: dict, config: dict, arrays: dict, prefix: str) -> None:
    options = config["options"]
    spec = _input_spec(options)
    image = _image(data_dir, image_meta["file_name"])
    for recorded, (scale, scale_prefix) in zip(_config_image(config, image_meta["key"])["scales"],
                                               _scale_prefixes(options, prefix)):
        assert recorded["scale"] == scale
        network_input, meta = spec.inference_input(image, scale)
        batch = torch.from_numpy(network_input[None])
        if options["flip_test"]:  # the predictor's [image, mirror] pair
            batch = torch.cat([batch, batch.flip(3)])
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


@dataclass(frozen=True)
class _Noise:
    """How far our float32 network may land from the original's on the same weights and image.

    Measured, then given a margin: res_18 (ctdet) scores differ by ~2e-6 and boxes by ~2e-4 image
    pixels. The calibrated DLA-34 pose heads (weights x 7.85-8) are ill-conditioned on real images:
    our own float32 and float64 runs differ by 8e-4 in scores and 1e-2 in logits, so scores get 3e-3,
    boxes 0.1 px, and joints, snapped to the nearest joint heat-map peak above a threshold, may jump
    to another peak in a few percent of cases.
    """

    score: float
    pixels: float
    joint_outliers: float = 0.0


CTDET_NOISE = _Noise(score=2e-5, pixels=2e-3)
POSE_NOISE = _Noise(score=3e-3, pixels=0.1, joint_outliers=0.02)


class _CachedNetwork:
    """The network, remembering its raw outputs per input image.

    Configurations that feed the same image (fix-res scale 1 with and without flip; keep-res
    scale 1 alone and within a scale list) then cost one forward pass.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.outputs: dict[bytes, dict[str, torch.Tensor]] = {}

    def __call__(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        keys = [image.numpy().tobytes() for image in batch]
        if not all(key in self.outputs for key in keys):
            with torch.no_grad():
                outputs = self.model(batch)
            for index, key in enumerate(keys):
                self.outputs[key] = {name: value[index:index + 1] for name, value in outputs.items()}
        return {name: torch.cat([self.outputs[key][name] for key in keys]) for name in self.outputs[keys[0]]}


def _fixture_network(reference_dir: Path, meta: dict) -> _CachedNetwork:
    """The fixture's network: the weights rule, then the documented head calibration."""
    spec = importlib.util.spec_from_file_location("weights_rule", reference_dir / "weights_rule.py")
    weights_rule = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(weights_rule)
    with open(reference_dir / "tta" / meta["manifest"]) as f:
        manifest = json.load(f)
    state = weights_rule.deterministic_state_dict(manifest, meta["weight_seed"])
    for calibration in meta["head_calibration"].values():
        state[calibration["weight_key"]] = state[calibration["weight_key"]] * calibration["gamma"]
        if calibration["beta"] is not None:
            state[calibration["bias_key"]] = torch.full_like(state[calibration["bias_key"]], calibration["beta"])
    model = build_model(manifest["arch"], manifest["heads"], manifest["head_conv"])
    model.load_state_dict(state, strict=True)
    return _CachedNetwork(model.eval())


def _assert_same_detections(
    actual: np.ndarray, expected: np.ndarray, name: str, noise: _Noise, exchangeable: int = 0
) -> None:
    """Same detections up to the network's float noise, in any order.

    Every expected row must pair with a distinct actual row whose box (and class, the 6th column
    of 2D rows) lies within ``noise.pixels`` and whose score lies within ``noise.score``; pose
    joints (columns 5+) must agree within ``noise.pixels`` except for a fraction
    ``noise.joint_outliers``. Rows whose score sits at a near-tie of the original's top-K
    boundary can be exchanged: ``exchangeable`` rows may stay unpaired on each side.
    """
    box = [0, 1, 2, 3] + ([5] if expected.shape[1] == 6 else [])
    close = np.all(np.abs(expected[:, None, box] - actual[None, :, box]) <= noise.pixels, axis=2)
    close &= np.abs(expected[:, None, 4] - actual[None, :, 4]) <= noise.score
    pairs = []
    used = np.zeros(len(actual), dtype=bool)
    for row in range(len(expected)):
        candidates = np.flatnonzero(close[row] & ~used)
        if candidates.size:
            used[candidates[0]] = True
            pairs.append((row, candidates[0]))
    unpaired_expected, unpaired_actual = len(expected) - len(pairs), len(actual) - len(pairs)
    assert max(unpaired_expected, unpaired_actual) <= exchangeable, (
        f"{name}: {unpaired_expected} of {len(expected)} reference rows and {unpaired_actual} of {len(actual)} "
        f"rows unpaired (allowed {exchangeable}: near-ties at the top-K boundary)"
    )
    if expected.shape[1] > 6 and pairs:
        rows_e, rows_a = np.array(pairs).T
        joints_off = np.abs(expected[rows_e, 5:] - actual[rows_a, 5:]) > noise.pixels
        assert joints_off.mean() <= noise.joint_outliers, f"{name}: {joints_off.mean():.1%} of joint coordinates differ"


def _boundary_ties(scale_meta: dict, noise: _Noise) -> int:
    """1 when the K-th and (K+1)-th decoded scores of a scale are within the noise (one row may swap)."""
    return int(scale_meta.get("heat", {}).get("score_K_minus_score_K_plus_1", np.inf) < noise.score)


def _run_scales(network, task, image, config: dict, image_key: str, arrays: dict, noise: _Noise):
    """Per-scale detections, each checked against the original's; returns them and the near-ties."""
    options = config["options"]
    spec = _input_spec(options)
    prefix = f"{image_key}__"
    per_scale, ties = [], 0
    for scale_meta, (scale, scale_prefix) in zip(_config_image(config, image_key)["scales"],
                                                 _scale_prefixes(options, prefix)):
        predictor = Predictor(network, task, spec, [str(c) for c in range(task.num_classes)], flip=options["flip_test"],
                              K=options["K"], scales=[scale])
        result = predictor.detect_scales([image])[0][0]
        rows = _stack_classes(result, task.num_classes) if isinstance(result, dict) else result
        scale_ties = _boundary_ties(scale_meta, noise)
        _assert_same_detections(rows, arrays[scale_prefix + "post__dets"], scale_prefix, noise, scale_ties)
        per_scale.append(result)
        ties += scale_ties
    return per_scale, ties


@pytest.mark.slow
def test_ctdet_tta_full_pipeline(reference_dir: Path, data_dir: Path) -> None:
    """res_18 on a real image for every configuration: pre-process, network, flip, decode, merge.

    The first image of each configuration goes through the network (every image's merge is
    covered exactly by the recorded per-scale results above); scale-1 inputs shared between
    configurations cost one forward pass.
    """
    meta, arrays = _load(reference_dir, "ctdet_tta")
    network = _fixture_network(reference_dir, meta)
    task = get_task(meta["task"], meta["num_classes"])
    files = {image["key"]: image["file_name"] for image in meta["images"]}
    for config_name, config in meta["configs"].items():
        key = config["images"][0]["key"]
        prefixed = {name[len(config_name) + 2:]: value for name, value in arrays.items()
                    if name.startswith(config_name + "__")}
        per_scale, ties = _run_scales(network, task, _image(data_dir, files[key]), config, key, prefixed, CTDET_NOISE)
        results = task.merge_outputs(per_scale, nms=config["options"]["nms"])
        name = f"{config_name}__{key}__merged"
        ties += int(config["images"][0]["merge"].get("gap_to_next_lower", np.inf) < CTDET_NOISE.score)
        _assert_same_detections(_stack_classes(results, task.num_classes), prefixed[f"{key}__merged__dets"], name,
                                CTDET_NOISE, exchangeable=ties)


@pytest.mark.slow
def test_multi_pose_tta_full_pipeline(reference_dir: Path, data_dir: Path) -> None:
    """DLA-34 pose on a real image for every configuration (the first image; see the ctdet test).

    The merged rows past ``len(keep)`` are not compared row by row: which stale copy a drop leaves
    behind depends on the physical row order, which score near-ties at the pose noise level can
    permute; their number is.
    """
    meta, arrays = _load(reference_dir, "multi_pose_tta")
    network = _fixture_network(reference_dir, meta)
    task = get_task(meta["task"], meta["num_classes"])
    files = {image["key"]: image["file_name"] for image in meta["images"]}
    for config_name, config in meta["configs"].items():
        key = config["images"][0]["key"]
        prefixed = {name[len(config_name) + 2:]: value for name, value in arrays.items()
                    if name.startswith(config_name + "__")}
        per_scale, ties = _run_scales(network, task, _image(data_dir, files[key]), config, key, prefixed, POSE_NOISE)
        merged = task.merge_outputs(per_scale, nms=config["options"]["nms"])
        expected = prefixed[f"{key}__merged__dets"]
        assert merged.shape == expected.shape
        if config["soft_nms_applied"]:
            live = soft_nms(np.concatenate(per_scale), Nt=0.5, method=2)
            expected_live = int(prefixed[f"{key}__softnms39__keep_len"])
            assert abs(live - expected_live) <= ties, f"{config_name}: {live} survivors, original {expected_live}"
            merged, expected = merged[:live], expected[:expected_live]
        _assert_same_detections(merged, expected, f"{config_name}__{key}__merged", POSE_NOISE, exchangeable=ties)
