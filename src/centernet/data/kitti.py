"""KITTI 3D object detection in its own layout (``image_2/``, ``label_2/``, ``calib/``), no conversion step.

The class rules are the original's ddd data set's: three trained classes; ``Van`` and ``Truck`` are
ignore regions for ``Car``, ``Person_sitting`` for ``Pedestrian``, ``DontCare`` for every class;
``Tram`` and ``Misc`` are kept in the record with label ``-1`` (see ``records``) and skipped by the
encoder. Differences from the original's json conversion: truncation keeps its float value (the
converter truncated it to an int), and frames come straight from the label files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from centernet.data.image_io import image_size
from centernet.data.records import DataFormatError, DataReport, DetectionDataset, ImageRecord, Objects3D
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
_RESULT_COLUMNS = 16  # the same plus a score (detection files)


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
                return np.array(values, dtype=np.float32).reshape(3, 4)
            except ValueError as error:
                raise DataFormatError(f"{path} [line {number}]: P2 is not numeric ({error})") from error
    raise DataFormatError(f"{path}: no 'P2:' line")


def _parse_label_file(path: Path) -> list[tuple[int, list[str]]]:
    """``(line number, columns)`` of every non-blank line, with the column count checked."""
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        columns = line.split()
        if not columns:
            continue
        if len(columns) not in (_LABEL_COLUMNS, _RESULT_COLUMNS):
            raise DataFormatError(
                f"{path} [line {number}]: {len(columns)} columns, expected {_LABEL_COLUMNS} "
                "(type truncated occluded alpha x1 y1 x2 y2 h w l x y z rotation_y)"
            )
        rows.append((number, columns))
    return rows


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
    kept: list[tuple[int, list[str], int, bool]] = []
    for number, columns in _parse_label_file(label_path):
        rule = kitti_label(columns[0], class_names)
        if rule is None:
            report.add(
                "unknown_category",
                label_path,
                f"image {image_path.name}: unknown KITTI type {columns[0]!r}; skipped",
                f"line {number}",
            )
            continue
        kept.append((number, columns, *rule))
    try:
        values = np.array([columns[1:_LABEL_COLUMNS] for _, columns, _, _ in kept], dtype=np.float64).reshape(-1, 14)
    except ValueError as error:
        raise DataFormatError(f"{label_path}: non-numeric value in a label line ({error})") from error
    objects_3d = Objects3D(
        dims=values[:, 7:10],
        locations=values[:, 10:13],
        rotation_y=values[:, 13],
        alpha=values[:, 2],
        truncation=values[:, 0],
        occlusion=values[:, 1].astype(np.int64),
        types=tuple(columns[0] for _, columns, _, _ in kept),
    )
    record = ImageRecord.create(
        path=image_path,
        image_id=image_id,
        width=width,
        height=height,
        boxes=values[:, 3:7],
        labels=[label for _, _, label, _ in kept],
        annotation_ids=[number for number, _, _, _ in kept],
        ignore=[ignore for _, _, _, ignore in kept],
        calib=calib,
        objects_3d=objects_3d,
    )
    return validate_record(record, report, label_path, object_kind="line")


def find_kitti_root(path: str | Path) -> Path | None:
    """The folder holding ``image_2/`` and ``label_2/`` (``path`` itself or ``path/training``)."""
    path = Path(path)
    for candidate in (path, path / "training"):
        if (candidate / "image_2").is_dir() and (candidate / "label_2").is_dir():
            return candidate
    return None


def _split_frames(root: Path, base: Path, split: str | None, report: DataReport) -> list[str]:
    frames = sorted(p.stem for p in (base / "label_2").glob("*.txt"))
    if split is None:
        return frames
    for folder in (root, base, base.parent):
        split_file = folder / "ImageSets" / f"{split}.txt"
        if split_file.is_file():
            return [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
    report.add("missing_split", root, f"no ImageSets/{split}.txt; using all {len(frames)} frames")
    return frames


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
            in ``root``, the training folder and its parent; without one every frame is used and
            the report says so. ``None``: every frame.
        frames: Explicit frame ids (``"000001"``), overriding ``split``.
        class_names: Trained classes, a subset of ``KITTI_TYPE_RULES``' targets.

    Raises:
        DataFormatError: A frame without calib or label file, or a label line with the wrong
            number of columns; the message names the file and line.
    """
    root = Path(root)
    base = find_kitti_root(root)
    if base is None:
        raise DataFormatError(f"{root}: not a KITTI folder (expected image_2/ and label_2/, or training/ holding them)")
    report = DataReport()
    frame_ids = list(frames) if frames is not None else _split_frames(root, base, split, report)
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
        category_ids=tuple(range(1, len(class_names) + 1)),
        report=report,
        source=str(root),
    )
