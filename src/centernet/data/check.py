"""One entry point for every data source, and the ``centernet data check`` summary.

``load_dataset`` recognises what a path is:

* ``"synthetic"``: the built-in shapes (``synthetic.synthetic_dataset``; ``train`` and ``val`` use
  different seeds);
* a ``.json`` file: COCO instances / person keypoints / the original's KITTI conversion;
* a ``.yaml`` / ``.yml`` file: a YOLO (Ultralytics) data yaml;
* a folder with ``image_2/`` + ``label_2/`` (or ``training/`` holding them): KITTI;
* a folder with ``Annotations/`` or ``annotations/`` xml files and ``JPEGImages/`` or ``images/``: VOC;
* a COCO root folder with ``annotations/instances_<split>*.json``.

``check_images`` is the decode pass that ``centernet data check`` and ``train`` (before its first
step) run over every image file: each is fully decoded (``image_io.verify_image``, in parallel
threads, with the decoder training uses) and its real, EXIF-applied size compared with the size the annotations give. Results are
cached per file by size and modification time (``$CENTERNET_CACHE_DIR``, default
``~/.cache/centernet``), so a second run over unchanged files decodes nothing. What is done with a
bad image is one policy, ``data.on_bad_image``: ``"error"`` refuses the data set naming every bad
file, ``"skip"`` leaves those images out and counts them (issue kind ``bad_image``).
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from centernet.data.coco import read_coco
from centernet.data.image_io import ImageReadError, verify_image
from centernet.data.kitti import find_kitti_root, read_kitti
from centernet.data.records import (
    ISSUE_KINDS,
    WHOLE_SET,
    DataFormatError,
    DetectionDataset,
    _load_from_path,
    missing_split_error,
)
from centernet.data.synthetic import synthetic_dataset
from centernet.data.voc import find_voc_folders, read_voc
from centernet.data.yolo import read_yolo

SYNTHETIC = "synthetic"
#: Seed and size of the synthetic splits when the caller gives none (disjoint seeds: no leakage).
_SYNTHETIC_SPLITS = {"train": {"seed": 0, "num_images": 512}, "val": {"seed": 1_000_003, "num_images": 64}}
_ISSUES_SHOWN_PER_KIND = 10
ON_BAD_IMAGE = ("error", "skip")
_CACHE_VERSION = 2  # 2: verdicts of the one decoder (image_io.decode_image)


def _coco_root_json(root: Path, split: str | None) -> Path | None:
    """The ``annotations/instances_<split>*.json`` of a COCO root; ``None`` when ``root`` has none at all.

    Raises:
        DataFormatError: The root has instances jsons but none of ``split`` (naming those there are).
    """
    jsons = sorted((root / "annotations").glob("instances_*.json"))
    if not jsons:
        return None
    split = split or "val"
    matches = [path for path in jsons if path.stem.removeprefix("instances_").startswith(split)]
    if split == WHOLE_SET or not matches:
        existing = [path.stem.removeprefix("instances_") for path in jsons]
        looked_at = f"{root / 'annotations'}/instances_{split}*.json; a COCO root has one json per split"
        raise missing_split_error(root, split, looked_at, existing, whole_set=False)
    return matches[0]


def _check_json_split(path: Path, split: str | None) -> None:
    """A json file is one split: a split name must be ``all`` or said by the file's or its folder's name.

    So ``train.json`` is the ``train`` split, ``annotations/instances_val2017.json`` the ``val`` and
    ``val2017`` splits, ``valid/_annotations.coco.json`` the ``val`` split; validating on a training
    file, or asking a file for a split it is not, needs ``all`` said explicitly.
    """
    if split in (None, WHOLE_SET):
        return
    names = (path.stem.lower(), path.parent.name.lower())
    if not any(split.lower() in name for name in names):
        raise DataFormatError(
            f"{path}: a json file is one split, and neither its name nor its folder's says {split!r}; "
            f"name the {split!r} split's own file (data.source / data.val_source), or use split "
            f"'{WHOLE_SET}' to take this file whole"
        )


def load_dataset(spec: str | Path, split: str | None = None, **options: Any) -> DetectionDataset:
    """Reads a data set of any supported format, recognised from ``spec`` (see the module docstring).

    Args:
        spec: ``"synthetic"``, a json or yaml file, or a data set folder.
        split: ``train`` / ``val`` / ...: the YOLO yaml key, the KITTI / VOC split file, the COCO
            root's json, the synthetic seed; for a json file (itself one split) a name its file
            or folder name says. A split not found is an error naming the splits there are.
            ``"all"``: every image (every xml file, frame, YOLO split; a json file whole).
            ``None``: the same for KITTI, VOC and a json file, ``val`` otherwise.
        **options: Passed to the reader (``crowd=`` for COCO, ``difficult=`` / ``class_names=``
            for VOC, ``class_names=`` / ``frames=`` for KITTI, ``num_images=`` / ``image_size=``
            / ``seed=`` for synthetic).

    Raises:
        DataFormatError: ``spec`` is none of the above, it has no split ``split``, or its reader
            found a fatal problem.
    """
    if str(spec) == SYNTHETIC:
        if split not in (None, *_SYNTHETIC_SPLITS):
            raise DataFormatError(f"{SYNTHETIC}: no split {split!r}; splits there: {', '.join(_SYNTHETIC_SPLITS)}")
        return synthetic_dataset(**{**_SYNTHETIC_SPLITS.get(split or "val", _SYNTHETIC_SPLITS["val"]), **options})
    path = Path(spec)
    if not path.exists():
        raise DataFormatError(
            f"{path}: no such file or folder (expected '{SYNTHETIC}', a json, a data yaml or a data set folder)"
        )
    if path.is_file():
        if path.suffix == ".json":
            _check_json_split(path, split)
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


def _cache_root() -> Path:
    return Path(os.environ.get("CENTERNET_CACHE_DIR") or Path.home() / ".cache" / "centernet")


def _cache_file(paths: list[Path]) -> Path:
    """One cache file per set of images (the same data set, whatever its reader)."""
    # os.fsencode: a file name that is not valid UTF-8 is hashed by its bytes, never refused.
    digest = hashlib.sha1(b"\n".join(sorted(os.fsencode(p) for p in paths))).hexdigest()[:16]
    return _cache_root() / "image_checks" / f"{digest}.json"


def _read_cache(path: Path) -> dict[str, list]:
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return cache.get("images", {}) if isinstance(cache, dict) and cache.get("version") == _CACHE_VERSION else {}


def _write_cache(path: Path, images: dict[str, list]) -> None:
    """Atomic replace; a cache that cannot be written (read-only home...) only costs the next run time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_suffix(f".{os.getpid()}.tmp")
        temp.write_text(json.dumps({"version": _CACHE_VERSION, "images": images}))
        temp.replace(path)
    except OSError:
        pass


def _file_key(path: Path) -> list[int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def _verify(path: Path) -> list:
    """``[width, height, None]`` of a good image, ``[0, 0, message]`` of a bad one."""
    try:
        return [*verify_image(path), None]
    except ImageReadError as error:
        return [0, 0, str(error)]


@dataclass(frozen=True)
class ImageCheck:
    """What the decode pass found.

    Attributes:
        bad: ``(record index, message)`` of every bad image, in record order; each message names
            the file and the problem.
        decoded: Images decoded in this pass (the others came from the cache).
    """

    bad: list[tuple[int, str]]
    decoded: int


def check_images(dataset: DetectionDataset, workers: int | None = None, cache: bool = True) -> ImageCheck:
    """Decodes every image file of ``dataset`` and compares its real size with the record's.

    Args:
        dataset: Any data set read from files (a generated one, such as ``synthetic``, has none:
            nothing is checked).
        workers: Decoding threads; ``None``: one per CPU.
        cache: Reuse (and store) results of files whose size and mtime are unchanged.
    """
    if dataset.image_source is not _load_from_path or not dataset.records:
        return ImageCheck([], 0)
    paths = sorted({record.path.absolute() for record in dataset.records})
    cache_path = _cache_file(paths)
    stored = _read_cache(cache_path) if cache else {}
    keys = {path: _file_key(path) for path in paths}
    results = {path: stored[str(path)][2:] for path in paths if keys[path] and stored.get(str(path), [])[:2] == keys[path]}
    todo = [path for path in paths if path not in results]
    with ThreadPoolExecutor(max_workers=max(1, workers or os.cpu_count() or 1)) as pool:
        results.update(zip(todo, pool.map(_verify, todo)))
    if cache and todo:
        _write_cache(cache_path, {str(p): [*keys[p], *results[p]] for p in paths if keys[p] is not None})
    bad = []
    for index, record in enumerate(dataset.records):
        width, height, problem = results[record.path.absolute()]
        if problem is None and (width, height) != (record.width, record.height):
            problem = (
                f"{record.path}: the annotations give size {record.width}x{record.height}, "
                f"the image is {width}x{height} (EXIF orientation applied)"
            )
        if problem is not None:
            bad.append((index, problem))
    return ImageCheck(bad, len(todo))


def apply_image_policy(dataset: DetectionDataset, check: ImageCheck, on_bad_image: str = "error") -> int:
    """Refuses the data set (``"error"``) or leaves out and reports (``"skip"``) its bad images.

    Returns:
        The number of boxes left out with the skipped images.

    Raises:
        DataFormatError: ``on_bad_image == "error"`` and there are bad images; the message names
            every one (the first ten, then a count) and how to skip them instead.
        ValueError: ``on_bad_image`` is not one of ``ON_BAD_IMAGE``.
    """
    if on_bad_image not in ON_BAD_IMAGE:
        raise ValueError(f"data.on_bad_image: {on_bad_image!r} is not one of {', '.join(ON_BAD_IMAGE)}")
    if not check.bad:
        return 0
    messages = [message for _, message in check.bad]
    if on_bad_image == "error":
        others = "".join(f"\n{line}" for line in _listing("bad images", messages[1:])[1:]) if messages[1:] else ""
        raise DataFormatError(
            f"{messages[0]} ({len(messages)} of the {len(dataset.records)} images of {dataset.source} cannot be "
            f"used; set data.on_bad_image=skip to leave them out){others}"
        )
    bad = {index for index, _ in check.bad}
    for index, message in check.bad:
        record = dataset.records[index]
        file, _, problem = message.partition(": ")
        dataset.report.add("bad_image", file, f"{problem}; image and its {len(record)} boxes skipped")
    skipped_boxes = sum(len(dataset.records[index]) for index in bad)
    dataset.records = [record for index, record in enumerate(dataset.records) if index not in bad]
    return skipped_boxes


def data_summary(dataset: DetectionDataset, skipped_boxes: int = 0) -> str:
    """One line for the training log: images, boxes, and boxes clipped, dropped and skipped.

    ``skipped_boxes``: boxes of images the decode pass left out (``apply_image_policy``).
    """
    counts = dataset.report.counts()
    boxes = sum(len(record) for record in dataset.records)
    skipped = counts["unknown_category"] + skipped_boxes
    return (
        f"{len(dataset.records)} images, {boxes} boxes; boxes clipped {counts['clipped_box']}, "
        f"dropped {counts['degenerate_box']} (degenerate), skipped {skipped} "
        f"(unknown class or bad image); bad images skipped {counts['bad_image']}"
    )


def prepare_training_data(dataset: DetectionDataset, on_bad_image: str = "error", workers: int | None = None) -> str:
    """The pass ``train`` runs on each split before its first step: decode check, policy, summary line."""
    return data_summary(dataset, apply_image_policy(dataset, check_images(dataset, workers), on_bad_image))


def _listing(kind: str, messages: list[str]) -> list[str]:
    """Summary lines of one problem kind: its count, then the first messages."""
    shown = [f"    {message}" for message in messages[:_ISSUES_SHOWN_PER_KIND]]
    hidden = len(messages) - len(shown)
    return [f"  {kind}: {len(messages)}", *shown, *([f"    ... and {hidden} more"] if hidden else [])]


def check_dataset(
    spec: str | Path, split: str | None = None, verify_images: bool = True, workers: int | None = None, **options: Any
) -> str:
    """Reads a data set and summarises it for a person: sizes, objects per class, every problem.

    ``inspect_dataset`` with the summary alone (see there).
    """
    return inspect_dataset(spec, split, verify_images, workers, **options)[0]


def inspect_dataset(
    spec: str | Path, split: str | None = None, verify_images: bool = True, workers: int | None = None, **options: Any
) -> tuple[str, int]:
    """Reads a data set and summarises it for a person: sizes, objects per class, every problem.

    Args:
        spec: As for ``load_dataset``.
        split: As for ``load_dataset``.
        verify_images: Also decode every image (``check_images``, cached) and list the bad ones.
        workers: Decoding threads (``None``: one per CPU).
        **options: Passed to the reader.

    Returns:
        A multi-line summary (problems list the file and annotation / line concerned, the first
        ten of each kind shown and the rest counted) and the number of bad images.

    Raises:
        DataFormatError: A fatal problem (unreadable annotation file, wrong column count...).
    """
    dataset = load_dataset(spec, split, **options)
    records = dataset.records
    labels = np.concatenate([r.labels for r in records]) if records else np.zeros(0, dtype=np.int64)
    trained = np.concatenate([~r.ignore for r in records]) if records else np.zeros(0, dtype=bool)
    flags = {name: int(sum(getattr(r, name).sum() for r in records)) for name in ("crowd", "difficult", "ignore")}
    # Without a split a YOLO yaml, a COCO root and the synthetic set give their val split, other sources all of it.
    val_by_default = Path(dataset.source).suffix in (".yaml", ".yml") or str(dataset.source) != str(spec)
    default = "split val" if val_by_default else "every image"
    lines = [
        f"Data set: {dataset.source}" + (f" (split {split})" if split else f" (no --split: {default})"),
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

    image_check = check_images(dataset, workers) if verify_images else ImageCheck([], 0)
    bad_images = len(image_check.bad)
    apply_image_policy(dataset, image_check, "skip")
    problems = [(kind, [str(issue) for issue in dataset.report.of_kind(kind)]) for kind in ISSUE_KINDS]
    problem_lines = [line for kind, messages in problems if messages for line in _listing(kind, messages)]
    lines += ["Problems:" if problem_lines else "Problems: none", *problem_lines]
    if bad_images:
        lines.append(f"Bad images: {bad_images}; training refuses them unless data.on_bad_image=skip")
    return "\n".join(lines), bad_images
