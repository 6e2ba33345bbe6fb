"""A few training steps from every supported annotation format, on the shared real data sets."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import centernet
from centernet.cli import main
from centernet.config import load_config
from centernet.data.check import load_dataset
from centernet.data.kitti import read_calib
from centernet.data.records import DataFormatError
from centernet.engine.trainer import train
from tests.helpers import raccoon_as_yolo

FEW_STEPS = [
    "data.input_size=[64,64]",
    "data.num_workers=0",
    "data.max_images=4",
    "model.head_conv=16",
    "train.batch_size=2",
    "train.epochs=1",
    "train.val_interval=1",
    "train.save_images=0",
]


def _train(tmp_path: Path, name: str, *overrides: str, metric: str = "AP", recipe: str | None = None) -> list[dict]:
    train(load_config(recipe, [f"project={tmp_path}", f"name={name}", *FEW_STEPS, *overrides]))
    rows = list(csv.DictReader((tmp_path / name / "results.csv").open()))
    assert len(rows) == 1 and float(rows[0]["loss"]) > 0 and rows[0][metric] != ""
    return rows


# The format tests learn: 30 steps on the four training images (batch 4, lr 2e-3, no augmentation), then
# score those same images, so a reader that loses or misplaces boxes scores 0.
OVERFIT = [
    "train.batch_size=4",
    "train.epochs=30",
    "train.val_interval=30",
    "train.lr=2e-3",
    "train.schedule_epochs=null",
    "train.seed=0",
    "augment.random_crop=false",
    "augment.scale=0",
    "augment.shift=0",
    "augment.flip=0",
    "augment.color=false",
]
# AP50 after OVERFIT, measured for train.seed 0, 1, 2, 3 (torch 2.14.1, CPU): the four raccoon photos 0.207, 0.296,
# 0.025, 0.876 (COCO json, VOC xml and YOLO txt give identical numbers: the same boxes); the synthetic shapes 0.138,
# 0.008, 0.009, 0.004. After one step every seed scores 0.000. The floors sit under the lowest seed.
# coco_mini's first four training images (80 classes, up to 35 objects each): 0.008, 0.003, 0.006 for seeds 0-2.
RACCOON_AP50_FLOOR = 0.01
SYNTHETIC_AP50_FLOOR = 0.002
COCO_MINI_AP50_FLOOR = 0.001


def _learn(tmp_path: Path, name: str, floor: float, measured: str, *overrides: str) -> None:
    train(load_config(None, [f"project={tmp_path}", f"name={name}", *FEW_STEPS, *OVERFIT, *overrides]))
    rows = list(csv.DictReader((tmp_path / name / "results.csv").open()))
    assert len(rows) == 30 and float(rows[-1]["loss"]) < float(rows[0]["loss"]), [row["loss"] for row in rows]
    ap50 = float(rows[-1]["AP50"])
    assert ap50 >= floor, f"AP50 {ap50:.4f} on the training images after 30 steps; measured {measured} over seeds 0-3 (0-2 for coco_mini), floor {floor}"


def _yolo_tree(raccoon: Path, root: Path) -> Path:
    """Four raccoon images as an Ultralytics YOLO data set (images/ + labels/ + data yaml)."""
    raccoon_as_yolo(raccoon, root, 4, link=True)
    data = root / "data.yaml"
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/train\nnames: [raccoon]\n")
    return data


def test_coco_json(tmp_path, data_dir):
    annotations = data_dir / "raccoon" / "train.json"
    _learn(tmp_path, "coco", RACCOON_AP50_FLOOR, "0.025-0.876", f"data.source={annotations}", f"data.val_source={annotations}", "data.val_split=all")


def test_raccoon_benchmark_recipe_points_at_the_shared_data_and_trains(tmp_path, data_dir, monkeypatch):
    """benchmarks/train_raccoon.py's recipe: its paths (from the project root) and its settings run."""
    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    recipe = load_config("ctdet_res18_raccoon_384")
    assert (root / recipe.data.source).resolve() == (root.parent / "shared" / "data" / "raccoon" / "train.json").resolve()
    assert (recipe.train.cpu_bf16, recipe.train.channels_last, recipe.model.head_init) == (True, True, "pytorch")
    raccoon = data_dir / "raccoon"
    _train(tmp_path, "raccoon_384", f"data.source={raccoon / 'train.json'}", f"data.val_source={raccoon / 'val.json'}", recipe="ctdet_res18_raccoon_384")


def test_coco_root_with_sparse_category_ids(tmp_path, data_dir):
    root = data_dir / "coco_mini"
    _learn(tmp_path, "coco_mini", COCO_MINI_AP50_FLOOR, "0.003-0.008", f"data.source={root}", "data.train_split=train2017", "data.val_split=train2017")
    coco = json.loads((root / "annotations" / "instances_train2017.json").read_text())
    ids = sorted(category["id"] for category in coco["categories"])
    names = {category["id"]: category["name"] for category in coco["categories"]}
    assert ids != list(range(1, len(ids) + 1)), "the fixture's ids must have gaps for this test to mean anything"

    # Category id -> label: every annotation trains the channel of its id's rank among the sorted ids.
    category_of = {annotation["id"]: annotation["category_id"] for annotation in coco["annotations"]}
    records = load_dataset(str(root), "train2017").records
    pairs = [(category_of[int(a)], int(label)) for r in records for a, label in zip(r.annotation_ids, r.labels) if int(a) in category_of]
    assert len(pairs) > 100 and any(category > label + 1 for category, label in pairs)
    assert all(ids[label] == category for category, label in pairs)

    # The checkpoint keeps the mapping, and label -> category id: predict's COCO rows carry the id of each label.
    best = tmp_path / "coco_mini" / "best.pt"
    ckpt = torch.load(best, map_location="cpu", weights_only=True)
    assert list(ckpt["category_ids"]) == ids and list(ckpt["class_names"]) == [names[i] for i in ids]
    image = sorted((root / "val2017").iterdir())[0]
    (result,) = list(centernet.predict(best, image))
    out = tmp_path / "predicted"
    assert main(["predict", "--weights", str(best), "--source", str(image), "--output", str(out), "--conf", "0"]) == 0
    rows = json.loads((out / "results.json").read_text())
    assert len(rows) == len(result.labels) > 0
    assert [row["category_id"] for row in rows] == [ids[int(label)] for label in result.labels]


def test_voc_xml_folder(tmp_path, data_dir):
    _learn(tmp_path, "voc", RACCOON_AP50_FLOOR, "0.025-0.876", f"data.source={data_dir / 'raccoon'}", "data.train_split=train", "data.val_split=train")


def test_yolo_txt(tmp_path, data_dir):
    data = _yolo_tree(data_dir / "raccoon", tmp_path / "yolo_data")  # not inside the run folder runs/yolo; val: the train images
    _learn(tmp_path, "yolo", RACCOON_AP50_FLOOR, "0.025-0.876", f"data.source={data}")


def test_synthetic(tmp_path):
    _learn(
        tmp_path, "synthetic", SYNTHETIC_AP50_FLOOR, "0.004-0.138",
        "data.source=synthetic", "data.synthetic_image_size=64", "data.synthetic_images={train: 4, val: 4}", "data.val_split=train",
    )


def test_unknown_source_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no such file or folder"):
        _train(tmp_path, "bad", f"data.source={tmp_path / 'nothing'}")


def test_pose_from_coco_keypoints(tmp_path, data_dir):
    keypoints = data_dir / "coco_mini" / "annotations" / "person_keypoints_val2017.json"
    rows = _train(tmp_path, "pose", "task=multi_pose", f"data.source={keypoints}", "data.val_split=all")
    assert {"hp_loss", "hm_hp_loss", "hp_offset_loss"} <= set(rows[0])


def test_3d_from_kitti_folders(tmp_path, data_dir):
    rows = _train(
        tmp_path,
        "ddd",
        "task=ddd",
        f"data.source={data_dir / 'kitti_mini'}",
        "data.train_split=all",  # kitti_mini has no ImageSets/: every frame, said explicitly
        "data.val_split=all",
        "data.input_size=[64,192]",
        "data.mean=[0.485,0.456,0.406]",
        "data.std=[0.229,0.224,0.225]",
        "augment.random_crop=false",
        "augment.flip=0",
        metric="car/3d/moderate/ap11",
    )
    assert "dep_loss" in rows[0]

    # Prediction needs each frame's camera: a calib file, a folder of <frame>.txt, or an error.
    best, training = tmp_path / "ddd" / "best.pt", data_dir / "kitti_mini" / "training"
    frame = training / "image_2" / "000001.png"
    p2 = read_calib(training / "calib" / "000001.txt")
    for calib in (training / "calib", training / "calib" / "000001.txt", p2):
        (result,) = list(centernet.predict(best, frame, calib=calib))
        assert result.boxes_3d is not None and np.array_equal(result.boxes_3d.calib, p2)
    with pytest.raises(ValueError, match="needs each image's camera calibration"):
        list(centernet.predict(best, frame))
    with pytest.raises(DataFormatError, match="000001.txt: calibration file not found"):
        list(centernet.predict(best, frame, calib=tmp_path))
    out = tmp_path / "predicted"
    assert main(["predict", "--weights", str(best), "--source", str(frame), "--calib", str(training / "calib"), "--output", str(out), "--conf", "0"]) == 0
    # One file per frame, written even when no row passes the original's peak_thresh 0.2 (as the original).
    assert (out / "kitti" / "000001.txt").is_file()
    # With a heat map sure of every peak (its final bias at +10), every decoded row passes the threshold
    # and is written: one 16-column line per detection, class name first, score last. The columns'
    # values are checked against the original's files in test_e2e_original.
    ckpt = torch.load(best, map_location="cpu", weights_only=True)
    ckpt["state_dict"]["hm.2.bias"].fill_(10.0)
    confident = tmp_path / "confident.pt"
    torch.save(ckpt, confident)
    out = tmp_path / "predicted_confident"
    assert main(["predict", "--weights", str(confident), "--source", str(frame), "--calib", str(training / "calib"), "--output", str(out), "--conf", "0"]) == 0
    (result,) = list(centernet.predict(confident, frame, calib=p2))
    lines = (out / "kitti" / "000001.txt").read_text().splitlines()
    assert len(lines) == len(result.scores) > 0
    for line in lines:
        fields = line.split()
        assert len(fields) == 16 and fields[0] in ckpt["class_names"], line
        values = [float(v) for v in fields[1:]]  # numbers (the 2D box may be inverted: the original's warp of the size)
        assert all(np.isfinite(values)) and values[-1] >= 0.2, line
