"""The checks every reader applies to every image record, with one policy for all formats.

* Boxes reaching outside the image are clipped to ``[0, width] x [0, height]`` and counted. The
  original clips in output-map space after its affine warp; clipping first changes nothing for
  boxes inside the image, which is every box of COCO, VOC and KITTI as distributed.
* Degenerate boxes (zero or negative width or height after clipping, or non-finite corners) are
  dropped and counted: they define no centre and no size.
* Labelled joints outside the image get visibility 0 and are counted: no heat-map peak can be
  placed for them. People without labelled joints are kept (the original draws their centre but
  masks their regression) and counted.
* COCO ``iscrowd`` and VOC ``difficult`` boxes follow a ``FlagPolicy``. The default ``"train"`` is
  the original's: its ctdet reads every annotation of an image, crowd boxes included (see the
  reference fixtures' targets note), so they are ordinary training objects that keep their flag.
* Images left without objects are kept as negatives and counted.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from centernet.data.records import FLAG_POLICIES, DataReport, FlagPolicy, ImageRecord


def _check_policy(name: str, policy: str) -> None:
    if policy not in FLAG_POLICIES:
        raise ValueError(f"{name} policy must be one of {FLAG_POLICIES}, got {policy!r}")


def validate_record(
    record: ImageRecord,
    report: DataReport,
    annotation_file: str | Path,
    object_kind: str = "annotation",
    crowd: FlagPolicy = "train",
    difficult: FlagPolicy = "train",
) -> ImageRecord:
    """Applies the module's checks to one record and reports what it changed.

    Args:
        record: A freshly read record (any format).
        report: Receives one issue per changed, dropped or notable object.
        annotation_file: The file the objects came from, named in every issue.
        object_kind: How ``record.annotation_ids`` are named in issues (``"annotation"``,
            ``"line"``, ``"object"``).
        crowd: Policy for ``record.crowd`` objects.
        difficult: Policy for ``record.difficult`` objects.

    Returns:
        The cleaned record (objects in their original order).
    """
    _check_policy("crowd", crowd)
    _check_policy("difficult", difficult)
    image = f"image {record.path.name}"

    def add(kind: str, index: int | None, message: str) -> None:
        where = "" if index is None else f"{object_kind} {record.annotation_ids[index]}"
        report.add(kind, annotation_file, f"{image}: {message}", where)

    keep = np.ones(len(record), dtype=bool)
    boxes = record.boxes.copy()
    finite = np.isfinite(boxes).all(axis=1)
    limits = np.array([record.width, record.height, record.width, record.height], dtype=np.float32)
    clipped = np.clip(boxes, 0.0, limits)
    for i in np.flatnonzero(finite & (clipped != boxes).any(axis=1)):
        add(
            "clipped_box",
            i,
            f"box {boxes[i].tolist()} reaches outside the {record.width}x{record.height} image; clipped",
        )
    boxes = np.where(finite[:, None], clipped, boxes)
    degenerate = ~finite | (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    for i in np.flatnonzero(degenerate):
        add("degenerate_box", i, f"degenerate box {record.boxes[i].tolist()} (no area inside the image); dropped")
    keep &= ~degenerate

    ignore = record.ignore.copy()
    for flag, policy, kind in ((record.crowd, crowd, "crowd"), (record.difficult, difficult, "difficult")):
        for i in np.flatnonzero(flag & keep):
            add(kind, i, f"{kind} box, policy {policy!r}")
        if policy == "ignore":
            ignore |= flag
        elif policy == "drop":
            keep &= ~flag

    keypoints = record.keypoints
    if keypoints is not None:
        keypoints = keypoints.copy()
        x, y, visible = keypoints[..., 0], keypoints[..., 1], keypoints[..., 2] > 0
        outside = visible & ((x < 0) | (y < 0) | (x > record.width) | (y > record.height))
        for i, joint in zip(*np.nonzero(outside & keep[:, None])):
            add(
                "keypoint_outside",
                i,
                f"joint {joint} at ({x[i, joint]:.1f}, {y[i, joint]:.1f}) outside the image; marked invisible",
            )
        keypoints[..., 2][outside] = 0
        for i in np.flatnonzero(keep & ~record.crowd & ~(keypoints[..., 2] > 0).any(axis=1)):
            add("no_visible_keypoints", i, "person without labelled joints; kept, its keypoint targets stay masked")

    cleaned = dataclasses.replace(record, boxes=boxes, ignore=ignore, keypoints=keypoints).subset(keep)
    if len(cleaned) == 0:
        add("empty_image", None, "no objects; kept as a negative example")
    return cleaned
