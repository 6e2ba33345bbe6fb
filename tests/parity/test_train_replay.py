"""Training samples of every task replayed against the original's recorded draws (``train/``).

For each case of ``$CENTERNET_REFERENCE_DIR/train/`` the experiment config is built from the
case's options, the task's own training-sample pipeline (``Task.augment`` + ``Task.encode``, as
``TrainingDataset`` calls it) is fed the original's random draws in the order it consumed them,
and every array the original returned is compared: the warped image, the network input, the affine
matrices, the window and every target. Nothing is tuned to one case: images, sizes, seeds and
options are read from the case files.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from centernet.config import load_config
from centernet.data.augment import TrainAugmentation
from centernet.engine.dataset import task_for
from centernet.tasks.ddd import CLASS_NAMES, IGNORED_AS, KITTI_TYPES, SKIPPED_TYPES
from tests.conftest import REFERENCE_DIR
from tests.opencv_build import made_with_opencv, same_build, warp_rounding_only
from tests.parity.test_targets_ctdet import ReplayRandom

TRAIN_DIR = REFERENCE_DIR / "train"
# The case names of the fixture set (the acceptance set has the same names, other contents).
INDEX = json.loads((TRAIN_DIR / "index.json").read_text()) if (TRAIN_DIR / "index.json").exists() else {}
CASES = sorted(INDEX.get("cases", []))
# The software the set was made with; the warped image and the network input depend on the OpenCV build.
ENVIRONMENT = INDEX.get("environment", {})
PIXEL_KEYS = ("warped", "input")
# Arrays compared besides the targets: npz key -> what of ours it is.
GEOMETRY_KEYS = ("input", "warped", "trans_input", "trans_output", "trans_output_rot", "meta__c", "meta__s")
NOT_TARGETS = {"gt_det", "calib"}  # our debugging rows / the frame's camera, compared as meta__gt_det / meta__calib


def case_config(info: dict):
    """Our experiment config for the case's options (the original's flags -> our fields)."""
    opt = info["options"]
    task = info["task"]
    size = [opt["input_res"], opt["input_res"]] if task == "multi_pose" else [opt["input_h"], opt["input_w"]]
    overrides = [
        f"task={task}",
        f"data.input_size={size}",
        f"data.keep_res={str(opt['keep_res']).lower()}",
        f"data.mean={info['mean_bgr']}",
        f"data.std={info['std_bgr']}",
        f"augment.random_crop={str(not opt['not_rand_crop']).lower()}",
        f"augment.scale={opt['scale']}",
        f"augment.shift={opt['shift']}",
        f"augment.flip={opt['flip']}",
        f"augment.color={str(not opt['no_color_aug']).lower()}",
        f"augment.rotate={opt['rotate']}",
        f"augment.rotate_prob={opt['aug_rot']}",
        f"augment.aug_ddd={opt['aug_ddd']}",
        f"train.max_objects={info['max_objs']}",
        f"train.dense_wh={str(opt['dense_wh']).lower()}",
        f"train.dense_wh_original={str(opt['dense_wh']).lower()}",
        f"train.cat_spec_wh={str(opt['cat_spec_wh'] and not opt['dense_wh']).lower()}",
        f"train.dense_hp={str(opt['dense_hp']).lower()}",
        f"train.hm_hp={str(opt['hm_hp']).lower()}",
        f"train.hp_offset={str(opt['reg_hp_offset']).lower()}",
    ]
    return load_config(None, overrides)


def coco_annotations(info: dict, data_dir: Path) -> dict[str, np.ndarray]:
    """The image's annotations in json order, as the original's COCO data sets read them."""
    name = "instances_train2017.json" if info["task"] == "ctdet" else "person_keypoints_train2017.json"
    coco = json.loads((data_dir / "coco_mini" / "annotations" / name).read_text())
    anns = [a for a in coco["annotations"] if a["image_id"] == info["img_id"]]
    assert [a["id"] for a in anns] == [row["ann_id"] for row in info["annotations"]]
    boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], dtype=np.float32).reshape(-1, 4)
    if info["task"] == "ctdet":
        labels = np.array([info["valid_ids"].index(a["category_id"]) for a in anns], dtype=np.int64)
        assert labels.tolist() == [row["channel"] for row in info["annotations"]]
        return {"boxes": boxes, "labels": labels}
    keypoints = np.array([a["keypoints"] for a in anns], dtype=np.float32).reshape(len(anns), info["num_joints"], 3)
    return {"boxes": boxes, "labels": np.zeros(len(anns), np.int64), "keypoints": keypoints}


def kitti_annotations(info: dict) -> dict[str, np.ndarray]:
    """The frame's objects from the original converter's json, with our task's role of each type checked."""
    coco = json.loads((TRAIN_DIR / "ddd_kitti_train_coco.json").read_text())
    anns = [a for a in coco["annotations"] if a["image_id"] == info["img_id"]]
    assert [a["id"] for a in anns] == [row["ann_id"] for row in info["annotations"]]
    types = [KITTI_TYPES[a["category_id"] - 1] for a in anns]
    for kitti_type, (category, value) in zip(KITTI_TYPES, sorted((int(k), v) for k, v in info["cat_ids"].items())):
        # The original's cat_ids: >= 0 trained channel, <= -99 skipped, -1 every channel ignored, else channel -v - 2.
        if kitti_type in SKIPPED_TYPES:
            assert value <= -99, kitti_type
        elif kitti_type in IGNORED_AS:
            expected = list(range(len(CLASS_NAMES))) if value == -1 else [-value - 2]
            assert [CLASS_NAMES.index(n) for n in IGNORED_AS[kitti_type]] == expected, kitti_type
        else:
            assert CLASS_NAMES.index(kitti_type) == value, kitti_type
    image = next(im for im in coco["images"] if im["id"] == info["img_id"])
    return {
        "types": np.array(types),
        "boxes": np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], dtype=np.float32).reshape(-1, 4),
        "alpha": np.array([a["alpha"] for a in anns], dtype=np.float64),
        "dims": np.array([a["dim"] for a in anns], dtype=np.float64).reshape(-1, 3),
        "location": np.array([a["location"] for a in anns], dtype=np.float64).reshape(-1, 3),
        "calib": np.array(image["calib"], dtype=np.float32),
    }


def image_path(info: dict, data_dir: Path) -> Path:
    if info["task"] == "ddd":
        return data_dir / "kitti_mini" / "training" / "image_2" / info["file_name"]
    return data_dir / "coco_mini" / "train2017" / info["file_name"]


def assert_matches(actual: np.ndarray, expected: np.ndarray, name: str) -> None:
    """Integers and masks exactly; floats within ``1e-3 * max(1, std)`` absolute and ``1e-3`` relative."""
    actual = np.asarray(actual)
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    if expected.dtype.kind in "iub":
        np.testing.assert_array_equal(actual, expected, err_msg=name)
        return
    atol = 1e-3 * max(1.0, float(np.std(expected)))
    np.testing.assert_allclose(actual.astype(np.float64), expected.astype(np.float64), rtol=1e-3, atol=atol, err_msg=name)


def replay(case: str, data_dir: Path, draws: list[dict] | None = None) -> tuple[dict, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Run our pipeline on the case with its recorded draws (or ``draws``): ``(info, ours, reference)``."""
    info = json.loads((TRAIN_DIR / f"{case}.json").read_text())
    reference = dict(np.load(TRAIN_DIR / f"{case}.npz"))
    cfg = case_config(info)
    task = task_for(cfg, info["options"]["num_classes"])
    augmentation = TrainAugmentation.from_config(cfg)
    augmentation = dataclasses.replace(
        augmentation,
        spec=dataclasses.replace(augmentation.spec, down_ratio=info["options"]["down_ratio"]),
        eigen_values=np.array(info["eig_val"], dtype=np.float32),
        eigen_vectors=np.array(info["eig_vec"], dtype=np.float32),
    )
    pixels = cv2.imread(str(image_path(info, data_dir)))
    assert pixels is not None, f"{image_path(info, data_dir)}: not readable"
    assert pixels.shape[:2] == (info["height"], info["width"])
    annotations = kitti_annotations(info) if info["task"] == "ddd" else coco_annotations(info, data_dir)

    rng = ReplayRandom(info["draws"] if draws is None else draws)
    sample = task.augment(pixels, augmentation, rng)
    assert not rng.draws, f"{case}: the original drew {len(rng.draws)} more values: {[d['role'] for d in rng.draws]}"
    meta = sample.meta
    targets = task.encode(annotations, meta)
    if "gt_det" in targets and not len(targets["gt_det"]):
        # The original writes one all-zero row when no object is valid; ours has no row.
        targets["gt_det"] = np.zeros((1, targets["gt_det"].shape[1]), np.float32)
    ours = {
        "source": pixels[:, ::-1] if meta.flipped else pixels,  # what the original warps (flipped first)
        "flags": (meta.flipped, meta.rot, meta.augmented),
        "input": sample.input,
        "warped": sample.warped,
        "trans_input": meta.input_transform(),
        "trans_output": meta.output_transform(rot=0),
        "trans_output_rot": meta.output_transform(),
        "meta__c": meta.center,
        "meta__s": np.asarray(meta.scale),
        **{f"meta__{key}": targets[key] for key in NOT_TARGETS if key in targets},
        **{key: value for key, value in targets.items() if key not in NOT_TARGETS},
    }
    return info, ours, reference


@pytest.mark.parametrize("case", CASES)
def test_training_sample_replays_the_original(case: str, reference_dir: Path, data_dir: Path) -> None:
    assert (reference_dir / "train" / f"{case}.json").exists(), f"{case}: listed in train/index.json but missing"
    info, ours, reference = replay(case, data_dir)
    flipped, rot, augmented = ours["flags"]
    assert (flipped, augmented) == (info["flipped"], info["aug"]), f"{case}: flipped / augmented"
    assert rot == pytest.approx(info["rot"], abs=1e-9), f"{case}: rotation"
    compare_sample(case, info, ours, reference)


def compare_sample(case: str, info: dict, ours: dict, reference: dict) -> None:
    """Every array of the original's sample against ours: keys, dtypes, values (AssertionError if not)."""
    ours = dict(ours)
    source = ours.pop("source")
    ours.pop("flags")
    returned = set(info["returned_keys"])
    target_keys = {key for key in ours if key not in GEOMETRY_KEYS and not key.startswith("meta__")} | {"input"}
    assert target_keys == returned, f"{case}: we return {sorted(target_keys)}, the original {sorted(returned)}"
    compared = [key for key in reference if key in ours]
    missing = sorted(set(reference) - set(compared) - {"meta__img_id"})
    assert not missing, f"{case}: arrays of the original we do not produce: {missing}"
    exact_pixels = same_build(ENVIRONMENT)  # under another OpenCV build: see assert_pixels_match
    for key in compared:
        if key in returned:
            assert ours[key].dtype == reference[key].dtype, f"{case} {key}: dtype {ours[key].dtype} != {reference[key].dtype}"
        if key in PIXEL_KEYS and not exact_pixels:
            continue
        assert_matches(ours[key], reference[key], f"{case} {key}")
    assert int(ours["reg_mask"].sum()) == info["num_reg_mask"]
    if not exact_pixels:
        with made_with_opencv(ENVIRONMENT, f"{case}: the warped image"):
            assert_pixels_match(ours, reference, source, info, case)


def assert_pixels_match(ours: dict, reference: dict, source: np.ndarray, info: dict, case: str) -> None:
    """The warped image and the network input, independent of the OpenCV build's half-way rounding.

    Where the warps differ (one grey level, at exact half-way values only), the input may differ by
    what one grey level becomes after colour augmentation and normalisation; everywhere else it
    must match as tightly as on the fixtures' own build. The targets never depend on pixel values.
    """
    differ = warp_rounding_only(ours["warped"], reference["warped"], source, ours["trans_input"], f"{case} warped")
    ours_input, their_input = np.asarray(ours["input"], np.float64), reference["input"].astype(np.float64)
    assert ours_input.shape == their_input.shape, f"{case} input: shape {ours_input.shape} != {their_input.shape}"
    assert_matches(ours_input[:, ~differ], their_input[:, ~differ], f"{case} input (pixels whose warp agrees)")
    one_level = 3.0 / 255 / min(info["std_bgr"])  # brightness x saturation (<= 1.4 x 1.8) of one grey level
    assert np.abs(ours_input[:, differ] - their_input[:, differ]).max(initial=0) <= one_level, f"{case} input at half-way pixels"


def test_the_fixture_set_is_complete(reference_dir: Path) -> None:
    """Every task is covered (a fixture set without cases must not pass by running nothing)."""
    assert CASES, f"no cases in {TRAIN_DIR / 'index.json'}"
    tasks = {json.loads((reference_dir / "train" / f"{case}.json").read_text())["task"] for case in CASES}
    assert tasks == {"ctdet", "multi_pose", "ddd"}


def moved(draw: dict):
    """Another value a draw of this kind could have given (``None``: the kind offers none)."""
    fn, value = draw["fn"], draw["value"]
    if fn in ("randn", "uniform"):
        return value + 0.05
    if fn == "normal":
        return [v + 0.05 for v in value]
    if fn == "random":  # decisions are ``value < p``: the other half of [0, 1)
        return value + 0.5 if value < 0.5 else value - 0.5
    if fn == "choice":
        options = list(draw["args"][0])
        here = int(np.argmin(np.abs(np.asarray(options) - value)))
        return options[(here + 1) % len(options)] if len(options) > 1 else None
    if fn == "randint":
        low, high = draw["kwargs"]["low"], draw["kwargs"]["high"]
        return value + 1 if value + 1 < high else value - 1 if value - 1 >= low else None
    if fn == "shuffle":
        return list(reversed(value)) if len(value) > 1 else None
    raise AssertionError(f"a draw of an unknown kind: {fn}")


@pytest.mark.parametrize("case", CASES)
def test_replay_fails_when_a_draw_is_perturbed(case: str, reference_dir: Path, data_dir: Path) -> None:
    """Each draw the case really makes, moved to another value of its kind, is caught when it matters.

    Whatever the draws are (crop or shift/scale, rotation, flip, colour, the ddd augmentation), a
    moved draw that changes our sample must make the comparison with the original fail (or make the
    pipeline ask for other draws than the original made), and at least one draw of every case changes it.
    """
    info, ours, reference = replay(case, data_dir)
    draws = info["draws"]
    changed = []
    for index, draw in enumerate(draws):
        value = moved(draw)
        if value is None:
            continue
        perturbed_draws = [dict(d) for d in draws]
        perturbed_draws[index]["value"] = value
        try:
            _, perturbed, _ = replay(case, data_dir, perturbed_draws)
        except AssertionError:  # the moved draw led our pipeline down another path than the original's
            changed.append(draw["role"])
            continue
        if all(np.array_equal(np.asarray(perturbed[key]), np.asarray(ours[key])) for key in ours if key != "source"):
            continue  # e.g. a shift clipped at its bound either way
        changed.append(draw["role"])
        with pytest.raises((AssertionError, pytest.fail.Exception)):  # (the latter: under another OpenCV build)
            compare_sample(case, info, perturbed, reference)
    assert changed, f"{case}: none of its {len(draws)} draws changes the sample when moved"
