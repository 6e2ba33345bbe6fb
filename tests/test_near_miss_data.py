"""Near-miss annotation files: every field of every format corrupted in turn (issue 22, items 6 and 8).

Each case copies a small part of a real shared data set (raccoon as COCO json, VOC xml and YOLO
txt; the COCO keypoint json; KITTI labels and calibrations) into ``tmp_path``, breaks one field (deletes
it, gives it another type or shape, or a value it cannot have) and runs ``centernet data check`` on it.
The outcome must be one of the two the house rules allow: one ``error:`` line naming the file, the
field and what was found, exit 2; or a counted skip in the summary (exit 0 or 1). Never a traceback:
an exception the CLI does not turn into one line fails the test by propagating.
"""
from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
import yaml

from centernet.cli import main
from tests.helpers import raccoon_as_yolo

DELETE = object()
TAKEN = 3  # images / frames copied per case


def _check(path: Path, capsys, *extra: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["data", "check", str(path), "--no-decode", *extra])
    out, err = capsys.readouterr()
    return code, out, err


def _assert_named_error(code: int, err: str, file_name: str, *words: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert file_name in lines[0], f"{file_name} not named: {lines[0]}"
    for word in words:
        assert word in lines[0], f"{word!r} not in: {lines[0]}"


def _assert_error_or_counted(code: int, out: str, err: str, file_name: str, field: str) -> None:
    """One named error line, or a summary that counts a problem (not 'Problems: none')."""
    if code == 2:
        _assert_named_error(code, err, file_name, field)
    else:
        assert code in (0, 1) and not err.strip(), err
        assert "Problems:" in out and "Problems: none" not in out, out  # the damage is counted and listed


# ----------------------------------------------------------------------------------------- COCO
@pytest.fixture
def coco_case(data_dir: Path, tmp_path: Path):
    """Three raccoon images and their boxes as a COCO json in tmp_path; returns (json data, writer)."""
    source = json.loads((data_dir / "raccoon" / "train.json").read_text())
    images = source["images"][:TAKEN]
    ids = {image["id"] for image in images}
    (tmp_path / "images").mkdir()
    for image in images:
        shutil.copy(data_dir / "raccoon" / "images" / image["file_name"], tmp_path / "images")
    data = {
        "images": images,
        "annotations": [a for a in source["annotations"] if a["image_id"] in ids],
        "categories": source["categories"],
    }
    path = tmp_path / "train.json"

    def write(edited: dict) -> Path:
        path.write_text(json.dumps(edited))
        return path

    return data, write


WRONG_VALUES = {"text": "x", "list": [1, 2], "object": {"a": 1}, "null": None, "negative": -5, "fraction": 2.5, "bool": True}
COCO_FIELDS = {
    "images": ["id", "file_name", "width", "height"],
    "annotations": ["id", "image_id", "category_id", "bbox", "iscrowd"],
    "categories": ["id", "name"],
}
# Values that are valid for a field (so not a corruption of it).
# (An annotation's own id only names it in messages: any value is accepted.)
COCO_VALID = {
    ("images", "id", "text"), ("images", "id", "negative"),
    *(("annotations", "id", kind) for kind in [DELETE, *WRONG_VALUES]),
    ("annotations", "iscrowd", DELETE), ("annotations", "iscrowd", "bool"),
    ("images", "width", DELETE), ("images", "height", DELETE),
    ("categories", "id", "negative"), ("categories", "name", "text"),
}


def _coco_cases():
    for section, fields in COCO_FIELDS.items():
        for field in fields:
            for kind in [DELETE, *WRONG_VALUES]:
                if (section, field, kind) not in COCO_VALID:
                    yield pytest.param(section, field, kind, id=f"{section}-{field}-{'delete' if kind is DELETE else kind}")


@pytest.mark.parametrize("section, field, kind", list(_coco_cases()))
def test_each_coco_field_corrupted_in_turn(section, field, kind, coco_case, capsys) -> None:
    data, write = coco_case
    edited = copy.deepcopy(data)
    entry = edited[section][0]
    if kind is DELETE:
        del entry[field]
    else:
        entry[field] = WRONG_VALUES[kind]
    code, out, err = _check(write(edited), capsys)
    _assert_error_or_counted(code, out, err, "train.json", field)


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda d: d["categories"].append(dict(d["categories"][0], name="other")), ("duplicate category id",)),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), ("bbox",)),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, "w", 4]), ("bbox",)),
        (lambda d: d["annotations"][0].update(bbox=[[1, 2], [3, 4]]), ("bbox",)),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, float("nan"), 4]), ("bbox",)),
        (lambda d: d["annotations"][0].update(image_id=10**6), ("image_id",)),
        (lambda d: d.update(images={"a": 1}), ("images",)),
        (lambda d: d.update(annotations=None), ("annotations",)),
        (lambda d: d.pop("categories"), ("categories",)),
        (lambda d: d["categories"].clear(), ("categories",)),
        (lambda d: d["images"].append(7), ("images[",)),
        (lambda d: d["annotations"].append("x"), ("annotations[",)),
        (lambda d: d["categories"].append([1]), ("categor",)),
    ],
    ids=["duplicate-category-id", "bbox-3", "bbox-text", "bbox-nested", "bbox-nan", "image-id-unknown", "images-dict",
         "annotations-null", "categories-missing", "categories-empty", "image-entry-int", "annotation-entry-str", "category-entry-list"],
)
def test_coco_shapes_and_duplicates_name_the_file_and_field(edit, words, coco_case, capsys) -> None:
    data, write = coco_case
    edited = copy.deepcopy(data)
    edit(edited)
    code, out, err = _check(write(edited), capsys)
    if words == ("bbox",) and "nan" in json.dumps(edited["annotations"][0]).lower():
        _assert_error_or_counted(code, out, err, "train.json", "bbox")
    else:
        _assert_named_error(code, err, "train.json", *words)


@pytest.fixture
def keypoint_case(data_dir: Path, tmp_path: Path):
    source = json.loads((data_dir / "coco_mini" / "annotations" / "person_keypoints_val2017.json").read_text())
    images = source["images"][:2]
    ids = {image["id"] for image in images}
    (tmp_path / "val2017").mkdir()
    (tmp_path / "annotations").mkdir()
    for image in images:
        shutil.copy(data_dir / "coco_mini" / "val2017" / image["file_name"], tmp_path / "val2017")
    data = {"images": images, "annotations": [a for a in source["annotations"] if a["image_id"] in ids], "categories": source["categories"]}
    path = tmp_path / "annotations" / "person_keypoints_val2017.json"

    def write(edited: dict) -> Path:
        path.write_text(json.dumps(edited))
        return path

    return data, write


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda d: d["annotations"][0].pop("keypoints"), "keypoints"),
        (lambda d: d["annotations"][0].update(keypoints="x"), "keypoints"),
        (lambda d: d["annotations"][0].update(keypoints=[1, 2, 3]), "keypoints"),
        (lambda d: d["annotations"][0].update(keypoints=["a"] * 51), "keypoints"),
        (lambda d: d["annotations"][0].update(keypoints=[[0, 0, 0]] * 17), "keypoints"),
        (lambda d: d["categories"][0].update(keypoints="nose"), "keypoints"),
        (lambda d: d["categories"][0].update(keypoints=[1, 2]), "keypoints"),
    ],
    ids=["delete", "text", "short", "strings", "nested", "category-names-text", "category-names-short"],
)
def test_each_coco_keypoint_field_corrupted_in_turn(edit, field, keypoint_case, capsys) -> None:
    data, write = keypoint_case
    edited = copy.deepcopy(data)
    edit(edited)
    code, out, err = _check(write(edited), capsys)
    _assert_named_error(code, err, "person_keypoints_val2017.json", field)


# ----------------------------------------------------------------------------------------- VOC
@pytest.fixture
def voc_case(data_dir: Path, tmp_path: Path) -> Path:
    root = tmp_path / "voc"
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    for stem in ("raccoon-1", "raccoon-10", "raccoon-100")[:TAKEN]:
        shutil.copy(data_dir / "raccoon" / "annotations" / f"{stem}.xml", root / "Annotations")
        shutil.copy(data_dir / "raccoon" / "images" / f"{stem}.jpg", root / "JPEGImages")
    return root


VOC_EDITS = {
    "name-missing": ("object/name", DELETE),
    "name-empty": ("object/name", ""),
    "bndbox-missing": ("object/bndbox", DELETE),
    "xmin-missing": ("object/bndbox/xmin", DELETE),
    "xmin-text": ("object/bndbox/xmin", "left"),
    "xmin-empty": ("object/bndbox/xmin", ""),
    "ymax-list": ("object/bndbox/ymax", "[1, 2]"),
    "xmax-nan": ("object/bndbox/xmax", "nan"),
    "xmax-inf": ("object/bndbox/xmax", "inf"),
    "difficult-text": ("object/difficult", "maybe"),
    "width-text": ("size/width", "wide"),
    "height-negative": ("size/height", "-3"),
}


@pytest.mark.parametrize("case", list(VOC_EDITS))
def test_each_voc_element_corrupted_in_turn(case: str, voc_case: Path, capsys) -> None:
    where, value = VOC_EDITS[case]
    xml_path = voc_case / "Annotations" / "raccoon-1.xml"
    tree = ElementTree.parse(xml_path)
    parent_path, _, tag = where.rpartition("/")
    parent = tree.getroot().find(parent_path) if parent_path else tree.getroot()
    element = parent.find(tag)
    if element is None:
        element = ElementTree.SubElement(parent, tag)
    if value is DELETE:
        parent.remove(element)
    else:
        element.text = value
    tree.write(xml_path)
    code, out, err = _check(voc_case, capsys)
    _assert_error_or_counted(code, out, err, "raccoon-1.xml", tag)


def test_a_voc_file_that_is_not_an_annotation_is_named(voc_case: Path, capsys) -> None:
    (voc_case / "Annotations" / "raccoon-1.xml").write_text("<html><body>not VOC</body></html>")
    code, out, err = _check(voc_case, capsys)
    _assert_named_error(code, err, "raccoon-1.xml", "annotation")


# ----------------------------------------------------------------------------------------- YOLO
@pytest.fixture
def yolo_case(data_dir: Path, tmp_path: Path):
    """Three raccoon images with YOLO labels converted from the COCO json, and their data yaml."""
    root = raccoon_as_yolo(data_dir / "raccoon", tmp_path / "yolo", TAKEN)
    spec = {"path": ".", "train": "images/train", "val": "images/train", "names": ["raccoon"]}
    yaml_path = root / "data.yaml"

    def write(edited: dict) -> Path:
        yaml_path.write_text(yaml.safe_dump(edited))
        return yaml_path

    write(spec)
    return root, spec, write


YOLO_COLUMNS = ["class", "cx", "cy", "w", "h"]
YOLO_WRONG = {"text": "a", "nan": "nan", "inf": "inf", "negative": "-0.5", "fraction": "0.5", "huge": "1e30"}
YOLO_VALID = {("cx", "fraction"), ("cy", "fraction"), ("w", "fraction"), ("h", "fraction")}


@pytest.mark.parametrize(
    "column, kind",
    [(c, k) for c in range(5) for k in YOLO_WRONG if (YOLO_COLUMNS[c], k) not in YOLO_VALID],
    ids=lambda v: YOLO_COLUMNS[v] if isinstance(v, int) else v,
)
def test_each_yolo_label_column_corrupted_in_turn(column: int, kind: str, yolo_case, capsys) -> None:
    root, _, _ = yolo_case
    label = sorted((root / "labels" / "train").glob("*.txt"))[0]
    lines = label.read_text().splitlines()
    columns = lines[0].split()
    columns[column] = YOLO_WRONG[kind]
    label.write_text("\n".join([" ".join(columns), *lines[1:]]) + "\n")
    code, out, err = _check(root / "data.yaml", capsys, "--split", "train")
    _assert_error_or_counted(code, out, err, label.name, "line 1")


@pytest.mark.parametrize("columns", [4, 6, 8], ids=lambda n: f"{n}-columns")
def test_yolo_lines_of_another_width_name_the_line(columns: int, yolo_case, capsys) -> None:
    root, _, _ = yolo_case
    label = sorted((root / "labels" / "train").glob("*.txt"))[0]
    label.write_text(" ".join(["0"] + ["0.5"] * (columns - 1)) + "\n")
    code, out, err = _check(root / "data.yaml", capsys, "--split", "train")
    _assert_named_error(code, err, label.name, "line 1", "columns")


YAML_EDITS = {
    "names-missing": ("names", DELETE),
    "names-text": ("names", "raccoon"),
    "names-number": ("names", 3),
    "names-null": ("names", None),
    "names-empty": ("names", []),
    "names-dict-gap": ("names", {1: "raccoon"}),
    "names-dict-text-keys": ("names", {"a": "raccoon"}),
    "names-nested": ("names", [["raccoon"]]),
    "nc-disagrees": ("nc", 2),
    "nc-text": ("nc", "one"),
    "path-list": ("path", ["a", "b"]),
    "path-number": ("path", 5),
    "path-missing-folder": ("path", "nowhere"),
    "train-null": ("train", None),
    "train-number": ("train", 7),
    "train-dict": ("train", {"a": 1}),
    "train-nested-list": ("train", [["images/train"]]),
    "kpt-shape-text": ("kpt_shape", "17,3"),
    "kpt-shape-one": ("kpt_shape", [17]),
    "kpt-shape-width": ("kpt_shape", [17, 4]),
    "kpt-shape-zero": ("kpt_shape", [0, 3]),
}


@pytest.mark.parametrize("case", list(YAML_EDITS))
def test_each_data_yaml_field_corrupted_in_turn(case: str, yolo_case, capsys) -> None:
    root, spec, write = yolo_case
    field, value = YAML_EDITS[case]
    edited = dict(spec)
    if value is DELETE:
        del edited[field]
    else:
        edited[field] = value
    code, out, err = _check(write(edited), capsys, "--split", "train")
    _assert_named_error(code, err, "data.yaml", field)


def test_a_data_yaml_that_is_not_a_mapping_is_named(yolo_case, capsys) -> None:
    root, _, _ = yolo_case
    (root / "data.yaml").write_text("- a\n- b\n")
    code, out, err = _check(root / "data.yaml", capsys)
    _assert_named_error(code, err, "data.yaml", "names")


# ----------------------------------------------------------------------------------------- KITTI
@pytest.fixture
def kitti_case(data_dir: Path, tmp_path: Path) -> Path:
    root = tmp_path / "kitti" / "training"
    for folder in ("image_2", "label_2", "calib"):
        (root / folder).mkdir(parents=True)
    for frame in ("000000", "000001", "000002")[:TAKEN]:
        shutil.copy(data_dir / "kitti_mini" / "training" / "image_2" / f"{frame}.png", root / "image_2")
        for folder in ("label_2", "calib"):
            shutil.copy(data_dir / "kitti_mini" / "training" / folder / f"{frame}.txt", root / folder)
    return root.parent


KITTI_COLUMNS = "type truncated occluded alpha x1 y1 x2 y2 h w l x y z rotation_y".split()
KITTI_WRONG = {"text": "abc", "nan": "nan", "inf": "inf", "fraction": "0.5", "negative": "-7"}
KITTI_VALID = {
    (c, k) for c in ("alpha", "x", "y", "z", "rotation_y", "truncated") for k in ("fraction", "negative")
} | {(c, "fraction") for c in ("x1", "y1", "x2", "y2", "h", "w", "l")} | {("type", "fraction"), ("type", "negative")}


@pytest.mark.parametrize(
    "column, kind",
    [(c, k) for c in range(15) for k in KITTI_WRONG if (KITTI_COLUMNS[c], k) not in KITTI_VALID],
    ids=lambda v: KITTI_COLUMNS[v] if isinstance(v, int) else v,
)
def test_each_kitti_label_column_corrupted_in_turn(column: int, kind: str, kitti_case: Path, capsys) -> None:
    label = kitti_case / "training" / "label_2" / "000000.txt"
    lines = label.read_text().splitlines()
    columns = lines[0].split()
    columns[column] = KITTI_WRONG[kind]
    label.write_text("\n".join([" ".join(columns), *lines[1:]]) + "\n")
    code, out, err = _check(kitti_case, capsys)
    _assert_error_or_counted(code, out, err, "000000.txt", "line 1")


KITTI_CALIB_EDITS = {
    "p2-short": lambda text: text.replace("P2:", "P2: 1", 1).rsplit(" ", 2)[0],
    "p2-text": lambda text: text.replace("P2: ", "P2: abc ", 1).replace(" abc 7", " abc", 1),
    "p2-missing": lambda text: "\n".join(line for line in text.splitlines() if not line.startswith("P2:")),
    "p2-nan": lambda text: "\n".join(
        "P2: " + " ".join(["nan"] * 12) if line.startswith("P2:") else line for line in text.splitlines()
    ),
    "p2-zero-focal": lambda text: "\n".join(
        "P2: " + " ".join(["0"] * 12) if line.startswith("P2:") else line for line in text.splitlines()
    ),
    "empty": lambda text: "",
}


@pytest.mark.parametrize("case", list(KITTI_CALIB_EDITS))
def test_each_kitti_calib_corruption_is_named(case: str, kitti_case: Path, capsys) -> None:
    calib = kitti_case / "training" / "calib" / "000000.txt"
    calib.write_text(KITTI_CALIB_EDITS[case](calib.read_text()))
    code, out, err = _check(kitti_case, capsys)
    _assert_named_error(code, err, "000000.txt", "P2")


@pytest.fixture
def kitti_json_case(reference_dir: Path, data_dir: Path, tmp_path: Path):
    """The original's converted KITTI json (``calib`` per image, 3D fields per annotation) of real frames."""
    data = json.loads((reference_dir / "e2e" / "annotations" / "ddd.json").read_text())
    (tmp_path / "training" / "image_2").mkdir(parents=True)
    for image in data["images"]:
        shutil.copy(data_dir / "kitti_mini" / "training" / "image_2" / image["file_name"], tmp_path / "training" / "image_2")
    path = tmp_path / "kitti_val.json"

    def write(edited: dict) -> Path:
        path.write_text(json.dumps(edited))
        return path

    return data, write


KITTI_JSON_FIELDS = {"dim": "annotations", "location": "annotations", "rotation_y": "annotations", "alpha": "annotations",
                     "truncated": "annotations", "occluded": "annotations", "calib": "images"}


@pytest.mark.parametrize("field", list(KITTI_JSON_FIELDS))
@pytest.mark.parametrize("kind", [DELETE, "text", "list", "nested", "nan"], ids=lambda k: "delete" if k is DELETE else k)
def test_each_field_of_a_converted_kitti_json_corrupted_in_turn(field, kind, kitti_json_case, capsys) -> None:
    data, write = kitti_json_case
    edited = copy.deepcopy(data)
    entry = edited[KITTI_JSON_FIELDS[field]][0]
    if kind is DELETE:
        if field in ("truncated", "occluded"):
            return  # optional: 0 when absent
        del entry[field]
    else:
        entry[field] = {"text": "x", "list": [1, 2], "nested": [[1]], "nan": float("nan")}[kind]
    code, out, err = _check(write(edited), capsys)
    _assert_named_error(code, err, "kitti_val.json", field)


# ----------------------------------------------------------------------------------------- the real CLI
def test_a_sample_of_near_misses_through_the_installed_cli(coco_case) -> None:
    """The same one line and exit 2 from the ``centernet`` process itself (no traceback on stderr)."""
    data, write = coco_case
    edited = copy.deepcopy(data)
    edited["categories"].append(dict(edited["categories"][0], name="other"))
    coco = write(edited)
    for path in (coco,):
        done = subprocess.run(
            [sys.executable, "-m", "centernet.cli", "data", "check", str(path), "--no-decode"],
            capture_output=True, text=True, timeout=120,
        )
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), done.stderr
        assert path.name in lines[0] and "Traceback" not in done.stderr
