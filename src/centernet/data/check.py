"""One entry point for every data source, and the ``centernet data check`` summary.

``load_dataset`` recognises what a path is:

* ``"synthetic"``: the built-in shapes (``synthetic.synthetic_dataset``; ``train`` and ``val`` use
  different seeds);
* a ``.json`` file: COCO instances / person keypoints / the original's KITTI conversion;
* a ``.yaml`` / ``.yml`` file: a YOLO (Ultralytics) data yaml;
* a folder with ``image_2/`` + ``label_2/`` (or ``training/`` holding them): KITTI;
* a folder with ``Annotations/`` or ``annotations/`` xml files and ``JPEGImages/`` or ``images/``: VOC;
* a COCO root folder with ``annotations/instances_<split>*.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from centernet.data.coco import read_coco
from centernet.data.image_io import ImageReadError
from centernet.data.kitti import find_kitti_root, read_kitti
from centernet.data.records import ISSUE_KINDS, DataFormatError, DetectionDataset
from centernet.data.synthetic import synthetic_dataset
from centernet.data.voc import find_voc_folders, read_voc
from centernet.data.yolo import read_yolo

SYNTHETIC = "synthetic"
#: Seed and size of the synthetic splits when the caller gives none (disjoint seeds: no leakage).
_SYNTHETIC_SPLITS = {"train": {"seed": 0, "num_images": 512}, "val": {"seed": 1_000_003, "num_images": 64}}
_ISSUES_SHOWN_PER_KIND = 10


def _coco_root_json(root: Path, split: str | None) -> Path | None:
    candidates = sorted((root / "annotations").glob(f"instances_{split or 'val'}*.json"))
    return candidates[0] if candidates else None


def load_dataset(spec: str | Path, split: str | None = "val", **options: Any) -> DetectionDataset:
    """Reads a data set of any supported format, recognised from ``spec`` (see the module docstring).

    Args:
        spec: ``"synthetic"``, a json or yaml file, or a data set folder.
        split: ``train`` / ``val`` / ...: the YOLO yaml key, the KITTI / VOC split file, the COCO
            root's json, the synthetic seed. Ignored for a json file (the file is the split).
            ``None``: every frame / xml file (KITTI, VOC), ``val`` otherwise.
        **options: Passed to the reader (``crowd=`` for COCO, ``difficult=`` / ``class_names=``
            for VOC, ``class_names=`` / ``frames=`` for KITTI, ``num_images=`` / ``image_size=``
            / ``seed=`` for synthetic).

    Raises:
        DataFormatError: ``spec`` is none of the above, or its reader found a fatal problem.
    """
    if str(spec) == SYNTHETIC:
        return synthetic_dataset(**{**_SYNTHETIC_SPLITS.get(split or "val", _SYNTHETIC_SPLITS["val"]), **options})
    path = Path(spec)
    if not path.exists():
        raise DataFormatError(
            f"{path}: no such file or folder (expected '{SYNTHETIC}', a json, a data yaml or a data set folder)"
        )
    if path.is_file():
        if path.suffix == ".json":
            return read_coco(path, **options)
        if path.suffix in (".yaml", ".yml"):
            return read_yolo(path, split or "val", **options)
        raise DataFormatError(f"{path}: unknown annotation file type (expected .json or a .yaml data file)")
    if find_kitti_root(path) is not None:
        return read_kitti(path, split, **options)
    if find_voc_folders(path) is not None:
        return read_voc(path, split, **options)
    coco_json = _coco_root_json(path, split)
    if coco_json is not None:
        return read_coco(coco_json, **options)
    raise DataFormatError(
        f"{path}: not a recognised data set folder (looked for KITTI image_2/ + label_2/, VOC "
        f"Annotations/ + JPEGImages/, COCO annotations/instances_{split or '*'}*.json)"
    )


def _decode_failures(dataset: DetectionDataset) -> list[str]:
    failures = []
    for index in range(len(dataset)):
        try:
            dataset.load_image(index)
        except ImageReadError as error:
            failures.append(str(error))
    return failures


def _listing(kind: str, messages: list[str]) -> list[str]:
    """Summary lines of one problem kind: its count, then the first messages."""
    shown = [f"    {message}" for message in messages[:_ISSUES_SHOWN_PER_KIND]]
    hidden = len(messages) - len(shown)
    return [f"  {kind}: {len(messages)}", *shown, *([f"    ... and {hidden} more"] if hidden else [])]


def check_dataset(spec: str | Path, split: str | None = None, verify_images: bool = False, **options: Any) -> str:
    """Reads a data set and summarises it for a person: sizes, objects per class, every problem.

    Args:
        spec: As for ``load_dataset``.
        split: As for ``load_dataset``.
        verify_images: Also decode every image and list those that fail (slow on big sets).
        **options: Passed to the reader.

    Returns:
        A multi-line summary; problems list the file (and annotation / line) concerned, the
        first ten of each kind shown and the rest counted.

    Raises:
        DataFormatError: A fatal problem (unreadable annotation file, wrong column count...).
    """
    dataset = load_dataset(spec, split, **options)
    records = dataset.records
    labels = np.concatenate([r.labels for r in records]) if records else np.zeros(0, dtype=np.int64)
    trained = np.concatenate([~r.ignore for r in records]) if records else np.zeros(0, dtype=bool)
    flags = {name: int(sum(getattr(r, name).sum() for r in records)) for name in ("crowd", "difficult", "ignore")}
    lines = [
        f"Data set: {dataset.source}" + (f" (split {split})" if split else ""),
        f"Images: {len(records)} ({sum(len(r) == 0 for r in records)} without objects)",
        f"Objects: {len(labels)} ({', '.join(f'{v} {k}' for k, v in flags.items())}"
        f", {int((labels < 0).sum())} of no class)",
        f"Classes: {dataset.num_classes} (objects per class, ignore regions left out)",
    ]
    counts = np.bincount(labels[(labels >= 0) & trained], minlength=dataset.num_classes)
    width = max((len(name) for name in dataset.class_names), default=0)
    lines += [f"  {name:<{width}}  {count}" for name, count in zip(dataset.class_names, counts)]
    if dataset.keypoint_names:
        lines.append(f"Keypoints: {len(dataset.keypoint_names)} per object")

    problems = [(kind, [str(issue) for issue in dataset.report.of_kind(kind)]) for kind in ISSUE_KINDS]
    if verify_images:
        problems.append(("unreadable_image", _decode_failures(dataset)))
    problem_lines = [line for kind, messages in problems if messages for line in _listing(kind, messages)]
    lines += ["Problems:" if problem_lines else "Problems: none", *problem_lines]
    return "\n".join(lines)
