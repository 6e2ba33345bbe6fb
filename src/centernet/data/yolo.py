"""YOLO txt labels described by an Ultralytics data yaml.

The yaml gives ``path`` (data root; relative to the yaml's folder, default that folder), one entry
per split (``train``, ``val``, ``test``: an image folder, a txt file listing images, or a list of
those, relative to ``path``), ``names`` (a list, or a dict ``{index: name}``) and, for pose data,
``kpt_shape: [K, 2 or 3]``. As in Ultralytics, the labels of ``.../images/.../a.jpg`` are in
``.../labels/.../a.txt``; an image without a label file is a negative example.

Each label line is ``class cx cy w h`` normalised to 0..1 (converted here to ``xyxy`` pixels), or
``class x1 y1 x2 y2 x3 y3 ...`` (a segment polygon, whose extent becomes the box), or for pose
data ``class cx cy w h`` followed by ``K`` joints of ``kpt_shape[1]`` values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from centernet.data.image_io import image_size
from centernet.data.files import walk_files
from centernet.data.records import WHOLE_SET, DataFormatError, DataReport, DetectionDataset, ImageRecord, missing_split_error
from centernet.data.validation import validate_record

#: Keys of an Ultralytics data yaml that are not splits.
_NOT_SPLITS = frozenset({"path", "names", "nc", "kpt_shape", "flip_idx", "download", "yaml_file"})
_IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})


def _found(value: object) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _class_names(yaml_path: Path, names: object) -> tuple[str, ...]:
    expected = "a list of class names or a dict {0: name, 1: name, ...}"
    if isinstance(names, dict):
        numeric = [k for k in names if (isinstance(k, int) and not isinstance(k, bool)) or (isinstance(k, str) and k.isdigit())]
        index = {int(k): k for k in numeric}
        if len(index) != len(names) or sorted(index) != list(range(len(names))):
            raise DataFormatError(f"{yaml_path}: 'names' is {_found(names)}, expected {expected} (keys 0..N-1)")
        names = [names[index[i]] for i in range(len(names))]
    if not isinstance(names, list) or not names:
        raise DataFormatError(f"{yaml_path}: 'names' is {_found(names)}, expected {expected}")
    for index, name in enumerate(names):
        if isinstance(name, (list, dict)) or name is None or (isinstance(name, str) and not name.strip()):
            raise DataFormatError(f"{yaml_path}: 'names' entry {index} is {_found(name)}, expected a class name")
    return tuple(str(n) for n in names)


def _check_spec(yaml_path: Path, spec: dict, splits: list[str]) -> tuple[int, int] | None:
    """The yaml's other fields: ``nc`` agrees with ``names``, ``path`` is a folder, split entries are
    paths (or lists of paths), ``kpt_shape`` is ``[K, 2 or 3]``. Returns the keypoint shape."""
    count = len(_class_names(yaml_path, spec["names"]))
    if "nc" in spec and (isinstance(spec["nc"], bool) or spec["nc"] != count):
        raise DataFormatError(f"{yaml_path}: 'nc' is {_found(spec['nc'])}, expected {count} (the number of 'names')")
    if "path" in spec:
        if not isinstance(spec["path"], str):
            raise DataFormatError(f"{yaml_path}: 'path' is {_found(spec['path'])}, expected the data folder (a string)")
        if not (yaml_path.parent / spec["path"]).is_dir():
            folder = yaml_path.parent / spec["path"]
            raise DataFormatError(f"{yaml_path}: 'path' {spec['path']!r} is no folder ({folder} does not exist)")
    for key in splits:
        entry = spec[key]
        items = entry if isinstance(entry, list) else [entry]
        if not items or not all(isinstance(item, str) and item for item in items):
            raise DataFormatError(
                f"{yaml_path}: '{key}' is {_found(entry)}, expected an image folder, a .txt list of images, or a list of those"
            )
    if "kpt_shape" not in spec:
        return None
    shape = spec["kpt_shape"]
    if (
        not isinstance(shape, list)
        or len(shape) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in shape)
        or shape[0] < 1
        or shape[1] not in (2, 3)
    ):
        raise DataFormatError(f"{yaml_path}: 'kpt_shape' is {_found(shape)}, expected [joints, 2 or 3], e.g. [17, 3]")
    return shape[0], shape[1]


def _split_images(yaml_path: Path, root: Path, entry: object, not_followed: list | None = None) -> list[Path]:
    """Image files of one split entry: folders (searched recursively), list files, or a list of both.

    Folders are walked safely (``data.files.walk_files``: each file once, no link back into a
    folder already walked); ``not_followed`` collects ``(path, reason)`` of the links passed over.
    """
    images: list[Path] = []
    for item in entry if isinstance(entry, list) else [entry]:
        location = root / str(item)
        if location.is_dir():
            walk = walk_files(location, _IMAGE_SUFFIXES, recursive=True)
            images += walk.files
            if not_followed is not None:
                not_followed += walk.not_followed
        elif location.is_file() and location.suffix == ".txt":
            lines = [line.strip() for line in location.read_text().splitlines() if line.strip()]
            images += [(location.parent / line).resolve() for line in lines]
        else:
            raise DataFormatError(
                f"{yaml_path}: split entry {item!r} ({location}) is neither an image folder nor a .txt list"
            )
    return images


def label_path_of(image_path: Path) -> Path:
    """Ultralytics' label file of an image: the last ``images`` folder of its path becomes ``labels``."""
    parts = list(image_path.parts)
    if "images" not in parts:
        return image_path.with_suffix(".txt")
    index = len(parts) - 1 - parts[::-1].index("images")
    parts[index] = "labels"
    return Path(*parts).with_suffix(".txt")


def _parse_labels(label_path: Path, keypoint_shape: tuple[int, int] | None) -> list[tuple[int, list[float]]]:
    """``(line number, numbers)`` of every non-blank line, with the column count checked."""
    rows = []
    pose_columns = None if keypoint_shape is None else 5 + keypoint_shape[0] * keypoint_shape[1]
    for number, line in enumerate(label_path.read_text().splitlines(), start=1):
        columns = line.split()
        if not columns:
            continue
        is_box = len(columns) == 5 if pose_columns is None else len(columns) == pose_columns
        is_polygon = pose_columns is None and len(columns) >= 7 and len(columns) % 2 == 1
        if not (is_box or is_polygon):
            expected = (
                "5 (class cx cy w h) or a polygon"
                if pose_columns is None
                else f"{pose_columns} (class cx cy w h + joints)"
            )
            raise DataFormatError(f"{label_path} [line {number}]: {len(columns)} columns, expected {expected}")
        try:
            rows.append((number, [float(c) for c in columns]))
        except ValueError as error:
            raise DataFormatError(f"{label_path} [line {number}]: non-numeric value ({error})") from error
    return rows


def _snap_rounding(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """``boxes [N, 4]`` xyxy with corners past the image edge by float rounding only put on the edge.

    Normalised text coordinates printed with a few decimals (``0.5 0.5 1.000001 1``) land a few
    1e-4 px outside the image; that is the writer's rounding, not a box reaching outside, so it must
    not be reported as a clipped box. Rounding is an excess of at most 1e-3 px or 1e-6 of the side,
    whichever is larger; anything more is left for ``validate_record`` to clip and report.
    """
    limits = np.array([width, height, width, height], dtype=np.float64)
    tolerance = np.maximum(1e-3, 1e-6 * limits)
    boxes = np.where((boxes < 0) & (boxes >= -tolerance), 0.0, boxes)
    return np.where((boxes > limits) & (boxes <= limits + tolerance), limits, boxes)


def read_yolo(yaml_path: str | Path, split: str = "val") -> DetectionDataset:
    """Reads one split of a YOLO data set.

    Args:
        yaml_path: The Ultralytics data yaml.
        split: Key of the split in the yaml (``train``, ``val``, ``test``); ``"all"``: the images
            of every split entry, in the yaml's order.

    Returns:
        Records in image order (sorted within folders), ``image_id`` = position + 1, boxes in
        ``xyxy`` pixels, ``category_ids`` ``1..C``; with ``kpt_shape``, ``keypoints [N, K, 3]`` in
        pixels (2-value joints get visibility 2 where labelled, 0 at ``(0, 0)``) and
        ``keypoint_names`` ``joint_0..joint_{K-1}``.

    Raises:
        DataFormatError: Unreadable yaml, missing split, or a label line with the wrong number of
            columns; the message names the file and line.
    """
    yaml_path = Path(yaml_path)
    try:
        spec = yaml.safe_load(yaml_path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise DataFormatError(f"{yaml_path}: not a readable data yaml ({error})") from error
    if not isinstance(spec, dict) or "names" not in spec:
        raise DataFormatError(f"{yaml_path}: a YOLO data yaml needs 'names' and the split entries")
    splits = [key for key in spec if key not in _NOT_SPLITS]
    keypoint_shape = _check_spec(yaml_path, spec, [k for k in splits if k in ("train", "val", "test", split) or split == WHOLE_SET])
    if split != WHOLE_SET and split not in splits:
        raise missing_split_error(yaml_path, split, f"a {split!r} entry in {yaml_path}", splits)
    root = yaml_path.parent / str(spec.get("path", "."))
    entries = [spec[key] for key in splits] if split == WHOLE_SET else [spec[split]]
    not_followed: list[tuple[Path, str]] = []
    images = [image for entry in entries for image in _split_images(yaml_path, root, entry, not_followed)]
    class_names = _class_names(yaml_path, spec["names"])
    report = DataReport()
    for link, reason in not_followed:
        report.add("link_not_followed", link, reason)
    records = []
    for index, image_path in enumerate(images):
        width, height = image_size(image_path)
        label_path = label_path_of(image_path)
        rows = _parse_labels(label_path, keypoint_shape) if label_path.is_file() else []
        known = []
        for number, values in rows:
            label = int(values[0]) if values[0].is_integer() else -1
            if not 0 <= label < len(class_names):
                report.unknown_category(label_path, image_path.name, f"class {values[0]:g}", f"line {number}")
                continue
            known.append((number, label, values[1:]))
        scale = np.array([width, height], dtype=np.float64)
        boxes, joints = [], []
        for _, _, values in known:
            if keypoint_shape is None and len(values) > 4:
                points = np.array(values).reshape(-1, 2) * scale
                boxes.append([*points.min(axis=0), *points.max(axis=0)])
                continue
            (cx, cy), (w, h) = np.array(values[0:2]) * scale, np.array(values[2:4]) * scale
            boxes.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
            if keypoint_shape is not None:
                joint = np.array(values[4:]).reshape(keypoint_shape)
                visibility = joint[:, 2] if keypoint_shape[1] == 3 else np.where(joint[:, :2].any(axis=1), 2.0, 0.0)
                joints.append(np.column_stack([joint[:, :2] * scale, visibility]))
        record = ImageRecord.create(
            path=image_path,
            image_id=index + 1,
            width=width,
            height=height,
            boxes=_snap_rounding(np.array(boxes, dtype=np.float64).reshape(-1, 4), width, height),
            labels=[label for _, label, _ in known],
            annotation_ids=[number for number, _, _ in known],
            keypoints=None
            if keypoint_shape is None
            else np.array(joints, dtype=np.float32).reshape(len(known), keypoint_shape[0], 3),
        )
        records.append(validate_record(record, report, label_path, object_kind="line"))
    return DetectionDataset(
        records=records,
        class_names=class_names,
        report=report,
        source=str(yaml_path),
        keypoint_names=None if keypoint_shape is None else tuple(f"joint_{j}" for j in range(keypoint_shape[0])),
    )
