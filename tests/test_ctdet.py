"""Behaviour of the 2D task: targets on hard inputs, losses without objects, decode round trip."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from centernet.data.geometry import ImageMeta
from centernet.data.transforms import InputSpec
from centernet.data.augment import NumpyAugmentRandom, TrainAugmentation
from centernet.tasks.registry import get_task
from centernet.tasks.ctdet import CtdetTask, mirror_boxes
from centernet.tasks.decoding import flip_lr_pairs, peak_filter, topk

NUM_CLASSES = 3


def letterbox(height: int, width: int, input_hw: tuple[int, int] = (128, 128), flipped: bool = False) -> ImageMeta:
    meta = InputSpec(input_hw=input_hw).meta(height, width)
    return ImageMeta(meta.center, meta.scale, meta.input_hw, meta.output_hw, meta.image_hw, flipped=flipped)


def annotations(boxes, labels) -> dict[str, np.ndarray]:
    return {"boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4), "labels": np.asarray(labels, dtype=np.int64)}


def collate(samples: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    return {key: torch.from_numpy(np.stack([s[key] for s in samples])) for key in samples[0]}


@pytest.fixture
def task() -> CtdetTask:
    return CtdetTask(NUM_CLASSES)


def test_heads_and_registry(task) -> None:
    assert task.heads == {"hm": NUM_CLASSES, "wh": 2, "reg": 2}
    assert list(task.heads) == ["hm", "wh", "reg"]  # the original's options order
    assert isinstance(get_task("ctdet", 5), CtdetTask) and get_task("ctdet", 5).num_classes == 5
    with pytest.raises(ValueError, match="unknown task"):
        get_task("segmentation", 3)


def test_no_object_image(task) -> None:
    meta = letterbox(100, 160)
    targets = task.encode(annotations([], []), meta)
    assert targets["hm"].shape == (NUM_CLASSES, 32, 32) and not targets["hm"].any()
    assert not targets["reg_mask"].any() and not targets["wh"].any()

    batch = collate([targets, targets])
    outputs = {name: torch.randn(2, c, 32, 32, requires_grad=True) for name, c in task.heads.items()}
    total, stats = task.loss(outputs, batch)
    assert set(stats) == {"loss", "hm_loss", "wh_loss", "off_loss"}
    assert torch.isfinite(total) and all(torch.isfinite(v) for v in stats.values())
    assert stats["wh_loss"] == 0 and stats["off_loss"] == 0
    # Without positives the focal loss is the bare (un-normalised) negative term, still > 0.
    assert stats["hm_loss"] > 0
    total.backward()
    assert torch.isfinite(outputs["hm"].grad).all()

    # A network that sees nothing: every score tiny, no detection above a usual threshold.
    quiet = {"hm": torch.full((1, NUM_CLASSES, 32, 32), -8.0), "wh": torch.zeros(1, 2, 32, 32), "reg": torch.zeros(1, 2, 32, 32)}
    dets = task.decode(quiet, K=10)
    assert dets.shape == (1, 10, 6)
    assert (dets[0, :, 4] < 0.01).all()


def test_objects_on_the_border_are_clipped(task) -> None:
    meta = letterbox(128, 128)  # image = input; output map 32 x 32, 4 image pixels per output pixel
    boxes = [[-20, -10, 30, 40], [100, 90, 150, 140], [0, 0, 128, 128]]
    targets = task.encode(annotations(boxes, [0, 1, 2]), meta)
    assert targets["reg_mask"].tolist()[:3] == [1, 1, 1]
    ind = targets["ind"][:3]
    assert (ind >= 0).all() and (ind < 32 * 32).all()
    for k, cls in enumerate([0, 1, 2]):
        y, x = divmod(int(ind[k]), 32)
        assert targets["hm"][cls, y, x] == 1.0
    # Box 0 is clipped to x in [0, 7.5] output pixels -> width 7.5 (then the centre follows the clip).
    np.testing.assert_allclose(targets["wh"][0], [7.5, 10.0])
    np.testing.assert_allclose(targets["wh"][2], [31.0, 31.0])  # clipped at W - 1 as the original


def test_one_pixel_and_degenerate_boxes(task) -> None:
    meta = letterbox(128, 128)
    boxes = [[40, 40, 41, 41], [60, 60, 60, 80], [70, 10, 90, 10]]  # 1x1 px, zero width, zero height
    targets = task.encode(annotations(boxes, [1, 0, 0]), meta)
    assert targets["reg_mask"].tolist()[:3] == [1, 0, 0]
    np.testing.assert_allclose(targets["wh"][0], [0.25, 0.25])
    assert targets["hm"][1].max() == 1.0 and (targets["hm"][1] > 0).sum() == 1  # radius 0: one pixel
    assert not targets["hm"][0].any()


def test_more_objects_than_rows(task) -> None:
    rng = np.random.default_rng(0)
    n = task.max_objects + 72
    xy = rng.uniform(0, 100, size=(n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(4, 28, size=(n, 2))], axis=1)
    targets = task.encode(annotations(boxes, rng.integers(0, NUM_CLASSES, n)), letterbox(128, 128))
    assert targets["wh"].shape == (task.max_objects, 2)
    assert targets["reg_mask"].sum() == task.max_objects  # the first max_objects, all valid


def test_mirrored_sample_matches_mirrored_annotations(task) -> None:
    boxes = annotations([[10, 20, 50, 70], [80, 5, 119, 60]], [0, 2])
    flipped = task.encode(boxes, letterbox(90, 120, flipped=True))
    mirrored = annotations(mirror_boxes(boxes["boxes"], 120), boxes["labels"])
    direct = task.encode(mirrored, letterbox(90, 120))
    for key in flipped:
        np.testing.assert_array_equal(flipped[key], direct[key], err_msg=key)


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def test_encode_decode_round_trip(task) -> None:
    """Ideal head maps built from the targets decode back to the image boxes."""
    height, width = 150, 230
    meta = letterbox(height, width, input_hw=(256, 256))
    boxes = np.array([[12.5, 30.0, 80.0, 120.0], [120.0, 10.0, 220.0, 60.0], [150.0, 90.0, 171.0, 140.0]], np.float32)
    labels = np.array([2, 0, 1])
    targets = task.encode(annotations(boxes, labels), meta)
    out_h, out_w = meta.output_hw
    wh = np.zeros((1, 2, out_h * out_w), np.float32)
    reg = np.zeros((1, 2, out_h * out_w), np.float32)
    valid = targets["reg_mask"] == 1
    wh[0, :, targets["ind"][valid]] = targets["wh"][valid]
    reg[0, :, targets["ind"][valid]] = targets["reg"][valid]
    outputs = {
        "hm": torch.from_numpy(logit(targets["hm"])[None]),
        "wh": torch.from_numpy(wh.reshape(1, 2, out_h, out_w)),
        "reg": torch.from_numpy(reg.reshape(1, 2, out_h, out_w)),
    }
    dets = task.decode(outputs, K=10)
    assert torch.all(dets[0, :3, 4] > 0.99) and torch.all(dets[0, 3:, 4] < 0.99)
    found = task.detections(task.post_process(dets[0], meta))
    top = found["scores"] > 0.99
    order = np.argsort(found["labels"][top])
    np.testing.assert_array_equal(found["labels"][top][order], np.sort(labels))
    expected = boxes[np.argsort(labels)]
    np.testing.assert_allclose(found["boxes"][top][order], expected, atol=1e-3)

    # Flip test on the image and its exact mirror gives the same boxes.
    mirrored = {k: torch.cat([v, v.flip(-1) * (torch.tensor([-1.0, 1.0]).view(1, 2, 1, 1) if k == "reg" else 1)]) for k, v in outputs.items()}
    flip_dets = task.decode(mirrored, K=10, flip=True)
    torch.testing.assert_close(flip_dets[0, :3], dets[0, :3])


def test_topk_is_the_global_top_k_of_peaks() -> None:
    torch.manual_seed(0)
    heat = peak_filter(torch.rand(2, 5, 17, 23))
    scores, inds, classes, ys, xs = topk(heat, K=40)
    flat = heat.reshape(2, -1)
    expected, where = torch.topk(flat, 40)
    torch.testing.assert_close(scores, expected, rtol=0, atol=0)
    torch.testing.assert_close(classes * 17 * 23 + inds, where, rtol=0, atol=0)
    torch.testing.assert_close(ys * 23 + xs, inds.float(), rtol=0, atol=0)


def test_peak_filter_matches_max_pool_with_plateaus() -> None:
    torch.manual_seed(1)
    for heat in (torch.rand(2, 3, 19, 11), torch.randint(0, 3, (1, 2, 8, 9)).float(), torch.rand(1, 1, 1, 6)):
        for kernel in (3, 5):
            pooled = F.max_pool2d(heat, kernel, stride=1, padding=(kernel - 1) // 2)
            torch.testing.assert_close(peak_filter(heat, kernel), heat * (pooled == heat), rtol=0, atol=0)


def test_flip_lr_pairs() -> None:
    x = torch.arange(2 * 4 * 1 * 3, dtype=torch.float32).reshape(2, 4, 1, 3)
    out = flip_lr_pairs(x, [(0, 3)])
    torch.testing.assert_close(out[:, 0], x[:, 3].flip(-1))
    torch.testing.assert_close(out[:, 3], x[:, 0].flip(-1))
    torch.testing.assert_close(out[:, 1], x[:, 1].flip(-1))


def test_training_augmentation_is_deterministic_and_consistent(task) -> None:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, size=(90, 140, 3), dtype=np.uint8)
    boxes = annotations([[10, 10, 60, 50], [70, 30, 130, 85]], [0, 1])
    augment = TrainAugmentation(spec=InputSpec(input_hw=(96, 96)))
    first = task.augment(image, augment, NumpyAugmentRandom(7))
    second = task.augment(image, augment, NumpyAugmentRandom(np.random.default_rng(7)))
    np.testing.assert_array_equal(first.input, second.input)
    assert first.input.shape == (3, 96, 96) and first.input.dtype == np.float32
    metas = [task.augment(image, augment, NumpyAugmentRandom(seed)).meta for seed in range(20)]
    assert {m.flipped for m in metas} == {True, False}
    for meta in metas:
        targets = task.encode(boxes, meta)
        assert targets["hm"].shape == (NUM_CLASSES, 24, 24)
        assert math.isfinite(float(targets["wh"].sum()))


def test_keep_res_augmentation_pads_to_multiples_of_32(task) -> None:
    image = np.zeros((70, 100, 3), np.uint8)
    sample = task.augment(image, TrainAugmentation(spec=InputSpec(input_hw=None), color=False), NumpyAugmentRandom(0))
    network_input, meta = sample.input, sample.meta
    assert network_input.shape == (3, 96, 128) and meta.output_hw == (24, 32)


def test_dense_wh_targets_cover_each_gaussian_with_its_box_size() -> None:
    """--dense_wh: every pixel an object's Gaussian rules holds its (w, h); the mask is the heat map."""
    task = CtdetTask(NUM_CLASSES, dense_wh=True)
    meta = letterbox(128, 128)  # output 32x32, 1 output pixel = 4 input pixels
    boxes = [[8, 8, 48, 40], [52, 8, 100, 64], [8, 80, 40, 120]]  # the first two sit side by side
    targets = task.encode(annotations(boxes, [0, 1, 0]), meta)
    dense, mask = targets["dense_wh"], targets["dense_wh_mask"]
    assert dense.shape == mask.shape == (2, 32, 32)
    np.testing.assert_array_equal(mask[0], targets["hm"].max(axis=0))
    np.testing.assert_array_equal(mask[0], mask[1])
    # The centre-only targets are unchanged by the option.
    plain = CtdetTask(NUM_CLASSES).encode(annotations(boxes, [0, 1, 0]), meta)
    assert "wh" not in targets  # replaced by the dense map, as the original returns it
    for key in set(plain) - {"wh"}:
        np.testing.assert_array_equal(targets[key], plain[key])

    sizes = plain["wh"][targets["reg_mask"] == 1]
    for (x, y), size in zip(np.stack([targets["ind"] % 32, targets["ind"] // 32], 1)[:3], sizes):
        np.testing.assert_array_equal(dense[:, y, x], size)  # centres hold their own size
    # Outside every Gaussian nothing is regressed, and the values are only the objects' sizes.
    assert not dense[:, mask[0] == 0].any()
    values = {tuple(v) for v in dense.reshape(2, -1).T[mask[0].reshape(-1) > 0]}
    assert values <= {tuple(s) for s in sizes} and len(values) == 3


def test_dense_wh_loss_is_the_heat_weighted_mean_error() -> None:
    task = CtdetTask(NUM_CLASSES, dense_wh=True)
    meta = letterbox(128, 128)
    targets = task.encode(annotations([[8, 8, 48, 40], [60, 70, 120, 100]], [0, 2]), meta)
    batch = collate([targets])
    outputs = {name: torch.zeros(1, c, 32, 32) for name, c in task.heads.items()}
    outputs["wh"] = batch["dense_wh"].clone()
    assert task.loss(outputs, batch)[1]["wh_loss"] == 0  # exact sizes wherever the mask is set

    outputs["wh"] = batch["dense_wh"] + 1.5  # every pixel 1.5 too wide and too high
    wh_loss = task.loss(outputs, batch)[1]["wh_loss"]
    torch.testing.assert_close(wh_loss, torch.tensor(1.5), atol=1e-3, rtol=0)
    outputs["wh"] = batch["dense_wh"].clone()
    outputs["wh"][batch["dense_wh_mask"] == 0] = 100.0  # errors where the mask is 0 cost nothing
    assert task.loss(outputs, batch)[1]["wh_loss"] == 0
