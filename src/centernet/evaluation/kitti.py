"""KITTI 3D object evaluation, numerically faithful to the evaluator the original CenterNet runs.

The original calls the prebuilt ``evaluate_object_3d_offline`` binary (the KITTI devkit's
``evaluate_object.cpp`` with BEV/3D added). This module reproduces its numbers in float64 numpy:

- frames are the result files; a ground-truth frame without a result file is not evaluated;
- per class, metric (``bbox``, ``aos``, ``bev``, ``3d``) and difficulty (easy, moderate, hard)
  it returns the 41-value interpolated precision (or orientation-similarity) array;
- AP11 (mean of entries 0, 4, ..., 40; what the binary prints and CenterNet reports) and AP40
  (mean of entries 1..40; the official KITTI metric since 2019) are derived from that array;
- a class/metric the binary would not evaluate is ``None``.

Two passes per class, metric and difficulty, both greedy over each frame's ground truth in file
order: pass 1 takes the highest-scoring overlapping detection and collects the scores of true
positives, from which at most 41 score thresholds are chosen; pass 2 takes, at each threshold,
the best-overlapping detection and counts TP / FP. Both passes are vectorised across frames (the
i-th ground truth of every frame is matched in the same step) and, in pass 2, across thresholds.

Frames are ``data.kitti.Objects3D`` (with types and 2D boxes), files are read with
``data.kitti.read_kitti_file`` and the bird's-eye rectangles are ``Objects3D.footprints``.

Units: 2D boxes in pixels of the image, 3D dimensions and locations in metres in the camera frame
(x right, y down, z forward); ``location`` is the bottom centre of the box.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from centernet.data.kitti import read_kitti_file
from centernet.data.objects3d import Objects3D
from centernet.evaluation.kitti_matching import NUM_SAMPLE_POINTS, count_at_least, greedy_match, score_thresholds
from centernet.evaluation.kitti_overlaps import PairOverlaps, frame_overlaps, rotated_rectangle_intersection

EVALUATED_CLASSES = ("car", "pedestrian", "cyclist")  # lower case, in the order the binary reports them
METRICS = ("bbox", "aos", "bev", "3d")
DIFFICULTIES = ("easy", "moderate", "hard")

# Per difficulty (easy, moderate, hard), applied to ground truth. An object is ignored at a level
# when its occlusion or truncation is strictly above the limit or its height strictly below it.
_MIN_HEIGHT_PX = (40, 25, 25)
_MAX_OCCLUSION = (0, 1, 2)
_MAX_TRUNCATION = (0.15, 0.30, 0.50)

# Ground truth of the neighbouring class is ignored rather than "other": detecting it is no error.
NEIGHBOUR_CLASSES = {"car": "van", "pedestrian": "person_sitting"}
_DONT_CARE = "dontcare"

IouThresholds = Mapping[str, Mapping[str, float]]
"""Class name -> {"bbox": iou, "bev": iou, "3d": iou}; ``aos`` uses the ``bbox`` threshold."""

IOU_THRESHOLDS: dict[str, IouThresholds] = {
    # The binary CenterNet ships: BEV / 3D at 0.5 (Car) and 0.25 (Pedestrian, Cyclist).
    "original": {
        "car": {"bbox": 0.7, "bev": 0.5, "3d": 0.5},
        "pedestrian": {"bbox": 0.5, "bev": 0.25, "3d": 0.25},
        "cyclist": {"bbox": 0.5, "bev": 0.25, "3d": 0.25},
    },
    # The official KITTI devkit: the 2D thresholds for every metric.
    "official": {
        "car": {"bbox": 0.7, "bev": 0.7, "3d": 0.7},
        "pedestrian": {"bbox": 0.5, "bev": 0.5, "3d": 0.5},
        "cyclist": {"bbox": 0.5, "bev": 0.5, "3d": 0.5},
    },
}

# Placeholder values that mean "not provided" in a detection line.
_NO_ALPHA = -10.0
_NO_LOCATION = -1000.0

# Roles of ground truth and detections for one class and difficulty; the ignored detections are
# the "small" ones (shorter than the level's minimum height, whatever their class).
_VALID, _IGNORED, _OTHER = 0, 1, -1


def list_result_frames(det_dir: str | os.PathLike) -> list[int]:
    """Frame ids of a result folder: one per ``<digits>.txt`` file, sorted.

    The binary also turns any other entry with a name of 10+ characters into a (usually bogus)
    frame id; here such entries are ignored.
    """
    return sorted(
        int(p.stem) for p in Path(det_dir).iterdir() if p.suffix == ".txt" and p.stem.isdigit() and p.is_file()
    )


@dataclass(frozen=True)
class KittiResult:
    """Output of the KITTI evaluation.

    Attributes:
        precision: class -> metric -> [3, 41] float64 array (rows easy, moderate, hard) of
            interpolated precision, or orientation similarity for ``aos``; ``None`` where the
            class/metric was not evaluated (no such output from the binary).
        num_ground_truth: class -> (easy, moderate, hard) counts of non-ignored ground truth.
        num_frames: number of evaluated frames.
        iou_thresholds: class -> {"bbox", "bev", "3d"} overlaps used.
    """

    precision: Mapping[str, Mapping[str, np.ndarray | None]]
    num_ground_truth: Mapping[str, tuple[int, int, int]]
    num_frames: int
    iou_thresholds: IouThresholds = field(default_factory=dict)

    def ap11(self, class_name: str, metric: str) -> np.ndarray | None:
        """[3] AP in percent from the 11 points 0, 0.1, ..., 1 (what the original reports)."""
        precision = self.precision[class_name][metric]
        return None if precision is None else 100.0 * precision[:, 0::4].mean(axis=1)

    def ap40(self, class_name: str, metric: str) -> np.ndarray | None:
        """[3] AP|R40 in percent (points 1/40 ... 1; the official KITTI metric since 2019)."""
        precision = self.precision[class_name][metric]
        return None if precision is None else 100.0 * precision[:, 1:].mean(axis=1)

    def as_dict(self) -> dict[str, float]:
        """Flat ``{"car/3d/moderate/ap40": value, ...}`` of the evaluated entries, for logging."""
        flat = {}
        for class_name, metrics in self.precision.items():
            for metric in metrics:
                for kind, ap in (("ap11", self.ap11(class_name, metric)), ("ap40", self.ap40(class_name, metric))):
                    if ap is not None:
                        for difficulty, value in zip(DIFFICULTIES, ap):
                            flat[f"{class_name}/{metric}/{difficulty}/{kind}"] = float(value)
        return flat

    def format_table(self) -> str:
        """Human-readable table: one row per class and metric, AP11 and AP40 for E / M / H."""
        header = (
            f"{'class':<12}{'metric':<8}{'AP11 easy':>10}{'mod':>8}{'hard':>8}{'AP40 easy':>12}{'mod':>8}{'hard':>8}"
        )
        rows = [f"KITTI evaluation: {self.num_frames} frames", header, "-" * len(header)]
        for class_name, metrics in self.precision.items():
            thresholds = self.iou_thresholds.get(class_name, {})
            for metric in metrics:
                ap11, ap40 = self.ap11(class_name, metric), self.ap40(class_name, metric)
                iou = thresholds.get("bbox" if metric == "aos" else metric)
                label = metric if iou is None else f"{metric}@{iou:g}"
                if ap11 is None:
                    rows.append(f"{class_name:<12}{label:<8}{'not evaluated':>30}")
                    continue
                rows.append(
                    f"{class_name:<12}{label:<8}{ap11[0]:>10.2f}{ap11[1]:>8.2f}{ap11[2]:>8.2f}"
                    f"{ap40[0]:>12.2f}{ap40[1]:>8.2f}{ap40[2]:>8.2f}"
                )
        return "\n".join(rows)


def evaluate_kitti(
    gt_dir: str | os.PathLike,
    det_dir: str | os.PathLike,
    *,
    iou_thresholds: Literal["original", "official"] | IouThresholds = "original",
    classes: Sequence[str] = EVALUATED_CLASSES,
) -> KittiResult:
    """Evaluates a KITTI result folder against a label folder, as the original's binary does.

    Only frames with a result file in ``det_dir`` are evaluated (an empty file = no detections);
    their label files must exist in ``gt_dir``.

    Args:
        gt_dir: folder of ``NNNNNN.txt`` label files (15 columns).
        det_dir: folder of ``NNNNNN.txt`` result files (16 columns).
        iou_thresholds: ``"original"`` (the binary: BEV/3D at 0.5/0.25/0.25), ``"official"``
            (0.7/0.5/0.5 everywhere) or a mapping class -> {"bbox", "bev", "3d"} -> overlap.
        classes: lower-case class names to evaluate; each needs thresholds.

    Raises:
        FileNotFoundError: a result file has no label file.
        ValueError: a malformed line (the message names file and line).
    """
    gt_dir, det_dir = Path(gt_dir), Path(det_dir)
    frame_ids = list_result_frames(det_dir)
    ground_truth, detections = [], []
    for frame_id in frame_ids:
        name = f"{frame_id:06d}.txt"
        if not (gt_dir / name).is_file():
            raise FileNotFoundError(f"result file {det_dir / name} has no ground truth {gt_dir / name}")
        ground_truth.append(read_kitti_file(gt_dir / name, detections=False))
        detections.append(read_kitti_file(det_dir / name, detections=True))
    return evaluate_kitti_objects(ground_truth, detections, iou_thresholds=iou_thresholds, classes=classes)


@dataclass
class _Flat:
    """All frames' objects concatenated, frame-major and in file order within a frame."""

    frame: np.ndarray  # [N] int
    type_codes: np.ndarray  # [N] int index into ``type_names``
    type_names: dict[str, int]  # lower-case name -> code
    objects: Objects3D

    def is_type(self, name: str) -> np.ndarray:
        """[N] bool: objects of type ``name`` (lower case)."""
        return self.type_codes == self.type_names.get(name, -1)

    @classmethod
    def concatenate(cls, frames: Sequence[Objects3D], role: str) -> _Flat:
        for index, objects in enumerate(frames):
            if objects.types is None or objects.boxes is None:
                raise ValueError(f"{role} frame {index}: KITTI evaluation needs each object's type and 2D box")
        frame = np.repeat(np.arange(len(frames)), [len(f) for f in frames]).astype(np.int64)
        names = [t for f in frames for t in f.types]

        def stacked(name: str, shape: tuple[int, ...], dtype=np.float64) -> np.ndarray:
            return np.concatenate([np.zeros(shape, dtype)] + [getattr(f, name) for f in frames]).astype(dtype)

        type_names: dict[str, int] = {}
        codes = np.array([type_names.setdefault(t.lower(), len(type_names)) for t in names], dtype=np.int64)
        objects = Objects3D(
            dims=stacked("dims", (0, 3)),
            locations=stacked("locations", (0, 3)),
            rotation_y=stacked("rotation_y", (0,)),
            alpha=stacked("alpha", (0,)),
            types=names,
            boxes=stacked("boxes", (0, 4)),
            truncation=stacked("truncation", (0,)),
            occlusion=stacked("occlusion", (0,), np.int64),
            scores=stacked("scores", (0,)),
        )
        return cls(frame, codes, type_names, objects)


def evaluate_kitti_objects(
    ground_truth: Sequence[Objects3D],
    detections: Sequence[Objects3D],
    *,
    iou_thresholds: Literal["original", "official"] | IouThresholds = "original",
    classes: Sequence[str] = EVALUATED_CLASSES,
) -> KittiResult:
    """Evaluates in-memory frames exactly as :func:`evaluate_kitti` evaluates files.

    Every given frame is evaluated, like a result file (even an empty one). Scores are used as
    given, whereas the file route sees them at the decimals written (2 in the original, which
    creates ties): round them first to get identical numbers.

    Args:
        ground_truth: per frame, the labelled objects (``truncation`` and ``occlusion`` used).
        detections: per frame (same order), the detected objects (``scores`` used).
        iou_thresholds: ``"original"``, ``"official"`` or class -> {"bbox", "bev", "3d"} -> overlap.
        classes: lower-case class names to evaluate; each needs thresholds.

    Returns:
        Per class, metric and difficulty the 41-value arrays (``None`` = not evaluated).
    """
    if len(ground_truth) != len(detections):
        raise ValueError(f"{len(ground_truth)} ground-truth frames but {len(detections)} detection frames")
    thresholds = IOU_THRESHOLDS[iou_thresholds] if isinstance(iou_thresholds, str) else iou_thresholds
    classes = tuple(c.lower() for c in classes)
    missing = [c for c in classes if c not in thresholds]
    if missing:
        raise ValueError(f"no IoU thresholds for classes {missing}")

    gt = _Flat.concatenate(ground_truth, "ground-truth")
    det = _Flat.concatenate(detections, "detection")
    overlaps = frame_overlaps(gt, det)
    # AOS needs every detection line (any class) to carry an orientation.
    compute_aos = not np.any(det.objects.alpha == _NO_ALPHA)

    precision: dict[str, dict[str, np.ndarray | None]] = {}
    num_ground_truth: dict[str, tuple[int, int, int]] = {}
    for class_name in classes:
        of_class = det.is_type(class_name)
        # A metric is evaluated only if some detection of the class provides its inputs.
        evaluated = {
            "bbox": bool(np.any(of_class & (det.objects.boxes[:, 0] >= 0))),
            "bev": bool(np.any(of_class & (det.objects.locations[:, 0] != _NO_LOCATION))),
            "3d": bool(np.any(of_class & (det.objects.locations[:, 1] != _NO_LOCATION))),
        }
        per_metric: dict[str, np.ndarray | None] = dict.fromkeys(METRICS)
        for metric in ("bbox", "bev", "3d"):
            if not evaluated[metric]:
                continue
            with_aos = metric == "bbox" and compute_aos
            rows = [
                _evaluate_level(gt, det, overlaps[metric], class_name, level, thresholds[class_name][metric], with_aos)
                for level in range(len(DIFFICULTIES))
            ]
            per_metric[metric] = np.stack([r[0] for r in rows])
            if with_aos:
                per_metric["aos"] = np.stack([r[1] for r in rows])
        precision[class_name] = per_metric
        num_ground_truth[class_name] = tuple(
            int(np.sum(_ground_truth_roles(gt, class_name, level) == _VALID)) for level in range(len(DIFFICULTIES))
        )
    return KittiResult(
        precision=precision,
        num_ground_truth=num_ground_truth,
        num_frames=len(ground_truth),
        iou_thresholds={c: dict(thresholds[c]) for c in classes},
    )


def _ground_truth_roles(gt: _Flat, class_name: str, level: int) -> np.ndarray:
    """[N_gt] role: valid (counted), ignored (absorbs detections silently) or other (skipped)."""
    o = gt.objects
    height = o.boxes[:, 3] - o.boxes[:, 1]
    outside_level = (
        (o.occlusion > _MAX_OCCLUSION[level])
        | (o.truncation > _MAX_TRUNCATION[level])
        | (height < _MIN_HEIGHT_PX[level])
    )
    same = gt.is_type(class_name)
    neighbour = gt.is_type(NEIGHBOUR_CLASSES.get(class_name, ""))
    roles = np.full(len(gt.frame), _OTHER, dtype=np.int8)
    roles[neighbour | (same & outside_level)] = _IGNORED
    roles[same & ~outside_level] = _VALID
    return roles


def _detection_roles(det: _Flat, class_name: str, level: int) -> np.ndarray:
    """[N_det] role: small (too short for the level, whatever its class), valid or other."""
    height = np.trunc(np.abs(det.objects.boxes[:, 1] - det.objects.boxes[:, 3]))  # the binary's int cast
    roles = np.where(det.is_type(class_name), _VALID, _OTHER).astype(np.int8)
    roles[height < _MIN_HEIGHT_PX[level]] = _IGNORED
    return roles


def _evaluate_level(
    gt: _Flat,
    det: _Flat,
    overlaps: PairOverlaps,
    class_name: str,
    level: int,
    iou_threshold: float,
    with_aos: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """[41] interpolated precision and (if ``with_aos``) orientation similarity for one level."""
    gt_role = _ground_truth_roles(gt, class_name, level)
    det_role = _detection_roles(det, class_name, level)
    num_valid = int(np.sum(gt_role == _VALID))
    scores = det.objects.scores
    candidates = overlaps.select(
        (overlaps.iou > iou_threshold) & (gt_role[overlaps.gt] != _OTHER) & (det_role[overlaps.det] != _OTHER)
    )

    # Pass 1: the highest-scoring candidate wins; true-positive scores give the thresholds.
    first = greedy_match(candidates, gt.frame, scores[candidates.det], scores, np.array([-np.inf]))
    first_tp = (gt_role[first.gt] == _VALID) & (det_role[first.det] == _VALID)
    thresholds = score_thresholds(scores[first.det[first_tp]], num_valid)

    # Pass 2, at every threshold: a valid candidate with the largest overlap wins; a small one
    # only when there is no valid one.
    priority = np.where(det_role[candidates.det] == _VALID, candidates.iou, -1.0)
    matches = greedy_match(candidates, gt.frame, priority, scores, thresholds)
    num_steps = len(thresholds)
    tp_mask = (gt_role[matches.gt] == _VALID) & (det_role[matches.det] == _VALID)
    tp = np.bincount(matches.step[tp_mask], minlength=num_steps)
    similarity = (1.0 + np.cos(gt.objects.alpha[matches.gt] - det.objects.alpha[matches.det])) / 2.0
    aos_sum = np.bincount(matches.step[tp_mask], weights=similarity[tp_mask], minlength=num_steps)

    # False positives: valid detections left untaken, minus those inside a don't-care region.
    valid_det = det_role == _VALID
    dont_care = gt.is_type(_DONT_CARE)[overlaps.gt]
    covered = np.zeros(len(scores), dtype=bool)
    covered[overlaps.det[dont_care & (overlaps.of_detection > iou_threshold)]] = True
    taken_valid = valid_det[matches.det]
    untaken = count_at_least(scores[valid_det], thresholds) - np.bincount(
        matches.step[taken_valid], minlength=num_steps
    )
    covered_untaken = count_at_least(scores[valid_det & covered], thresholds) - np.bincount(
        matches.step[taken_valid & covered[matches.det]], minlength=num_steps
    )
    fp = untaken - covered_untaken

    precision = np.zeros(NUM_SAMPLE_POINTS)
    aos = np.zeros(NUM_SAMPLE_POINTS)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision[:num_steps] = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        aos[:num_steps] = np.where(tp + fp > 0, aos_sum / (tp + fp), 0.0)
    # Each entry becomes the best value at or beyond it (trailing zeros included).
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    aos = np.maximum.accumulate(aos[::-1])[::-1]
    return precision, (aos if with_aos else None)


__all__ = [
    "DIFFICULTIES",
    "EVALUATED_CLASSES",
    "IOU_THRESHOLDS",
    "METRICS",
    "NEIGHBOUR_CLASSES",
    "KittiResult",
    "evaluate_kitti",
    "evaluate_kitti_objects",
    "list_result_frames",
    "rotated_rectangle_intersection",
]
