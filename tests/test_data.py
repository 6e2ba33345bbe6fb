"""Data readers on the shared real data sets, formats built in tmp_path, the synthetic set and load/check."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from centernet.data import (
    KITTI_CLASSES,
    SHAPE_CLASSES,
    check_dataset,
    load_dataset,
    read_coco,
    read_kitti,
    read_voc,
    read_yolo,
    synthetic_dataset,
)
from centernet.data.kitti import KITTI_TYPE_RULES
from centernet.data.records import DataFormatError


def _write_image(path: Path, width: int, height: int, value: int = 120) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((height, width, 3), value, dtype=np.uint8))
    return path


# ---------------------------------------------------------------- real data


@pytest.mark.parametrize("split", ["train", "val"])
def test_raccoon_voc_and_coco_json_give_the_same_boxes(data_dir: Path, split: str) -> None:
    voc = read_voc(data_dir / "raccoon", split)
    coco = read_coco(data_dir / "raccoon" / f"{split}.json")
    stems = (data_dir / "raccoon" / f"{split}.txt").read_text().split()
    assert [r.path.stem for r in voc] == stems
    assert len(voc) == len(coco) and voc.class_names == coco.class_names == ("raccoon",)
    coco_by_name = {r.path.name: r for r in coco}
    for record in voc:
        other = coco_by_name[record.path.name]
        assert (record.width, record.height) == (other.width, other.height)
        np.testing.assert_array_equal(record.boxes, other.boxes)
        np.testing.assert_array_equal(record.labels, other.labels)
    assert not voc.report.issues and not coco.report.issues


def test_coco_sparse_category_ids_and_annotation_order(data_dir: Path) -> None:
    json_path = data_dir / "coco_mini" / "annotations" / "instances_val2017.json"
    raw = json.loads(json_path.read_text())
    dataset = read_coco(json_path)
    category_ids = sorted(c["id"] for c in raw["categories"])
    assert dataset.category_ids == tuple(category_ids)
    assert dataset.num_classes == len(category_ids)
    for label, category_id in enumerate(category_ids):
        assert dataset.label_of_category[category_id] == label
        assert dataset.category_id_of(label) == category_id
    assert [r.image_id for r in dataset] == [image["id"] for image in raw["images"]]
    assert all(r.path.is_file() for r in dataset)
    # Each record holds its image's annotations in file order, boxes computed as float32(x + w).
    for record in dataset.records[:5]:
        anns = [a for a in raw["annotations"] if a["image_id"] == record.image_id]
        assert record.annotation_ids.tolist() == [a["id"] for a in anns]
        expected = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], dtype=np.float32)
        np.testing.assert_array_equal(record.boxes, expected)
        assert record.labels.tolist() == [category_ids.index(a["category_id"]) for a in anns]
        assert record.crowd.tolist() == [bool(a["iscrowd"]) for a in anns]
    crowd_total = sum(a["iscrowd"] for a in raw["annotations"])
    assert sum(int(r.crowd.sum()) for r in dataset) == crowd_total == dataset.report.counts()["crowd"]
    assert not any(r.ignore.any() for r in dataset), "default crowd policy is the original's: ordinary objects"


def test_coco_keypoints(data_dir: Path) -> None:
    json_path = data_dir / "coco_mini" / "annotations" / "person_keypoints_val2017.json"
    raw = json.loads(json_path.read_text())
    dataset = read_coco(json_path)
    num_joints = len(raw["categories"][0]["keypoints"])
    assert dataset.keypoint_names == tuple(raw["categories"][0]["keypoints"])
    by_id = {a["id"]: a for a in raw["annotations"]}
    for record in dataset:
        assert record.keypoints.shape == (len(record), num_joints, 3)
        for ann_id, joints in zip(record.annotation_ids, record.keypoints):
            np.testing.assert_array_equal(joints.reshape(-1), np.array(by_id[ann_id]["keypoints"], dtype=np.float32))
    without_joints = sum(1 for a in raw["annotations"] if a["num_keypoints"] == 0 and not a["iscrowd"])
    assert dataset.report.counts()["no_visible_keypoints"] == without_joints


def test_kitti_layout_matches_the_original_conversion(data_dir: Path, reference_dir: Path) -> None:
    converted_path = reference_dir / "targets" / "ddd_kitti_val_coco.json"
    converted = json.loads(converted_path.read_text())
    frames = [Path(image["file_name"]).stem for image in converted["images"]]
    raw = read_kitti(data_dir / "kitti_mini", frames=frames)
    from_json = read_coco(converted_path, image_dir=data_dir / "kitti_mini" / "training" / "image_2")
    assert raw.class_names == from_json.class_names == KITTI_CLASSES
    assert (
        [r.image_id for r in raw] == [r.image_id for r in from_json] == [image["id"] for image in converted["images"]]
    )
    for a, b in zip(raw, from_json):
        assert (a.width, a.height) == (b.width, b.height)
        np.testing.assert_array_equal(a.calib, b.calib)  # both parsed as float32, as the original
        np.testing.assert_allclose(a.boxes, b.boxes, rtol=0, atol=1e-4)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.ignore, b.ignore)
        assert a.objects_3d.types == b.objects_3d.types
        for name in ("dims", "locations", "rotation_y", "alpha", "occlusion"):
            np.testing.assert_array_equal(getattr(a.objects_3d, name), getattr(b.objects_3d, name), err_msg=name)
    # The original's cat_ids rules: Van/Truck ignore Car, Person_sitting ignores Pedestrian, DontCare all.
    for record in raw:
        for kind, label, ignore in zip(record.objects_3d.types, record.labels, record.ignore):
            target, expected_ignore = KITTI_TYPE_RULES[kind]
            assert label == (KITTI_CLASSES.index(target) if target else -1)
            assert ignore == expected_ignore


def test_kitti_all_frames_and_split_file(data_dir: Path, tmp_path: Path) -> None:
    everything = read_kitti(data_dir / "kitti_mini")
    labels = sorted((data_dir / "kitti_mini" / "training" / "label_2").glob("*.txt"))
    assert [r.path.stem for r in everything] == [p.stem for p in labels]
    lines = [line for line in labels[0].read_text().splitlines() if line.strip()]
    assert len(everything[0]) == len(lines)
    assert everything[0].annotation_ids.tolist() == list(range(1, len(lines) + 1))
    # A split file in ImageSets/ selects frames; a missing one is an error naming those there are.
    root = tmp_path / "kitti"
    (root / "ImageSets").mkdir(parents=True)
    (root / "training").symlink_to(data_dir / "kitti_mini" / "training")
    (root / "ImageSets" / "val.txt").write_text(f"{labels[2].stem}\n{labels[1].stem}\n")
    assert [r.path.stem for r in read_kitti(root, "val")] == [labels[2].stem, labels[1].stem]
    with pytest.raises(DataFormatError, match=r"no split 'test' \(looked for .*ImageSets/test.txt.*\); splits there: val; split 'all'"):
        read_kitti(root, "test")
    assert len(read_kitti(root, "all")) == len(labels)


# ---------------------------------------------------------------- formats built here


def _yolo_tree(root: Path, names: object, extra: dict | None = None) -> Path:
    _write_image(root / "images" / "train" / "a.png", 200, 100)
    _write_image(root / "images" / "train" / "b.png", 64, 64)
    _write_image(root / "images" / "val" / "c.png", 50, 40)
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "train" / "a.txt").write_text("1 0.5 0.5 0.2 0.4\n\n0 0.25 0.75 0.1 0.2\n")
    (root / "labels" / "train" / "b.txt").write_text("0 0.25 0.25 0.5 0.75 0.75 0.25\n")  # a polygon
    spec = {"path": ".", "train": "images/train", "val": "images/val", "names": names, **(extra or {})}
    yaml_path = root / "data.yaml"
    yaml_path.write_text(yaml.safe_dump(spec))
    return yaml_path


@pytest.mark.parametrize("names", [["cat", "dog"], {0: "cat", 1: "dog"}])
def test_yolo_reader(tmp_path: Path, names: object) -> None:
    yaml_path = _yolo_tree(tmp_path, names)
    train = read_yolo(yaml_path, "train")
    assert train.class_names == ("cat", "dog")
    a, b = train.records
    assert (a.width, a.height) == (200, 100)
    np.testing.assert_allclose(a.boxes, [[80, 30, 120, 70], [40, 65, 60, 85]], atol=1e-4)
    assert a.labels.tolist() == [1, 0] and a.annotation_ids.tolist() == [1, 3]
    np.testing.assert_allclose(b.boxes, [[16, 16, 48, 48]], atol=1e-4)
    val = read_yolo(yaml_path, "val")
    assert len(val) == 1 and len(val[0]) == 0, "an image without label file is a negative"
    assert val.report.counts()["empty_image"] == 1


def test_yolo_list_file_and_keypoints(tmp_path: Path) -> None:
    yaml_path = _yolo_tree(tmp_path, ["person"], {"kpt_shape": [2, 3], "train": "train.txt"})
    (tmp_path / "train.txt").write_text("./images/train/a.png\n")
    (tmp_path / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.5 0.5 0.4 0.5 2 0.6 0.5 0\n")
    dataset = read_yolo(yaml_path, "train")
    assert dataset.keypoint_names == ("joint_0", "joint_1")
    record = dataset[0]
    np.testing.assert_allclose(record.boxes, [[50, 25, 150, 75]], atol=1e-4)
    np.testing.assert_allclose(record.keypoints, [[[80, 50, 2], [120, 50, 0]]], atol=1e-4)


def _voc_tree(root: Path) -> Path:
    objects = {
        "img1": [("cat", (10, 20, 50, 60), 0), ("dog", (5, 5, 30, 30), 1)],
        "img2": [("dog", (1, 2, 3, 4), 0)],
        "img3": [],
    }
    (root / "Annotations").mkdir(parents=True)
    for stem, items in objects.items():
        _write_image(root / "JPEGImages" / f"{stem}.jpg", 80, 70)
        body = "".join(
            f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{box[0]}</xmin>"
            f"<ymin>{box[1]}</ymin><xmax>{box[2]}</xmax><ymax>{box[3]}</ymax></bndbox></object>"
            for name, box, difficult in items
        )
        size = "<size><width>80</width><height>70</height></size>"
        xml = f"<annotation><filename>{stem}.jpg</filename>{size}{body}</annotation>"
        (root / "Annotations" / f"{stem}.xml").write_text(xml)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "train.txt").write_text("img2\nimg1\n")
    return root


def test_voc_reader_split_classes_and_difficult(tmp_path: Path) -> None:
    root = _voc_tree(tmp_path / "voc")
    train = read_voc(root, "train")
    assert [r.path.name for r in train] == ["img2.jpg", "img1.jpg"]
    assert train.class_names == ("cat", "dog")
    img1 = train[1]
    np.testing.assert_array_equal(img1.boxes, [[10, 20, 50, 60], [5, 5, 30, 30]])
    assert img1.labels.tolist() == [0, 1] and img1.difficult.tolist() == [False, True]
    assert not img1.ignore.any() and train.report.counts()["difficult"] == 1
    assert read_voc(root, "train", difficult="ignore")[1].ignore.tolist() == [False, True]
    assert len(read_voc(root, "train", difficult="drop")[1]) == 1
    everything = read_voc(root)
    assert [r.path.stem for r in everything] == ["img1", "img2", "img3"]
    assert [r.path.stem for r in read_voc(root, "all")] == ["img1", "img2", "img3"]
    with pytest.raises(DataFormatError, match=r"no split 'val' \(looked for .*ImageSets/Main/val.txt or .*val.txt\); splits there: train"):
        read_voc(root, "val")
    assert everything.report.counts()["empty_image"] == 1


# ---------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_and_well_formed() -> None:
    first = synthetic_dataset(num_images=6, image_size=(160, 224), seed=7)
    again = synthetic_dataset(num_images=6, image_size=(160, 224), seed=7)
    other = synthetic_dataset(num_images=6, image_size=(160, 224), seed=8)
    assert first.class_names == SHAPE_CLASSES
    for index, (a, b) in enumerate(zip(first, again)):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.labels, b.labels)
        image = first.load_image(index)
        assert image.shape == (160, 224, 3) and image.dtype == np.uint8
        np.testing.assert_array_equal(image, again.load_image(index))
        assert 1 <= len(a) <= 6
        sides = np.concatenate([a.boxes[:, 2] - a.boxes[:, 0], a.boxes[:, 3] - a.boxes[:, 1]])
        assert sides.min() >= 24 and sides.max() <= 120
        assert (a.boxes[:, :2] >= 0).all() and (a.boxes[:, 2] <= 224).all() and (a.boxes[:, 3] <= 160).all()
    assert any(not np.array_equal(a.boxes, c.boxes) for a, c in zip(first, other))


def test_synthetic_shapes_are_their_class_colour() -> None:
    dataset = synthetic_dataset(num_images=4, image_size=256, seed=3)
    for index, record in enumerate(dataset):
        image = dataset.load_image(index).astype(np.int64)
        for (x1, y1, x2, y2), label in zip(record.boxes.astype(int), record.labels):
            centre = image[(y1 + y2) // 2 + (y2 - y1) // 4 * (label == 2), (x1 + x2) // 2]
            assert int(np.argmax(centre)) == (2, 1, 0)[label], (SHAPE_CLASSES[label], centre)


def test_synthetic_ground_truth_scores_perfectly() -> None:
    from centernet.evaluation.coco import build_coco_ground_truth, evaluate_coco
    from centernet.data.results import coco_box_rows

    dataset = synthetic_dataset(num_images=8, image_size=192, seed=5)
    coco_gt = build_coco_ground_truth(dataset.ground_truth(), dataset.class_names, dataset.category_ids)
    results = []
    for record in dataset:
        scores = np.ones(len(record))
        results += coco_box_rows(
            record.image_id, record.boxes, scores, record.labels, dataset.category_ids
        )
    assert evaluate_coco(coco_gt, results)["AP"] > 0.99


# ---------------------------------------------------------------- detection and summary


def test_load_dataset_recognises_every_format(data_dir: Path, tmp_path: Path) -> None:
    assert load_dataset(data_dir / "coco_mini", "val").source.endswith("instances_val2017.json")
    assert load_dataset(data_dir / "coco_mini" / "annotations" / "person_keypoints_val2017.json").keypoint_names
    assert load_dataset(data_dir / "raccoon", "val").class_names == ("raccoon",)
    assert load_dataset(data_dir / "kitti_mini").records[0].calib is not None
    assert load_dataset(_yolo_tree(tmp_path / "yolo", ["a", "b"]), "train").class_names == ("a", "b")
    assert load_dataset(_voc_tree(tmp_path / "voc"), "train").class_names == ("cat", "dog")
    train, val = load_dataset("synthetic", "train", num_images=3), load_dataset("synthetic", "val", num_images=3)
    assert not np.array_equal(train[0].boxes, val[0].boxes)
    with pytest.raises(ValueError, match="not a recognised data set folder"):
        load_dataset(tmp_path / "yolo" / "labels")
    with pytest.raises(ValueError, match="no such file"):
        load_dataset(tmp_path / "nothing_here")


def test_check_dataset_summary(data_dir: Path) -> None:
    json_path = data_dir / "coco_mini" / "annotations" / "instances_val2017.json"
    raw = json.loads(json_path.read_text())
    summary = check_dataset(json_path, verify_images=True)
    assert f"Images: {len(raw['images'])}" in summary
    assert f"Objects: {len(raw['annotations'])}" in summary
    person = sum(1 for a in raw["annotations"] if a["category_id"] == 1)
    assert any(line.split() == ["person", str(person)] for line in summary.splitlines())
    crowd = [a for a in raw["annotations"] if a["iscrowd"]]
    assert f"crowd: {len(crowd)}" in summary and f"annotation {crowd[0]['id']}" in summary
    assert "bad_image" not in summary
    assert "Problems: none" in check_dataset("synthetic", "val", num_images=4)


def test_data_sets_pickle_for_loader_workers(data_dir: Path) -> None:
    import pickle

    for dataset in (synthetic_dataset(num_images=2, image_size=96, seed=2), read_voc(data_dir / "raccoon", "val")):
        copy = pickle.loads(pickle.dumps(dataset))
        np.testing.assert_array_equal(copy.load_image(1), dataset.load_image(1))
        np.testing.assert_array_equal(copy[1].boxes, dataset[1].boxes)
