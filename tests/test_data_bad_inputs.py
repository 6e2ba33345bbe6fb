"""Every kind of bad or unusual input: each error or reported issue must name the file concerned."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from centernet.data import DataFormatError, ImageReadError, image_size, load_image, read_coco, read_kitti, read_yolo


def _image(path: Path, width: int = 40, height: int = 30) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((height, width, 3), 100, dtype=np.uint8))
    return path


def _coco_json(tmp_path: Path, annotations: list[dict], keypoints: bool = False) -> Path:
    """A one-image COCO file (image 40x30) with sparse category ids 3 and 7."""
    _image(tmp_path / "images" / "pic.jpg")
    categories = [{"id": 3, "name": "three"}, {"id": 7, "name": "seven"}]
    if keypoints:
        categories = [{"id": 1, "name": "person", "keypoints": ["head", "foot"]}]
    defaults = {"image_id": 1, "category_id": categories[0]["id"], "iscrowd": 0}
    data = {
        "images": [{"id": 1, "file_name": "pic.jpg", "width": 40, "height": 30}],
        "annotations": [{**defaults, **ann} for ann in annotations],
        "categories": categories,
    }
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(data))
    return path


# ---------------------------------------------------------------- images


def test_missing_image_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="nope.jpg: image file not found"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageReadError, match="nope.jpg"):
        image_size(tmp_path / "nope.jpg")


def test_corrupt_image_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.png"
    path.write_bytes(b"\x89PNG not really an image")
    with pytest.raises(ImageReadError, match="corrupt.png: not a decodable image"):
        load_image(path)
    with pytest.raises(ImageReadError, match="corrupt.png"):
        image_size(path)


def test_truncated_jpeg_is_an_error_unless_allowed(tmp_path: Path) -> None:
    full = tmp_path / "full.jpg"
    cv2.imwrite(str(full), np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8))
    data = full.read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ImageReadError, match="truncated.jpg: truncated JPEG"):
        load_image(truncated)
    with pytest.warns(UserWarning, match="truncated.jpg"):
        image = load_image(truncated, allow_truncated=True)
    assert image.shape == (64, 80, 3)
    # Bytes appended after the end marker (some cameras do this) are not truncation.
    padded = tmp_path / "padded.jpg"
    padded.write_bytes(data + b"\x00" * 100)
    np.testing.assert_array_equal(load_image(padded), load_image(full))


def test_grey_rgba_palette_and_16_bit_images_become_bgr_uint8(tmp_path: Path) -> None:
    grey = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10)
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    np.testing.assert_array_equal(load_image(tmp_path / "grey.png"), np.repeat(grey[..., None], 3, axis=2))

    bgra = np.zeros((12, 10, 4), dtype=np.uint8)
    bgra[..., :3] = (10, 20, 30)
    bgra[..., 3] = 0
    cv2.imwrite(str(tmp_path / "rgba.png"), bgra)
    np.testing.assert_array_equal(load_image(tmp_path / "rgba.png"), bgra[..., :3])  # alpha dropped as cv2.imread

    deep = (np.arange(12 * 10 * 3, dtype=np.uint16).reshape(12, 10, 3) * 181).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    loaded = load_image(tmp_path / "deep.png")
    assert loaded.dtype == np.uint8
    np.testing.assert_array_equal(loaded, (deep >> 8).astype(np.uint8))

    palette = Image.fromarray(np.arange(120, dtype=np.uint8).reshape(12, 10) % 4, mode="P")
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9] + [0] * 756)
    palette.save(tmp_path / "palette.png")
    loaded = load_image(tmp_path / "palette.png")
    assert loaded.shape == (12, 10, 3)
    np.testing.assert_array_equal(loaded[0, :4], [[0, 0, 255], [0, 255, 0], [255, 0, 0], [9, 9, 9]])


def test_exif_rotation_is_applied_to_pixels_and_size(tmp_path: Path) -> None:
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:5, :10] = 255  # a white patch in the top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    Image.fromarray(pixels).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    image = load_image(tmp_path / "rotated.jpg")
    assert image.shape == (40, 20, 3)
    assert image_size(tmp_path / "rotated.jpg") == (20, 40)
    assert image[:10, -5:].mean() > 200 and image[-10:, :5].mean() < 50  # top-left went top-right


# ---------------------------------------------------------------- boxes and categories


def test_out_of_image_box_is_clipped_and_reported(tmp_path: Path) -> None:
    json_path = _coco_json(tmp_path, [{"id": 11, "bbox": [-5, 10, 20, 50]}])
    dataset = read_coco(json_path)
    np.testing.assert_array_equal(dataset[0].boxes, [[0, 10, 15, 30]])
    (issue,) = dataset.report.of_kind("clipped_box")
    assert str(json_path) in str(issue) and "annotation 11" in str(issue) and "pic.jpg" in str(issue)


def test_degenerate_box_is_dropped_and_reported(tmp_path: Path) -> None:
    json_path = _coco_json(
        tmp_path,
        [{"id": 12, "bbox": [5, 5, 0, 10]}, {"id": 13, "bbox": [50, 5, 10, 10]}, {"id": 14, "bbox": [1, 1, 4, 4]}],
    )
    dataset = read_coco(json_path)
    assert dataset[0].annotation_ids.tolist() == [14]
    issues = dataset.report.of_kind("degenerate_box")
    assert [issue.where for issue in issues] == ["annotation 12", "annotation 13"]
    assert all(str(json_path) in str(issue) and "pic.jpg" in str(issue) for issue in issues)


def test_unknown_category_id_is_skipped_and_reported(tmp_path: Path) -> None:
    json_path = _coco_json(
        tmp_path,
        [{"id": 21, "bbox": [1, 1, 5, 5], "category_id": 99}, {"id": 22, "bbox": [1, 1, 5, 5], "category_id": 7}],
    )
    dataset = read_coco(json_path)
    assert dataset[0].labels.tolist() == [1]  # id 7 is the second class
    (issue,) = dataset.report.of_kind("unknown_category")
    assert str(json_path) in str(issue) and "annotation 21" in str(issue) and "99" in str(issue)


def test_unknown_yolo_class_and_wrong_column_count(tmp_path: Path) -> None:
    _image(tmp_path / "images" / "train" / "x.png")
    labels = tmp_path / "labels" / "train" / "x.txt"
    labels.parent.mkdir(parents=True)
    labels.write_text("5 0.5 0.5 0.1 0.1\n0 0.5 0.5 0.1 0.1\n")
    yaml_path = tmp_path / "data.yaml"
    yaml_path.write_text("train: images/train\nnames: [only]\n")
    dataset = read_yolo(yaml_path, "train")
    assert len(dataset[0]) == 1
    (issue,) = dataset.report.of_kind("unknown_category")
    assert str(labels) in str(issue) and "line 1" in str(issue)
    labels.write_text("0 0.5 0.5 0.1\n")
    with pytest.raises(DataFormatError, match=r"x\.txt \[line 1\]: 4 columns"):
        read_yolo(yaml_path, "train")


def test_empty_image_is_kept_as_a_negative(tmp_path: Path) -> None:
    json_path = _coco_json(tmp_path, [])
    dataset = read_coco(json_path)
    assert len(dataset) == 1 and len(dataset[0]) == 0 and dataset[0].boxes.shape == (0, 4)
    (issue,) = dataset.report.of_kind("empty_image")
    assert "pic.jpg" in str(issue) and str(json_path) in str(issue)


def test_crowd_policies(tmp_path: Path) -> None:
    json_path = _coco_json(tmp_path, [{"id": 31, "bbox": [1, 1, 9, 9], "iscrowd": 1}, {"id": 32, "bbox": [2, 2, 9, 9]}])
    default = read_coco(json_path)
    assert default[0].crowd.tolist() == [True, False] and not default[0].ignore.any()
    (issue,) = default.report.of_kind("crowd")
    assert "annotation 31" in str(issue) and "pic.jpg" in str(issue)
    assert read_coco(json_path, crowd="ignore")[0].ignore.tolist() == [True, False]
    assert read_coco(json_path, crowd="drop")[0].annotation_ids.tolist() == [32]
    with pytest.raises(ValueError, match="crowd policy"):
        read_coco(json_path, crowd="sometimes")


# ---------------------------------------------------------------- keypoints


def test_keypoints_outside_the_image_become_invisible(tmp_path: Path) -> None:
    json_path = _coco_json(
        tmp_path,
        [{"id": 41, "bbox": [1, 1, 20, 20], "keypoints": [5, 5, 2, 55, 10, 2], "num_keypoints": 2}],
        keypoints=True,
    )
    dataset = read_coco(json_path)
    np.testing.assert_array_equal(dataset[0].keypoints, [[[5, 5, 2], [55, 10, 0]]])
    (issue,) = dataset.report.of_kind("keypoint_outside")
    assert "annotation 41" in str(issue) and "pic.jpg" in str(issue) and "joint 1" in str(issue)


def test_person_without_visible_joints_is_kept_and_reported(tmp_path: Path) -> None:
    json_path = _coco_json(
        tmp_path, [{"id": 42, "bbox": [1, 1, 20, 20], "keypoints": [0] * 6, "num_keypoints": 0}], keypoints=True
    )
    dataset = read_coco(json_path)
    assert len(dataset[0]) == 1
    (issue,) = dataset.report.of_kind("no_visible_keypoints")
    assert "annotation 42" in str(issue) and "pic.jpg" in str(issue)


def test_keypoints_of_the_wrong_length_name_the_annotation(tmp_path: Path) -> None:
    json_path = _coco_json(tmp_path, [{"id": 43, "bbox": [1, 1, 20, 20], "keypoints": [1, 2, 2]}], keypoints=True)
    with pytest.raises(DataFormatError, match=r"annotations.json \[annotation 43\]: 'keypoints' must hold 6"):
        read_coco(json_path)


# ---------------------------------------------------------------- KITTI


def _kitti_copy(data_dir: Path, tmp_path: Path, frame: str) -> Path:
    source = data_dir / "kitti_mini" / "training"
    root = tmp_path / "kitti" / "training"
    for folder, suffix in (("image_2", ".png"), ("label_2", ".txt"), ("calib", ".txt")):
        (root / folder).mkdir(parents=True)
        shutil.copy(source / folder / f"{frame}{suffix}", root / folder)
    return root


def test_kitti_frame_without_calib_names_the_file(data_dir: Path, tmp_path: Path) -> None:
    root = _kitti_copy(data_dir, tmp_path, "000001")
    (root / "calib" / "000001.txt").unlink()
    with pytest.raises(DataFormatError, match=r"calib/000001.txt: calibration file not found"):
        read_kitti(root)


def test_kitti_wrong_column_count_names_file_and_line(data_dir: Path, tmp_path: Path) -> None:
    root = _kitti_copy(data_dir, tmp_path, "000001")
    label = root / "label_2" / "000001.txt"
    lines = label.read_text().splitlines()
    lines[1] = " ".join(lines[1].split()[:-2])
    label.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=r"label_2/000001.txt \[line 2\]: 13 columns, expected 15"):
        read_kitti(root)


def test_kitti_unknown_type_is_skipped_and_reported(data_dir: Path, tmp_path: Path) -> None:
    root = _kitti_copy(data_dir, tmp_path, "000001")
    label = root / "label_2" / "000001.txt"
    lines = label.read_text().splitlines()
    lines[0] = "Spaceship " + lines[0].split(maxsplit=1)[1]
    label.write_text("\n".join(lines) + "\n")
    dataset = read_kitti(root)
    assert dataset[0].annotation_ids.tolist() == list(range(2, len(lines) + 1))
    (issue,) = dataset.report.of_kind("unknown_category")
    assert str(label) in str(issue) and "line 1" in str(issue) and "Spaceship" in str(issue)


def test_kitti_calib_without_p2_names_the_file(data_dir: Path, tmp_path: Path) -> None:
    root = _kitti_copy(data_dir, tmp_path, "000001")
    calib = root / "calib" / "000001.txt"
    calib.write_text("\n".join(line for line in calib.read_text().splitlines() if not line.startswith("P2:")))
    with pytest.raises(DataFormatError, match=r"calib/000001.txt: no 'P2:' line"):
        read_kitti(root)


def test_unreadable_annotation_files_name_the_file(tmp_path: Path) -> None:
    bad_json = tmp_path / "broken.json"
    bad_json.write_text("{ not json")
    with pytest.raises(DataFormatError, match="broken.json: not valid json"):
        read_coco(bad_json)
    bad_yaml = tmp_path / "broken.yaml"
    bad_yaml.write_text("train: images\n")
    with pytest.raises(DataFormatError, match="broken.yaml: a YOLO data yaml needs 'names'"):
        read_yolo(bad_yaml, "train")


def test_check_dataset_lists_undecodable_images(tmp_path: Path) -> None:
    from centernet.data import check_dataset

    json_path = _coco_json(tmp_path, [{"id": 51, "bbox": [1, 1, 5, 5]}])
    (tmp_path / "images" / "pic.jpg").write_bytes(b"\xff\xd8 garbage")
    summary = check_dataset(json_path, verify_images=True)
    assert "bad_image: 1" in summary and "Bad images: 1" in summary
    assert str(tmp_path / "images" / "pic.jpg") in summary
