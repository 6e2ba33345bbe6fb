"""The one internal representation every reader produces: image records, data sets and their problem report.

Conventions shared by all readers:

* ``boxes`` are ``float32 [N, 4]`` ``(x1, y1, x2, y2)`` in pixels of the image *as loaded* (EXIF
  orientation applied), corners exactly as the source wrote them (no ``-1`` shifts).
* ``labels`` are ``int64 [N]`` 0-based contiguous class indices into ``DetectionDataset.class_names``,
  or ``-1`` for an object of no trained class.
* ``ignore`` marks a region that must be neither rewarded nor penalised: for its own class when
  ``label >= 0``, for every class when ``label == -1`` (KITTI ``DontCare``). An object with
  ``label == -1`` and ``ignore == False`` (KITTI ``Tram`` / ``Misc``) is kept only so that object
  rows line up with the annotation file, as in the original, which reserves their target slot.
* Objects keep the order of the annotation file (the original's target rows follow it).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from centernet.data.image_io import load_image

if TYPE_CHECKING:  # the KITTI module builds on this one
    from centernet.data.objects3d import Objects3D

#: What to do with COCO ``iscrowd`` boxes and VOC ``difficult`` boxes: ``"train"`` keeps them as
#: ordinary objects (the original's behaviour), ``"ignore"`` keeps them flagged ``ignore``,
#: ``"drop"`` removes them. The ``crowd`` / ``difficult`` flags are kept in every case but ``"drop"``.
FlagPolicy = Literal["train", "ignore", "drop"]
FLAG_POLICIES: tuple[str, ...] = ("train", "ignore", "drop")


class DataFormatError(ValueError):
    """An annotation or image file that cannot be read; the message names the file (and line / id)."""


#: The split name that asks for every image of a data set, whatever split files it has. A split
#: is never guessed: a name that is not found is an error, and the whole set is used only by this name.
WHOLE_SET = "all"


def missing_split_error(
    source: str | Path, split: str, looked_at: str, existing: list[str], whole_set: bool = True
) -> DataFormatError:
    """The one error for a split that is not there: what was looked at, the splits there are, and
    (where the format has it, ``whole_set``) that ``all`` takes every image."""
    there = f"splits there: {', '.join(existing)}" if existing else "it has no split files"
    whole = f"; split '{WHOLE_SET}' uses every image" if whole_set else ""
    return DataFormatError(f"{source}: no split {split!r} (looked for {looked_at}); {there}{whole}")


@dataclass(frozen=True)
class DataIssue:
    """One problem (or notable fact) found while reading a data set.

    Attributes:
        kind: One of ``ISSUE_KINDS``.
        file: The annotation or image file concerned.
        where: Annotation id, line number or object index inside ``file``; empty for the whole file.
        message: What happened and what was done about it.
    """

    kind: str
    file: str
    where: str
    message: str

    def __str__(self) -> str:
        location = f"{self.file} [{self.where}]" if self.where else self.file
        return f"{location}: {self.message}"


#: Issue kinds, in the order summaries list them.
ISSUE_KINDS: tuple[str, ...] = (
    "unknown_category",  # skipped: the class is not in the data set's class list
    "degenerate_box",  # dropped: zero or negative width / height (after clipping)
    "clipped_box",  # box reached outside the image; clipped to it
    "keypoint_outside",  # a labelled joint outside the image; its visibility set to 0
    "no_visible_keypoints",  # a person without labelled joints (kept, as the original does)
    "crowd",  # COCO iscrowd box (handled by the crowd policy)
    "difficult",  # VOC difficult box (handled by the difficult policy)
    "empty_image",  # no object left: kept as a negative
    "size_mismatch",  # the annotation's image size differs from the image file's
    "truncated_image",  # image decoded despite a missing end marker
    "bad_image",  # missing, undecodable, corrupt, or of another size than annotated: skipped (on_bad_image)
    "link_not_followed",  # a folder walk passed over a link (back into a folder already walked, broken, looping)
)


@dataclass
class DataReport:
    """Every issue met while reading a data set, in reading order."""

    issues: list[DataIssue] = field(default_factory=list)

    def add(self, kind: str, file: str | Path, message: str, where: str | int = "") -> None:
        """Records one issue; ``kind`` must be one of ``ISSUE_KINDS``."""
        if kind not in ISSUE_KINDS:
            raise ValueError(f"unknown issue kind {kind!r}")
        self.issues.append(DataIssue(kind, str(file), str(where), message))

    def unknown_category(self, file: str | Path, image: str, what: str, where: str) -> None:
        """Records an annotation of a class outside the data set's class list (it is skipped)."""
        self.add("unknown_category", file, f"image {image}: unknown {what}; skipped", where)

    def counts(self) -> Counter[str]:
        """Number of issues of each kind."""
        return Counter(issue.kind for issue in self.issues)

    def of_kind(self, kind: str) -> list[DataIssue]:
        """The issues of one kind, in reading order."""
        return [issue for issue in self.issues if issue.kind == kind]


@dataclass(frozen=True)
class ImageRecord:
    """One image and its objects.

    Attributes:
        path: Image file (a virtual name for generated images).
        image_id: Identifier unique in the data set (the COCO image id where there is one).
        width: Image width in pixels, after EXIF orientation.
        height: Image height in pixels, after EXIF orientation.
        boxes: ``float32 [N, 4]`` ``(x1, y1, x2, y2)`` image pixels.
        labels: ``int64 [N]`` class index, ``-1`` for no trained class.
        annotation_ids: ``int64 [N]`` id of each object in its source (COCO id, line or object number).
        crowd: ``bool [N]`` COCO ``iscrowd``.
        difficult: ``bool [N]`` VOC ``difficult``.
        ignore: ``bool [N]`` region to neither reward nor penalise (see module docstring).
        keypoints: ``float32 [N, K, 3]`` ``(x, y, visibility)`` in image pixels, or ``None``.
        calib: ``float32 [3, 4]`` camera projection matrix (KITTI ``P2``), or ``None``.
        objects_3d: KITTI 3D annotations (``kitti.Objects3D`` without boxes and calib, which the
            record holds), or ``None``.
    """

    path: Path
    image_id: int
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    annotation_ids: np.ndarray
    crowd: np.ndarray
    difficult: np.ndarray
    ignore: np.ndarray
    keypoints: np.ndarray | None = None
    calib: np.ndarray | None = None
    objects_3d: Objects3D | None = None

    @classmethod
    def create(
        cls,
        path: str | Path,
        image_id: int,
        width: int,
        height: int,
        boxes: np.ndarray | list,
        labels: np.ndarray | list,
        annotation_ids: np.ndarray | list | None = None,
        crowd: np.ndarray | list | None = None,
        difficult: np.ndarray | list | None = None,
        ignore: np.ndarray | list | None = None,
        keypoints: np.ndarray | list | None = None,
        calib: np.ndarray | list | None = None,
        objects_3d: Objects3D | None = None,
    ) -> ImageRecord:
        """Builds a record with canonical dtypes; absent flags are all false, ids ``0..N-1``.

        ``keypoints`` must be shaped ``[N, K, 3]`` (``[0, K, 3]`` for an image without objects).
        """
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        n = len(boxes)

        def flags(values: np.ndarray | list | None) -> np.ndarray:
            return np.zeros(n, dtype=bool) if values is None else np.asarray(values, dtype=bool).reshape(n)

        return cls(
            path=Path(path),
            image_id=int(image_id),
            width=int(width),
            height=int(height),
            boxes=boxes,
            labels=np.asarray(labels, dtype=np.int64).reshape(n),
            annotation_ids=np.arange(n, dtype=np.int64)
            if annotation_ids is None
            else np.asarray(annotation_ids, dtype=np.int64).reshape(n),
            crowd=flags(crowd),
            difficult=flags(difficult),
            ignore=flags(ignore),
            keypoints=None if keypoints is None else _keypoint_array(keypoints, n),
            calib=None if calib is None else np.asarray(calib, dtype=np.float32).reshape(3, 4),
            objects_3d=objects_3d,
        )

    def __len__(self) -> int:
        return len(self.boxes)

    def annotations(self) -> dict[str, np.ndarray]:
        """The objects as the task encoders take them (``Task.encode``), in image pixels.

        Returns:
            ``boxes [N, 4]`` float32, ``labels [N]`` int64, ``ignore`` / ``crowd`` /
            ``difficult [N]`` bool; ``keypoints [N, K, 3]`` when present; with KITTI annotations
            ``calib [3, 4]``, ``types [N]`` (KITTI type names), ``alpha`` / ``rotation_y [N]`` and
            ``dims`` / ``location [N, 3]`` float64.
        """
        annotations = {
            "boxes": self.boxes,
            "labels": self.labels,
            "ignore": self.ignore,
            "crowd": self.crowd,
            "difficult": self.difficult,
        }
        if self.keypoints is not None:
            annotations["keypoints"] = self.keypoints
        if self.calib is not None:
            annotations["calib"] = self.calib
        if self.objects_3d is not None:
            objects = self.objects_3d
            annotations.update(
                types=np.array(objects.types, dtype=str),
                alpha=objects.alpha,
                rotation_y=objects.rotation_y,
                dims=objects.dims,
                location=objects.locations,
            )
        return annotations

    def subset(self, keep: np.ndarray) -> ImageRecord:
        """The same image with only the objects where the boolean mask ``keep [N]`` is true."""
        keep = np.asarray(keep, dtype=bool)
        return dataclasses.replace(
            self,
            boxes=self.boxes[keep],
            labels=self.labels[keep],
            annotation_ids=self.annotation_ids[keep],
            crowd=self.crowd[keep],
            difficult=self.difficult[keep],
            ignore=self.ignore[keep],
            keypoints=None if self.keypoints is None else self.keypoints[keep],
            objects_3d=None if self.objects_3d is None else self.objects_3d.subset(keep),
        )


def _keypoint_array(keypoints: np.ndarray | list, n: int) -> np.ndarray:
    array = np.asarray(keypoints, dtype=np.float32)
    if array.ndim != 3 or array.shape[0] != n or array.shape[2] != 3:
        raise ValueError(f"keypoints must be shaped [{n}, K, 3], got {array.shape}")
    return array


def _load_from_path(record: ImageRecord) -> np.ndarray:
    return load_image(record.path)


@dataclass
class DetectionDataset:
    """A list of image records with its classes and the report of what reading them found.

    Attributes:
        records: One record per image, in the source's order.
        class_names: Name of each class index.
        category_ids: Source category id of each class index (COCO's sparse 1..90); ``1..C`` when
            not given.
        report: Problems found while reading (clipped / dropped boxes, unknown classes...).
        source: What was read (a file or folder, or ``"synthetic"``).
        keypoint_names: Joint names when the records carry keypoints.
        image_source: Returns the BGR ``uint8 [H, W, 3]`` pixels of a record; loads ``record.path``
            by default, renders generated images for the synthetic set. Picklable, for loader workers.
        label_of_category: Class index of each source category id (the original's ``cat_ids``).
    """

    records: list[ImageRecord]
    class_names: tuple[str, ...]
    category_ids: tuple[int, ...] = ()
    report: DataReport = field(default_factory=DataReport)
    source: str = ""
    keypoint_names: tuple[str, ...] | None = None
    image_source: Callable[[ImageRecord], np.ndarray] = _load_from_path
    label_of_category: dict[int, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.category_ids:
            self.category_ids = tuple(range(1, len(self.class_names) + 1))
        if len(self.class_names) != len(self.category_ids):
            raise ValueError(f"{len(self.class_names)} class names but {len(self.category_ids)} category ids")
        self.label_of_category = {cid: i for i, cid in enumerate(self.category_ids)}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> ImageRecord:
        return self.records[index]

    def __iter__(self) -> Iterator[ImageRecord]:
        return iter(self.records)

    def load_image(self, index: int) -> np.ndarray:
        """BGR ``uint8 [H, W, 3]`` pixels of record ``index``."""
        return self.image_source(self.records[index])

    def category_id_of(self, label: int) -> int:
        """Source category id of a 0-based class index (COCO: ``valid_ids[label]``)."""
        return self.category_ids[label]

    def ground_truth(self) -> list[dict]:
        """Per-image ground truth in the form ``evaluation.coco.build_coco_ground_truth`` takes.

        Crowd and ignore regions become ``crowd`` (COCOeval lets detections match them without
        counting either way); objects of no class are left out.
        """
        images = []
        for record in self.records:
            trained = record.labels >= 0
            image = {
                "image_id": record.image_id,
                "width": record.width,
                "height": record.height,
                "boxes": record.boxes[trained],
                "labels": record.labels[trained],
                "crowd": (record.crowd | record.ignore)[trained],
            }
            if record.keypoints is not None:
                image["keypoints"] = record.keypoints[trained]
            images.append(image)
        return images
