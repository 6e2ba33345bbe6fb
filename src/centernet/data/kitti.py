"""KITTI's files and layout: labels, results, calibration, the class rules and the data set reader.

* Files: ``read_kitti_file`` parses a label (15 columns) or result (16 columns) file,
  ``format_kitti_lines`` / ``write_kitti_results`` write them the way the original's
  ``save_results`` does, ``read_calib`` reads a camera matrix. The objects are
  ``data.objects3d.Objects3D`` (with the box geometry).
* ``read_kitti`` reads a data set in KITTI's own layout (``image_2/``, ``label_2/``, ``calib/``),
  no conversion step.

The class rules are the original's ddd data set's: three trained classes; ``Van`` and ``Truck`` are
ignore regions for ``Car``, ``Person_sitting`` for ``Pedestrian``, ``DontCare`` for every class;
``Tram`` and ``Misc`` are kept in the record with label ``-1`` (see ``records``) and skipped by the
encoder. Differences from the original's json conversion: truncation keeps its float value (the
converter truncated it to an int), and frames come straight from the label files.

Units: camera coordinates (x right, y down, z forward) in metres; angles in radians; 2D boxes
``(x1, y1, x2, y2)`` in image pixels.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from centernet.data.image_io import image_size
from centernet.data.kitti_fields import check_calib, check_label_values
from centernet.data.objects3d import Objects3D
from centernet.data.records import (
    WHOLE_SET,
    DataFormatError,
    DataReport,
    DetectionDataset,
    ImageRecord,
    missing_split_error,
)
from centernet.data.validation import validate_record

KITTI_CLASSES: tuple[str, ...] = ("Pedestrian", "Car", "Cyclist")
#: KITTI type -> (class it counts for, whether it is only an ignore region); ``None`` = no class.
KITTI_TYPE_RULES: dict[str, tuple[str | None, bool]] = {
    "Pedestrian": ("Pedestrian", False),
    "Car": ("Car", False),
    "Cyclist": ("Cyclist", False),
    "Van": ("Car", True),
    "Truck": ("Car", True),
    "Person_sitting": ("Pedestrian", True),
    "Tram": (None, False),
    "Misc": (None, False),
    "DontCare": (None, True),
}
_LABEL_COLUMNS = 15  # type, truncated, occluded, alpha, box x1 y1 x2 y2, h w l, x y z, rotation_y
_RESULT_COLUMNS = 16  # the same plus a score (result files)
_COLUMN_NAMES = "type truncated occluded alpha x1 y1 x2 y2 h w l x y z rotation_y"


def kitti_label(type_name: str, class_names: Sequence[str]) -> tuple[int, bool] | None:
    """Class index and ignore flag of a KITTI type, or ``None`` for a type KITTI does not define.

    A type whose class is not in ``class_names`` gets label ``-1`` and is not an ignore region,
    except ``DontCare``, which ignores every class.
    """
    if type_name not in KITTI_TYPE_RULES:
        return None
    target, ignore = KITTI_TYPE_RULES[type_name]
    if target is None:
        return -1, ignore
    if target not in class_names:
        return -1, False
    return list(class_names).index(target), ignore


def read_calib(path: str | Path) -> np.ndarray:
    """The left colour camera's projection matrix ``P2`` of a KITTI calib file.

    Returns:
        ``float32 [3, 4]`` (the original parses it as float32 too).

    Raises:
        DataFormatError: The file is missing, has no ``P2:`` line, or that line is not 12 numbers.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: calibration file not found (every KITTI frame needs calib/<frame>.txt)")
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.startswith("P2:"):
            values = line.split()[1:]
            if len(values) != 12:
                raise DataFormatError(f"{path} [line {number}]: P2 has {len(values)} values, expected 12")
            try:
                matrix = np.array(values, dtype=np.float32).reshape(3, 4)
            except ValueError as error:
                raise DataFormatError(f"{path} [line {number}]: P2 is not numeric ({error})") from error
            return check_calib(path, f"line {number}", matrix)
    raise DataFormatError(f"{path}: no 'P2:' line")


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------


def read_kitti_file(path: str | os.PathLike, *, detections: bool | None = None) -> Objects3D:
    """Reads one KITTI label file (15 columns) or result file (16 columns, the last is the score).

    Args:
        path: The text file; blank lines are skipped, an empty file is a frame without objects.
        detections: ``True``: every line must have 16 columns; ``False``: 15; ``None``: either,
            line by line (a missing score is 1).

    Raises:
        DataFormatError: Missing file, wrong column count, a non-numeric value or a non-integer
            occlusion; the message names the file and the line.
    """
    return _parse_kitti_file(Path(path), detections)[1]


def _parse_kitti_file(path: Path, detections: bool | None) -> tuple[list[int], Objects3D]:
    """``read_kitti_file`` plus the line number of each object."""
    try:
        text = path.read_text()
    except OSError as error:
        raise DataFormatError(f"{path}: cannot read KITTI file ({error.strerror or error})") from error
    allowed = {True: (_RESULT_COLUMNS,), False: (_LABEL_COLUMNS,), None: (_LABEL_COLUMNS, _RESULT_COLUMNS)}[detections]
    types, rows, numbers = [], [], []
    for number, line in enumerate(text.splitlines(), start=1):
        columns = line.split()
        if not columns:
            continue
        if len(columns) not in allowed:
            expected = " or ".join(str(a) for a in allowed)
            raise DataFormatError(
                f"{path} [line {number}]: {len(columns)} columns, expected {expected} ({_COLUMN_NAMES}"
                f"{' score' if detections is not False else ''})"
            )
        try:
            values = [float(v) for v in columns[1:]]
        except ValueError as error:
            raise DataFormatError(f"{path} [line {number}]: {error}: {line!r}") from None
        check_label_values(path, number, columns[0], values)
        types.append(columns[0])
        numbers.append(number)
        rows.append(values if len(values) == _RESULT_COLUMNS - 1 else [*values, 1.0])
    if not rows:
        return [], Objects3D.empty()
    # After the type: truncation, occlusion, alpha, x1 y1 x2 y2, h w l, x y z, rotation_y, score.
    table = np.asarray(rows, dtype=np.float64)
    return numbers, Objects3D(
        dims=table[:, 7:10],
        locations=table[:, 10:13],
        rotation_y=table[:, 13],
        alpha=table[:, 2],
        types=types,
        boxes=table[:, 3:7],
        truncation=table[:, 0],
        occlusion=table[:, 1].astype(np.int64),
        scores=table[:, 14],
    )


def format_kitti_lines(objects: Objects3D, *, detections: bool = True) -> list[str]:
    """KITTI text lines of ``objects`` in their order: 16 columns with the score, else 15.

    A result line is written exactly as the original's ``save_results`` writes it: ``<Type> 0.0 0``
    and then alpha, x1, y1, x2, y2, h, w, l, x, y, z, rotation_y and the score, each as ``' {:.2f}'``
    (truncation and occlusion are not predicted). A label line writes the object's truncation
    (2 decimals) and occlusion instead and no score.

    Raises:
        ValueError: ``objects`` carry no types or no 2D boxes.
    """
    if objects.types is None or objects.boxes is None:
        raise ValueError("KITTI lines need each object's type and 2D box")
    lines = []
    for i, name in enumerate(objects.types):
        numbers = [objects.alpha[i], *objects.boxes[i], *objects.dims[i], *objects.locations[i], objects.rotation_y[i]]
        if detections:
            numbers.append(objects.scores[i])
            head = f"{name} 0.0 0"
        else:
            head = f"{name} {objects.truncation[i]:.2f} {int(objects.occlusion[i])}"
        lines.append(head + "".join(" {:.2f}".format(v) for v in numbers))
    return lines


def kitti_text(objects: Objects3D) -> str:
    """The text of one KITTI result file: ``format_kitti_lines`` of ``objects``, one per line."""
    return "".join(line + "\n" for line in format_kitti_lines(objects, detections=True))


def write_kitti_results(folder: str | os.PathLike, frames: Mapping[int | str, Objects3D]) -> Path:
    """Writes a KITTI result folder: one ``<frame>.txt`` per frame, empty when nothing was detected.

    An integer frame id names its file ``NNNNNN.txt`` (KITTI's six digits), a string one is the
    file's name as given. Every frame of ``frames`` gets a file, so every one of them is evaluated. Returns the folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for frame_id, objects in frames.items():
        stem = f"{int(frame_id):06d}" if isinstance(frame_id, (int, np.integer)) else str(frame_id)
        try:
            (folder / f"{stem}.txt").write_text(kitti_text(objects))
        except OSError as error:
            raise OSError(f"cannot write {folder / f'{stem}.txt'}: {error.strerror or error}") from error
    return folder


def read_kitti_frame(
    image_path: Path,
    label_path: Path,
    calib_path: Path,
    image_id: int,
    class_names: Sequence[str],
    report: DataReport,
) -> ImageRecord:
    """One KITTI frame as a validated record (objects in label-file order, ids = line numbers)."""
    calib = read_calib(calib_path)
    if not label_path.is_file():
        raise DataFormatError(f"{label_path}: label file not found for image {image_path.name}")
    width, height = image_size(image_path)
    numbers, objects = _parse_kitti_file(label_path, detections=None)
    kept, labels, ignore = [], [], []
    for index, (number, type_name) in enumerate(zip(numbers, objects.types)):
        rule = kitti_label(type_name, class_names)
        if rule is None:
            report.unknown_category(label_path, image_path.name, f"KITTI type {type_name!r}", f"line {number}")
            continue
        kept.append(index)
        labels.append(rule[0])
        ignore.append(rule[1])
    objects = objects.subset(kept)
    record = ImageRecord.create(
        path=image_path,
        image_id=image_id,
        width=width,
        height=height,
        boxes=objects.boxes,
        labels=labels,
        annotation_ids=[numbers[i] for i in kept],
        ignore=ignore,
        calib=calib,
        # The record keeps the (validated) 2D boxes and the calibration itself.
        objects_3d=dataclasses.replace(objects, boxes=None),
    )
    return validate_record(record, report, label_path, object_kind="line")


def find_kitti_root(path: str | Path) -> Path | None:
    """The folder holding ``image_2/`` and ``label_2/`` (``path`` itself or ``path/training``)."""
    path = Path(path)
    for candidate in (path, path / "training"):
        if (candidate / "image_2").is_dir() and (candidate / "label_2").is_dir():
            return candidate
    return None


def _split_frames(root: Path, base: Path, split: str | None) -> list[str]:
    """Frame ids of a split file ``ImageSets/<split>.txt``; every labelled frame for ``None`` / ``"all"``."""
    if split in (None, WHOLE_SET):
        return sorted(p.stem for p in (base / "label_2").glob("*.txt"))
    folders = list(dict.fromkeys((root, base, base.parent)))
    for folder in folders:
        split_file = folder / "ImageSets" / f"{split}.txt"
        if split_file.is_file():
            return [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
    existing = sorted({p.stem for folder in folders for p in (folder / "ImageSets").glob("*.txt")})
    looked_at = " or ".join(str(folder / "ImageSets" / f"{split}.txt") for folder in folders)
    raise missing_split_error(root, split, looked_at, existing)


def read_kitti(
    root: str | Path,
    split: str | None = None,
    frames: Sequence[str] | None = None,
    class_names: Sequence[str] = KITTI_CLASSES,
) -> DetectionDataset:
    """Reads KITTI frames straight from ``image_2/``, ``label_2/`` and ``calib/``.

    Args:
        root: The KITTI folder (holding ``training/``) or the ``training`` folder itself.
        split: Name of a split file ``ImageSets/<split>.txt`` (one frame id per line) looked up
            in ``root``, the training folder and its parent; a split without one is an error
            naming those there are. ``None`` or ``"all"``: every labelled frame.
        frames: Explicit frame ids (``"000001"``), overriding ``split``.
        class_names: Trained classes, a subset of ``KITTI_TYPE_RULES``' targets.

    Raises:
        DataFormatError: A missing split file, a frame without calib or label file, or a label
            line with the wrong number of columns; the message names the file and line.
    """
    root = Path(root)
    base = find_kitti_root(root)
    if base is None:
        raise DataFormatError(f"{root}: not a KITTI folder (expected image_2/ and label_2/, or training/ holding them)")
    report = DataReport()
    frame_ids = list(frames) if frames is not None else _split_frames(root, base, split)
    records = [
        read_kitti_frame(
            base / "image_2" / f"{frame}.png",
            base / "label_2" / f"{frame}.txt",
            base / "calib" / f"{frame}.txt",
            int(frame) if frame.isdigit() else index,
            class_names,
            report,
        )
        for index, frame in enumerate(frame_ids)
    ]
    return DetectionDataset(
        records=records,
        class_names=tuple(class_names),
        report=report,
        source=str(root),
    )
