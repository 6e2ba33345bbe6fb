"""KITTI in one place: its 3D object type, its files (labels, results, calib), its camera geometry, its reader.

* ``Objects3D``: the objects of one frame, as one label or result file holds them. Data records,
  the evaluator (``evaluation.kitti``) and prediction results (``engine.results.Results.boxes_3d``)
  all use it.
* Files: ``read_kitti_file`` parses a label (15 columns) or result (16 columns) file,
  ``format_kitti_lines`` / ``write_kitti_results`` write them the way the original's
  ``save_results`` does, ``read_calib`` reads a camera matrix.
* Geometry: ``box_corners`` and ``project_to_image`` (the original's ``compute_box_3d`` and
  ``project_to_image``); the evaluator's bird's-eye footprints are the corners' bottom face.
* ``read_kitti`` reads a data set in KITTI's own layout (``image_2/``, ``label_2/``, ``calib/``),
  no conversion step.

The class rules are the original's ddd data set's: three trained classes; ``Van`` and ``Truck`` are
ignore regions for ``Car``, ``Person_sitting`` for ``Pedestrian``, ``DontCare`` for every class;
``Tram`` and ``Misc`` are kept in the record with label ``-1`` (see ``records``) and skipped by the
encoder. Differences from the original's json conversion: truncation keeps its float value (the
converter truncated it to an int), and frames come straight from the label files.

Units: camera coordinates (x right, y down, z forward) in metres, the location being the bottom
centre of the box; angles in radians; 2D boxes ``(x1, y1, x2, y2)`` in image pixels.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from centernet.data.image_io import image_size
from centernet.data.kitti_fields import check_calib, check_label_values
from centernet.data.records import WHOLE_SET, DataFormatError, DataReport, DetectionDataset, ImageRecord, missing_split_error
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


@dataclass(frozen=True, eq=False)
class Objects3D:
    """The KITTI objects of one frame: what one label or result file holds, one object per line.

    The 3D part is always present. The rest is optional where another holder keeps it: an
    ``ImageRecord`` holds the validated 2D boxes and the calibration itself, a ``Results`` its
    boxes, labels and scores; give them (``dataclasses.replace``) to write or evaluate the objects.
    Every array is stored as float64 (int64 for ``occlusion``), whatever it was given as.

    Attributes:
        dims: ``[N, 3]`` object size ``(h, w, l)``, metres.
        locations: ``[N, 3]`` bottom centre ``(x, y, z)`` in camera coordinates, metres.
        rotation_y: ``[N]`` yaw around the camera y axis.
        alpha: ``[N]`` observation angle (``-10`` in a result line: not provided).
        calib: ``[3, 4]`` float32 camera matrix (KITTI ``P2``) the boxes project with, or ``None``.
        types: KITTI type of each object (``Car``, ``Van``, ``DontCare``...), or ``None``.
        boxes: ``[N, 4]`` 2D boxes ``(x1, y1, x2, y2)``, image pixels, or ``None``.
        truncation: ``[N]`` 0 (inside the image) .. 1 (leaving it); 0 when not given (detections).
        occlusion: ``[N]`` 0 visible, 1 partly, 2 largely occluded, 3 unknown; 0 when not given.
        scores: ``[N]`` detection confidence; 1 when not given (ground truth).
    """

    dims: np.ndarray
    locations: np.ndarray
    rotation_y: np.ndarray
    alpha: np.ndarray
    calib: np.ndarray | None = None
    types: tuple[str, ...] | None = None
    boxes: np.ndarray | None = None
    truncation: np.ndarray | None = None
    occlusion: np.ndarray | None = None
    scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(np.asarray(self.rotation_y).reshape(-1))

        def column(value, width: int | None, default: float | None = None, dtype=np.float64) -> np.ndarray | None:
            if value is None:
                return None if default is None else np.full(n, default, dtype=dtype)
            shape = (n,) if width is None else (n, width)
            return np.asarray(value, dtype=dtype).reshape(shape)

        set_ = object.__setattr__
        set_(self, "dims", column(self.dims, 3))
        set_(self, "locations", column(self.locations, 3))
        set_(self, "rotation_y", column(self.rotation_y, None))
        set_(self, "alpha", column(self.alpha, None))
        set_(self, "calib", None if self.calib is None else np.asarray(self.calib, dtype=np.float32).reshape(3, 4))
        if self.types is not None:
            set_(self, "types", tuple(str(t) for t in self.types))
            if len(self.types) != n:
                raise ValueError(f"{len(self.types)} types for {n} objects")
        set_(self, "boxes", column(self.boxes, 4))
        set_(self, "truncation", column(self.truncation, None, 0.0))
        set_(self, "occlusion", column(self.occlusion, None, 0, np.int64))
        set_(self, "scores", column(self.scores, None, 1.0))

    def __len__(self) -> int:
        return len(self.rotation_y)

    @classmethod
    def empty(cls) -> Objects3D:
        """A frame without objects (an empty result file: evaluated, nothing detected)."""
        return cls(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), np.zeros(0), types=(), boxes=np.zeros((0, 4)))

    @property
    def depth(self) -> np.ndarray:
        """``[N]`` distance along the optical axis (``locations[:, 2]``), metres."""
        return self.locations[:, 2]

    def subset(self, keep: np.ndarray | Sequence[int]) -> Objects3D:
        """The objects selected by a boolean mask ``[N]`` or by indices (in the order given)."""
        index = np.asarray(keep)
        index = np.flatnonzero(index) if index.dtype == bool else index.astype(np.int64).reshape(-1)
        return dataclasses.replace(
            self,
            dims=self.dims[index],
            locations=self.locations[index],
            rotation_y=self.rotation_y[index],
            alpha=self.alpha[index],
            types=None if self.types is None else tuple(self.types[i] for i in index),
            boxes=None if self.boxes is None else self.boxes[index],
            truncation=self.truncation[index],
            occlusion=self.occlusion[index],
            scores=self.scores[index],
        )

    def corners(self) -> np.ndarray:
        """``[N, 8, 3]`` corners of every box (see ``box_corners``), metres."""
        return box_corners(self.dims, self.locations, self.rotation_y)

    def projected_corners(self, calib: np.ndarray | None = None) -> np.ndarray:
        """``[N, 8, 2]`` corners projected into the image (pixels) with ``calib``, else ``self.calib``."""
        calib = self.calib if calib is None else calib
        if calib is None:
            raise ValueError("projecting 3D boxes needs the camera matrix (calib)")
        return project_to_image(self.corners(), calib)

    def footprints(self) -> np.ndarray:
        """``[N, 4, 2]`` bird's-eye-view rectangles: the bottom face's corners in the ``(x, z)`` plane."""
        return self.corners()[:, :4][:, :, [0, 2]]


# ---------------------------------------- Geometry ----------------------------------------


def box_corners(dims: np.ndarray, locations: np.ndarray, rotation_y: np.ndarray, dtype=np.float64) -> np.ndarray:
    """The 8 corners of KITTI 3D boxes (the original's ``compute_box_3d``, for many boxes).

    The length runs along ``(cos ry, 0, -sin ry)`` and the width along ``(sin ry, 0, cos ry)``.

    Args:
        dims: ``[N, 3]`` ``(h, w, l)`` metres; locations: ``[N, 3]`` bottom centres; rotation_y: ``[N]``.
        dtype: Precision of the arithmetic (the original computes in float32).

    Returns:
        ``[N, 8, 3]`` corners: bottom face 0-3, top face 4-7 (y points down, so the top is at ``-h``).
    """
    dims = np.asarray(dims, dtype=dtype).reshape(-1, 3)
    locations = np.asarray(locations, dtype=dtype).reshape(-1, 3)
    rotation_y = np.asarray(rotation_y, dtype=dtype).reshape(-1, 1)
    c, s = np.cos(rotation_y), np.sin(rotation_y)
    h, w, l = dims[:, 0:1], dims[:, 1:2], dims[:, 2:3]
    along = (l / 2) * np.array([1, 1, -1, -1, 1, 1, -1, -1], dtype=dtype)  # [N, 8]
    across = (w / 2) * np.array([1, -1, -1, 1, 1, -1, -1, 1], dtype=dtype)
    up = -h * np.array([0, 0, 0, 0, 1, 1, 1, 1], dtype=dtype)
    x = c * along + s * across + locations[:, 0:1]
    y = up + locations[:, 1:2]
    z = -s * along + c * across + locations[:, 2:3]
    return np.stack([x, y, z], axis=-1)


def project_to_image(points_3d: np.ndarray, calib: np.ndarray) -> np.ndarray:
    """Camera points ``[..., 3]`` projected with the ``[3, 4]`` matrix: ``[..., 2]`` image pixels."""
    points_3d = np.asarray(points_3d)
    homogeneous = np.concatenate([points_3d, np.ones((*points_3d.shape[:-1], 1), dtype=points_3d.dtype)], axis=-1)
    projected = homogeneous @ np.asarray(calib).T
    return projected[..., :2] / projected[..., 2:]


# ---------------------------------------- Files ----------------------------------------


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


def write_kitti_results(folder: str | os.PathLike, frames: Mapping[int | str, Objects3D]) -> Path:
    """Writes a KITTI result folder: one ``NNNNNN.txt`` per frame id, empty when nothing was detected.

    Every frame of ``frames`` gets a file, so every one of them is evaluated. Returns the folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for frame_id, objects in frames.items():
        lines = format_kitti_lines(objects, detections=True)
        (folder / f"{int(frame_id):06d}.txt").write_text("".join(line + "\n" for line in lines))
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
            report.add(
                "unknown_category",
                label_path,
                f"image {image_path.name}: unknown KITTI type {type_name!r}; skipped",
                f"line {number}",
            )
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
        category_ids=tuple(range(1, len(class_names) + 1)),
        report=report,
        source=str(root),
    )
