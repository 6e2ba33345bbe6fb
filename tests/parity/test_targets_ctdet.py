"""ctdet training targets against the original dataset's, on real COCO images (val and augmented train)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from centernet.data.geometry import ImageMeta
from centernet.data.transforms import InputSpec, warp_to_input
from centernet.data.augment import TrainAugmentation
from centernet.tasks.ctdet import CtdetTask, boxes_to_output
from tests.helpers import assert_close

TARGET_KEYS = ("hm", "wh", "reg", "ind", "reg_mask")


def coco_annotations(annotation_file: Path, image_id: int, valid_ids: list[int]) -> dict[str, np.ndarray]:
    """An image's boxes (xyxy float32, as the original's ``_coco_box_to_bbox``) in annotation order."""
    coco = json.loads(annotation_file.read_text())
    channel = {cat: i for i, cat in enumerate(valid_ids)}
    anns = [a for a in coco["annotations"] if a["image_id"] == image_id]
    boxes = np.array(
        [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], dtype=np.float32
    ).reshape(-1, 4)
    labels = np.array([channel[a["category_id"]] for a in anns], dtype=np.int64)
    return {"boxes": boxes, "labels": labels}


def assert_targets_equal(targets: dict[str, np.ndarray], reference: dict[str, np.ndarray], name: str) -> None:
    for key in TARGET_KEYS:
        actual, expected = targets[key], reference[key]
        assert actual.dtype == expected.dtype, f"{name} {key}: dtype {actual.dtype} != {expected.dtype}"
        np.testing.assert_array_equal(actual, expected, err_msg=f"{name} {key}")


def gt_det_rows(annotations: dict[str, np.ndarray], meta: ImageMeta, max_objects: int) -> np.ndarray:
    """The original's ``gt_det`` rows ``[x1, y1, x2, y2, 1, cls]`` (output pixels) of the valid boxes."""
    boxes = boxes_to_output(annotations["boxes"][:max_objects], meta)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    keep = (w > 0) & (h > 0)
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    rows = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, np.ones_like(w), annotations["labels"][:max_objects]], 1)
    return rows[keep].astype(np.float32) if keep.any() else np.zeros((1, 6), np.float32)


@pytest.fixture(scope="module")
def val_fixture(reference_dir: Path) -> tuple[dict, np.lib.npyio.NpzFile]:
    return (
        json.loads((reference_dir / "targets" / "ctdet_coco_val.json").read_text()),
        np.load(reference_dir / "targets" / "ctdet_coco_val.npz"),
    )


def test_validation_targets(val_fixture, data_dir: Path) -> None:
    info, ref = val_fixture
    coco_dir = data_dir / "coco_mini"
    annotation_file = coco_dir / "annotations" / "instances_val2017.json"
    task = CtdetTask(info["num_classes"], max_objects=info["max_objs"])
    assert len(info["images"]) > 0
    for image in info["images"]:
        prefix = image["key_prefix"]
        reference = {key[len(prefix):]: ref[key] for key in ref.files if key.startswith(prefix)}
        height, width = image["height"], image["width"]
        pixels = cv2.imread(str(coco_dir / "val2017" / image["file_name"]))
        assert pixels.shape[:2] == (height, width)
        meta = ImageMeta(
            center=np.array([width / 2.0, height / 2.0], dtype=np.float32),
            scale=max(height, width) * 1.0,
            input_hw=(image["input_h"], image["input_w"]),
            output_hw=(image["output_h"], image["output_w"]),
            image_hw=(height, width),
        )
        np.testing.assert_array_equal(meta.center, reference["c"])
        np.testing.assert_array_equal(np.float32(meta.scale), reference["s"])
        assert_close(meta.input_transform(), reference["trans_input"], f"{prefix}trans_input", atol=0, rtol=0)
        assert_close(meta.output_transform(), reference["trans_output"], f"{prefix}trans_output", atol=0, rtol=0)

        annotations = coco_annotations(annotation_file, image["img_id"], info["valid_ids"])
        assert len(annotations["boxes"]) == image["num_annotations"]
        targets = task.encode(annotations, meta)
        assert_targets_equal(targets, reference, prefix)
        assert int(targets["reg_mask"].sum()) == image["num_valid_objects"]
        assert_close(gt_det_rows(annotations, meta, task.max_objects), reference["gt_det"], f"{prefix}gt_det", atol=1e-5, rtol=1e-6)

        if image["has_input"]:
            spec = InputSpec(input_hw=meta.input_hw, mean=tuple(info["mean_bgr"]), std=tuple(info["std_bgr"]))
            network_input = spec.normalize(warp_to_input(pixels, meta).astype(np.float32) / 255.0)
            assert_close(network_input, reference["input"], f"{prefix}input", atol=1e-6, rtol=1e-6)


class ReplayRandom:
    """Serves the original's recorded draws in order, checking each is the kind of draw expected."""

    # Our methods carry the names of the original's functions recorded in the fixture's ``draws``.
    def __init__(self, draws: list[dict]) -> None:
        self.draws = list(draws)

    def _next(self, fn: str) -> dict:
        assert self.draws, f"the transform drew {fn}() but the original made no further draw"
        draw = self.draws.pop(0)
        assert draw["fn"] == fn, f"the transform drew {fn}() where the original drew {draw['fn']}()"
        return draw

    def choice(self, options: np.ndarray) -> float:
        draw = self._next("choice")
        np.testing.assert_allclose(options, draw["args"][0], rtol=0, atol=0)
        return np.float64(draw["value"])

    def randint(self, low: int, high: int) -> int:
        draw = self._next("randint")
        assert (low, high) == (draw["kwargs"]["low"], draw["kwargs"]["high"])
        return int(draw["value"])

    def random(self) -> float:
        return float(self._next("random")["value"])

    def randn(self) -> float:
        return float(self._next("randn")["value"])

    def shuffle(self, names: list[str]) -> None:
        order = [name.rstrip("_") for name in self._next("shuffle")["value"]]
        assert sorted(order) == sorted(names)
        names[:] = order

    def uniform(self, low: float, high: float) -> float:
        draw = self._next("uniform")
        assert (low, high) == (draw["kwargs"]["low"], draw["kwargs"]["high"])
        return float(draw["value"])

    def normal(self, scale: float, size: int) -> np.ndarray:
        draw = self._next("normal")
        assert scale == draw["kwargs"]["scale"] and [size] == list(draw["kwargs"]["size"])
        return np.array(draw["value"], dtype=np.float64)


def test_training_sample_replayed(reference_dir: Path, data_dir: Path) -> None:
    info = json.loads((reference_dir / "targets" / "ctdet_train_sample.json").read_text())
    ref = np.load(reference_dir / "targets" / "ctdet_train_sample.npz")
    val_info = json.loads((reference_dir / "targets" / "ctdet_coco_val.json").read_text())
    options = info["options"]
    coco_dir = data_dir / "coco_mini"
    pixels = cv2.imread(str(coco_dir / "train2017" / info["file_name"]))
    assert pixels.shape[:2] == (info["height"], info["width"])
    annotations = coco_annotations(coco_dir / "annotations" / "instances_train2017.json", info["img_id"], val_info["valid_ids"])

    transform = TrainAugmentation(
        spec=InputSpec(
            input_hw=(options["input_h"], options["input_w"]),
            mean=tuple(val_info["mean_bgr"]),
            std=tuple(val_info["std_bgr"]),
        ),
        random_crop=not options["not_rand_crop"],
        scale=options["scale"],
        shift=options["shift"],
        flip=options["flip"],
        color=not options["no_color_aug"],
        eigen_values=np.array(info["eig_val"], dtype=np.float32),
        eigen_vectors=np.array(info["eig_vec"], dtype=np.float32),
    )
    rng = ReplayRandom(info["draws"])
    task = CtdetTask(val_info["num_classes"], max_objects=ref["wh"].shape[0])
    sample = task.augment(pixels, transform, rng)
    network_input, meta = sample.input, sample.meta
    assert not rng.draws, f"draws left unused: {rng.draws}"

    assert meta.flipped == info["flipped"]
    np.testing.assert_array_equal(meta.center, np.array(info["c"], dtype=np.float32))
    np.testing.assert_array_equal(np.float32(meta.scale), np.float32(info["s"]))  # scalar, or [w, h] with keep-res
    assert meta.output_hw == (options["output_h"], options["output_w"])
    assert_close(meta.input_transform(), ref["trans_input"], "trans_input", atol=0, rtol=0)
    assert_close(meta.output_transform(), ref["trans_output"], "trans_output", atol=0, rtol=0)
    assert_close(network_input, ref["input"], "input", atol=1e-5, rtol=1e-5)

    targets = task.encode(annotations, meta)
    assert_targets_equal(targets, {key: ref[key] for key in TARGET_KEYS}, "train sample")
    assert int(targets["reg_mask"].sum()) == info["num_valid_objects"]
