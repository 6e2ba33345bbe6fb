"""Behaviour of test-time augmentation: soft-NMS against a row-by-row oracle, merging rules, and the
multi-scale path of the one predictor (``models.predictor.Predictor``)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from centernet.data.transforms import InputSpec
from centernet.models.predictor import Predictor
from centernet.tasks.registry import get_task
from centernet.tasks.tta import (
    GAUSSIAN_NMS,
    HARD_NMS,
    LINEAR_NMS,
    merge_ctdet,
    merge_multi_pose,
    soft_nms,
)

COCO_MEAN = (0.40789654, 0.44719302, 0.47026115)
COCO_STD = (0.28863828, 0.27408164, 0.27809835)


def _scalar_soft_nms(boxes: np.ndarray, sigma=0.5, nt=0.3, threshold=0.001, method=GAUSSIAN_NMS) -> int:
    """Row-by-row oracle written from the fixture README's description of the compiled original."""
    f32, f64 = np.float32, np.float64
    sigma, nt, threshold = f32(sigma), f32(nt), f32(threshold)
    live = boxes.shape[0]
    for i in range(boxes.shape[0]):
        best = i
        for pos in range(i + 1, live):
            if boxes[pos, 4] > boxes[best, 4]:
                best = pos
        boxes[[i, best]] = boxes[[best, i]]
        tx1, ty1, tx2, ty2 = boxes[i, :4]
        pos = i + 1
        while pos < live:
            x1, y1, x2, y2 = boxes[pos, :4]
            inter_w = f32(min(tx2, x2) - max(tx1, x1)) + f32(1)
            if inter_w > 0:
                inter_h = f32(min(ty2, y2) - max(ty1, y1)) + f32(1)
                if inter_h > 0:
                    area = f32((f64(x2 - x1) + 1) * (f64(y2 - y1) + 1))
                    union = f32((f64(tx2 - tx1) + 1) * (f64(ty2 - ty1) + 1) + f64(area) - f64(inter_w * inter_h))
                    iou = f32(inter_w * inter_h) / union
                    if method == GAUSSIAN_NMS:
                        weight = f32(math.exp(f64(-(iou * iou) / sigma)))
                    elif method == LINEAR_NMS:
                        weight = f32(1) - iou if iou > nt else f32(1)
                    else:
                        weight = f32(0) if iou > nt else f32(1)
                    boxes[pos, 4] = f32(weight * boxes[pos, 4])
                    if boxes[pos, 4] < threshold:
                        extra = boxes[pos, 5:].copy()
                        boxes[pos, :5] = boxes[live - 1, :5]
                        boxes[pos, 5:] = boxes[live - 1, 5:]
                        boxes[live - 1, 5:] = extra
                        live -= 1
                        pos -= 1
            pos += 1
    return live


def _random_boxes(rng: np.random.Generator, n: int, extra: int = 0, clustered: bool = True) -> np.ndarray:
    """Boxes in a few clusters (heavy overlap, many drops), tied and tiny scores, inverted boxes."""
    centres = rng.uniform(0, 200, size=(max(1, n // 8), 2))
    centre = centres[rng.integers(0, len(centres), n)] if clustered else rng.uniform(0, 400, size=(n, 2))
    size = rng.uniform(-2, 60, size=(n, 2))
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1) + rng.normal(0, 2, size=(n, 4))
    scores = rng.choice([rng.uniform(0, 1, n), rng.uniform(0, 0.01, n), np.round(rng.uniform(0, 1, n), 1)], axis=0)
    columns = [boxes, scores[:, None]] + ([rng.uniform(0, 500, size=(n, extra))] if extra else [])
    return np.round(np.concatenate(columns, axis=1), int(rng.integers(1, 4))).astype(np.float32)


@pytest.mark.parametrize("method", [GAUSSIAN_NMS, LINEAR_NMS, HARD_NMS])
@pytest.mark.parametrize("extra", [0, 34])
def test_soft_nms_matches_row_by_row_oracle(method: int, extra: int) -> None:
    rng = np.random.default_rng(100 * method + extra)
    for trial in range(40):
        boxes = _random_boxes(rng, int(rng.integers(0, 70)), extra, clustered=trial % 4 != 0)
        expected = boxes.copy()
        expected_live = _scalar_soft_nms(expected, nt=0.5 if method == GAUSSIAN_NMS else 0.3, method=method)
        live = soft_nms(boxes, Nt=0.5 if method == GAUSSIAN_NMS else 0.3, method=method)
        assert live == expected_live
        np.testing.assert_array_equal(boxes, expected)


def test_soft_nms_never_selects_a_nan_score_like_the_original() -> None:
    rng = np.random.default_rng(11)
    for first_is_nan in (False, True):
        boxes = _random_boxes(rng, 30)
        boxes[rng.choice(30, 5, replace=False), 4] = np.nan
        boxes[0, 4] = np.nan if first_is_nan else boxes[0, 4]
        expected = boxes.copy()
        expected_live = _scalar_soft_nms(expected, nt=0.5)
        assert soft_nms(boxes, Nt=0.5) == expected_live
        np.testing.assert_array_equal(boxes, expected)


def test_soft_nms_survivors_sorted_and_left_overs_kept() -> None:
    boxes = _random_boxes(np.random.default_rng(7), 200)
    original_rows = {tuple(row[:4]) for row in boxes}
    live = soft_nms(boxes, Nt=0.5)
    assert 0 < live < len(boxes)
    assert np.all(np.diff(boxes[:live, 4]) <= 0)
    # Every row, left-overs included, still holds one of the input boxes.
    assert all(tuple(row[:4]) in original_rows for row in boxes)


def test_soft_nms_identical_boxes_decay_by_exp_minus_two() -> None:
    boxes = np.array([[0, 0, 9, 9, 0.9], [0, 0, 9, 9, 0.9]], dtype=np.float32)
    assert soft_nms(boxes, Nt=0.5) == 2
    assert boxes[0, 4] == np.float32(0.9)
    np.testing.assert_allclose(boxes[1, 4], 0.9 * math.exp(-2), rtol=1e-6)


def test_soft_nms_low_score_survives_unless_it_overlaps() -> None:
    boxes = np.array([[0, 0, 9, 9, 0.9], [100, 100, 109, 109, 0.0005], [0, 0, 9, 9, 0.0005]], dtype=np.float32)
    assert soft_nms(boxes, Nt=0.5) == 2
    assert boxes[1, 4] == np.float32(0.0005) and boxes[1, 0] == 100


def test_soft_nms_rejects_what_the_compiled_original_rejects() -> None:
    with pytest.raises(ValueError):
        soft_nms(np.zeros((3, 5), dtype=np.float64))
    with pytest.raises(ValueError):
        soft_nms(np.zeros((3, 4), dtype=np.float32))
    with pytest.raises(ValueError):
        soft_nms(np.zeros((3, 5), dtype=np.float32), method=3)
    assert soft_nms(np.zeros((0, 5), dtype=np.float32)) == 0


def _per_class(rng: np.random.Generator, num_classes: int, rows: int) -> dict[int, np.ndarray]:
    labels = rng.integers(1, num_classes + 1, rows)
    boxes = _random_boxes(rng, rows)[:, :5]
    return {cls: boxes[labels == cls] for cls in range(1, num_classes + 1)}


def test_merge_ctdet_keeps_every_tie_at_the_cut() -> None:
    scores = np.r_[np.linspace(0.9, 0.5, 95), np.full(10, 0.3), np.linspace(0.2, 0.1, 20)].astype(np.float32)
    boxes = np.c_[np.arange(len(scores))[:, None] * 20.0 + [0, 0, 10, 10], scores].astype(np.float32)
    results = merge_ctdet([{1: boxes[::2], 2: boxes[1::2]}], num_classes=3)
    kept = np.concatenate([results[c][:, 4] for c in (1, 2, 3)])
    assert len(kept) == 105 and kept.min() == np.float32(0.3)
    assert results[3].shape == (0, 5)
    np.testing.assert_array_equal(results[1], boxes[::2][boxes[::2, 4] >= np.float32(0.3)])


def test_merge_ctdet_single_scale_without_nms_is_a_pass_through() -> None:
    per_class = _per_class(np.random.default_rng(3), 4, 60)
    results = merge_ctdet([per_class], num_classes=4)
    for cls in range(1, 5):
        np.testing.assert_array_equal(results[cls], per_class[cls])


def test_merge_ctdet_soft_nms_with_several_scales_or_the_flag() -> None:
    rng = np.random.default_rng(4)
    first, second = _per_class(rng, 2, 30), _per_class(rng, 2, 30)
    results = merge_ctdet([first, second], num_classes=2)
    for cls in (1, 2):
        rows = np.concatenate([first[cls], second[cls]])
        soft_nms(rows, Nt=0.5)
        np.testing.assert_array_equal(results[cls], rows)
    flagged = merge_ctdet([first], num_classes=2, nms=True)
    rows = first[1].copy()
    soft_nms(rows, Nt=0.5)
    np.testing.assert_array_equal(flagged[1], rows)


def test_merge_multi_pose_returns_every_row() -> None:
    rng = np.random.default_rng(5)
    scales = [_random_boxes(rng, 40, extra=34) for _ in range(3)]
    merged = merge_multi_pose(scales)
    assert merged.shape == (120, 39)
    expected = np.concatenate(scales)
    soft_nms(expected, Nt=0.5)
    np.testing.assert_array_equal(merged, expected)
    np.testing.assert_array_equal(merge_multi_pose(scales[:1]), scales[0])


def _image(height: int = 90, width: int = 130) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def test_scaled_input_fix_res_keep_res() -> None:
    image = _image()
    spec = InputSpec(input_hw=(128, 128), mean=COCO_MEAN, std=COCO_STD)
    network_input, meta = spec.inference_input(image, 0.75)
    assert network_input.shape == (3, 128, 128) and network_input.dtype == np.float32
    np.testing.assert_array_equal(meta.center, [97 / 2, 67 / 2])
    assert meta.scale == 130.0 and meta.output_hw == (32, 32) and meta.image_hw == (67, 97)

    network_input, meta = InputSpec(input_hw=None, pad=31, mean=COCO_MEAN, std=COCO_STD).inference_input(image, 1.5)
    assert network_input.shape == (3, 160, 224)  # (135 | 31) + 1, (195 | 31) + 1
    np.testing.assert_array_equal(meta.center, [97, 67])
    np.testing.assert_array_equal(meta.scale, [224, 160])
    assert meta.output_hw == (40, 56)


def detect_scale(model, task, image, scale, spec, flip=False, K=10):
    """One scale's post-processed detections in source pixels, through the predictor."""
    names = [f"c{i}" for i in range(task.num_classes)]
    return Predictor(model, task, spec, names, K=K, flip=flip, scales=[scale]).detect_scales([image])[0][0]


class _PlantedPeaks:
    """A stand-in network: head maps with a few planted centre peaks, whatever the input size."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes

    def __call__(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        b, _, h, w = batch.shape
        hm = torch.full((b, self.num_classes, h // 4, w // 4), -6.0)
        hm[:, 0, h // 8, w // 8] = 2.0
        hm[:, 1 % self.num_classes, h // 16, w // 16] = 1.0
        return {"hm": hm, "wh": torch.full((b, 2, h // 4, w // 4), 6.0), "reg": torch.full((b, 2, h // 4, w // 4), 0.25)}


def test_multi_scale_is_scales_then_merge() -> None:
    task = get_task("ctdet", 3)
    model, image = _PlantedPeaks(3), _image()
    spec = InputSpec(input_hw=(128, 128), mean=COCO_MEAN, std=COCO_STD)
    per_scale = [detect_scale(model, task, image, scale, spec, flip=True, K=10) for scale in (0.5, 1.0, 1.5)]
    expected = task.to_results(task.merge_outputs(per_scale), ["a", "b", "c"])
    predictor = Predictor(model, task, spec, ["a", "b", "c"], scales=(0.5, 1.0, 1.5), flip=True, K=10)
    (result,) = predictor.detect([image])
    np.testing.assert_array_equal(result.boxes, expected.boxes)
    np.testing.assert_array_equal(result.scores, expected.scores)
    np.testing.assert_array_equal(result.labels, expected.labels)
    assert set(result.labels.tolist()) <= {0, 1, 2} and len(result) == 30  # 3 scales x K rows, soft-NMS keeps them all
    # Without flip the peak planted at the canvas centre lands at the image centre at every scale.
    for scale in (0.5, 1.0, 1.5):
        x1, y1, x2, y2 = detect_scale(model, task, image, scale, spec, K=10)[1][0, :4]
        assert abs((x1 + x2) / 2 - 65) < 2 / scale + 0.5 and abs((y1 + y2) / 2 - 45) < 2 / scale + 0.5


def test_detect_scale_divides_coordinates_by_the_scale() -> None:
    task = get_task("ctdet", 2)
    image = _image()
    spec = InputSpec(input_hw=None, mean=COCO_MEAN, std=COCO_STD)
    at_one = detect_scale(_PlantedPeaks(2), task, image, 1.0, spec, K=5)
    at_two = detect_scale(_PlantedPeaks(2), task, image, 2.0, spec, K=5)
    # Same planted output cell; twice the input size, so half the size in source pixels.
    width_one = at_one[1][0, 2] - at_one[1][0, 0]
    width_two = at_two[1][0, 2] - at_two[1][0, 0]
    np.testing.assert_allclose(width_two, width_one / 2, rtol=1e-5)


def test_tasks_without_multi_scale_testing_refuse_it() -> None:
    task = get_task("ddd", 3)
    with pytest.raises(ValueError, match="multi-scale"):
        task.merge_outputs([{}, {}])
    with pytest.raises(ValueError, match="scale 1 only"):
        Predictor(_PlantedPeaks(3), task, InputSpec(), ["a", "b", "c"], scales=(0.5, 1.0))
    with pytest.raises(ValueError, match="no flip test"):
        Predictor(_PlantedPeaks(3), task, InputSpec(), ["a", "b", "c"], flip=True)


class _PlantedPerson:
    """A stand-in pose network (two stacks, like Hourglass): one person, joints at fixed offsets."""

    def __call__(self, batch: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        b, _, h, w = batch.shape
        size = (b, 1, h // 4, w // 4)
        hm = torch.full(size, -6.0)
        hm[:, 0, h // 8, w // 8] = 2.0
        joint_offsets = torch.arange(34, dtype=torch.float32).reshape(1, 34, 1, 1) % 5 - 2
        stack = {
            "hm": hm,
            "wh": torch.full((b, 2, h // 4, w // 4), 8.0),
            "hps": joint_offsets.expand(b, 34, h // 4, w // 4).clone(),
            "reg": torch.zeros((b, 2, h // 4, w // 4)),
            "hm_hp": torch.full((b, 17, h // 4, w // 4), -6.0),
            "hp_offset": torch.zeros((b, 2, h // 4, w // 4)),
        }
        return [{name: value + 100 for name, value in stack.items()}, stack]


def test_pose_joints_are_divided_by_the_scale_and_every_row_merged() -> None:
    task = get_task("multi_pose", 1)
    spec = InputSpec(input_hw=None, mean=COCO_MEAN, std=COCO_STD)
    image = _image()
    at_one = detect_scale(_PlantedPerson(), task, image, 1.0, spec, K=4)
    at_two = detect_scale(_PlantedPerson(), task, image, 2.0, spec, K=4)
    assert at_one.shape == (4, 39) and at_one.dtype == np.float32
    # Joint positions relative to the box corner halve with twice the input size.
    np.testing.assert_allclose(at_two[0, 5::2] - at_two[0, 0], (at_one[0, 5::2] - at_one[0, 0]) / 2, atol=1e-4)
    np.testing.assert_allclose(at_two[0, 6::2] - at_two[0, 1], (at_one[0, 6::2] - at_one[0, 1]) / 2, atol=1e-4)
    (merged,) = Predictor(_PlantedPerson(), task, spec, ["person"], scales=(1.0, 2.0), flip=True, K=4).detect([image])
    assert len(merged) == 8 and merged.keypoints.shape == (8, 17, 3)


@pytest.mark.parametrize("s", [512.0, np.float32(640), np.array(480.0), [672, 448], np.array([352.0, 512.0], np.float32)])
def test_original_meta_in_every_form(s) -> None:
    """The original's ``s``: a scalar (fix-res), a 0-d array, or ``[w, h]`` (keep-res, ddd)."""
    from centernet.data.geometry import ImageMeta

    meta = ImageMeta.from_original({"c": np.array([320.0, 213.0]), "s": s, "out_height": 112, "out_width": 168})
    assert meta.output_hw == (112, 168) and meta.input_hw == (448, 672)
    if np.asarray(s).size == 1:
        assert isinstance(meta.scale, float) and meta.scale == float(np.asarray(s))
    else:
        np.testing.assert_array_equal(meta.scale, np.asarray(s, np.float32))
    # The inverse output transform maps the output-map centre back to the window centre.
    back = meta.output_transform(inv=True) @ np.array([84.0, 56.0, 1.0])
    np.testing.assert_allclose(back, [320.0, 213.0], atol=1e-3)
    with pytest.raises(ValueError, match="scalar or"):
        ImageMeta.from_original({"c": [0, 0], "s": [1, 2, 3], "out_hw": [4, 4]})
