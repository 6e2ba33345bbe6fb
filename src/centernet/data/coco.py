"""COCO-style json: instances, person keypoints, and the original's KITTI conversion (``calib`` per image).

Order follows the original's pycocotools use: images in file order (``getImgIds``), each image's
annotations in file order (``getAnnIds``), classes in ascending category id (``valid_ids``), so
COCO's sparse ids 1..90 map to class indices 0..79 exactly as the original's ``cat_ids``.
Boxes are ``float32(x + w)`` as the original's ``_coco_box_to_bbox`` computes them.

Unknown category ids (not in ``categories``) are skipped and reported, not fatal: a data check
should list every such annotation at once rather than stop at the first.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from centernet.data.image_io import image_size
from centernet.data.kitti import KITTI_CLASSES, kitti_label
from centernet.data.kitti_fields import check_calib
from centernet.data.objects3d import Objects3D
from centernet.data.records import DataFormatError, DataReport, DetectionDataset, FlagPolicy, ImageRecord
from centernet.data.validation import validate_record


def _guess_image_dir(json_path: Path, file_name: str) -> Path:
    """The folder holding the images of a json that does not say where they are.

    Tries the COCO layout (``annotations/instances_val2017.json`` -> ``val2017/``), an
    ``images/`` folder beside the json or its parent, the json's own folder and KITTI's
    ``training/image_2``.
    """
    here, parent = json_path.parent, json_path.parent.parent
    split_folder = json_path.stem.rsplit("_", 1)[-1]
    candidates = [parent / split_folder, here / split_folder, here / "images", parent / "images", here, parent]
    candidates += [folder / "training" / "image_2" for folder in (here, parent)]
    for folder in candidates:
        if (folder / file_name).is_file():
            return folder
    raise DataFormatError(
        f"{json_path}: cannot find the folder of its images (looked for the first image's file_name {file_name!r} in "
        f"{', '.join(str(c) for c in candidates)}); pass image_dir"
    )


def _annotation_box(json_path: Path, ann: dict) -> list[float]:
    bbox = ann.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise DataFormatError(f"{json_path} [annotation {ann.get('id')}]: 'bbox' must be [x, y, w, h], got {bbox!r}")
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise DataFormatError(
            f"{json_path} [annotation {ann.get('id')}]: 'bbox' must hold 4 numbers [x, y, w, h], got {bbox!r}"
        ) from None
    return [x, y, x + w, y + h]


def _check_images(json_path: Path, images: list) -> None:
    """Every image entry has an id, a file name and, where given, a positive integer size; ids are unique."""
    if not images:
        raise DataFormatError(f"{json_path}: 'images' is empty; a data set needs at least one image")
    seen: dict[object, str] = {}
    for position, image in enumerate(images):
        if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str):
            raise DataFormatError(f"{json_path} [images[{position}]]: an image needs 'id' and 'file_name', got {image!r:.120}")
        if not _is_id(image["id"]):
            raise _field_error(json_path, f"images[{position}]", "id", image["id"], "an integer (or string) image id")
        if not image["file_name"]:
            raise _field_error(json_path, f"images[{position}]", "file_name", image["file_name"], "an image file name")
        for side in ("width", "height"):
            value = image.get(side)
            if side in image and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise DataFormatError(
                    f"{json_path} [image {image['id']}]: {side} must be a positive integer, got {value!r}"
                )
        if image["id"] in seen:
            raise DataFormatError(
                f"{json_path} [image {image['id']}]: duplicate image id ({seen[image['id']]} and "
                f"{image['file_name']}); their boxes would be merged"
            )
        seen[image["id"]] = image["file_name"]


def _is_id(value: object) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or isinstance(value, str)


def _field_error(json_path: Path, where: str, field: str, value: object, expected: str) -> DataFormatError:
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return DataFormatError(f"{json_path} [{where}]: '{field}' is {type(value).__name__} {shown}, expected {expected}")


def _check_categories(json_path: Path, categories: list) -> None:
    """Every category has an integer ``id`` (no two alike) and a non-empty string ``name``."""
    if not categories:
        raise DataFormatError(f"{json_path}: 'categories' is empty; expected at least one {{'id': int, 'name': str}}")
    seen: dict[int, str] = {}
    for position, category in enumerate(categories):
        where = f"categories[{position}]"
        if not isinstance(category, dict) or "id" not in category or "name" not in category:
            raise DataFormatError(f"{json_path} [{where}]: a category needs an 'id' and a 'name', got {category!r}")
        cid, name = category["id"], category["name"]
        if isinstance(cid, bool) or not isinstance(cid, int):
            raise _field_error(json_path, where, "id", cid, "an integer category id")
        if not isinstance(name, str) or not name:
            raise _field_error(json_path, where, "name", name, "a non-empty string")
        if cid in seen:
            raise DataFormatError(
                f"{json_path} [{where}]: duplicate category id {cid} ({seen[cid]!r} and {name!r}); "
                "each class needs its own id (one of the two could never have an object)"
            )
        seen[cid] = name
        joints = category.get("keypoints")
        if joints is not None and (not isinstance(joints, list) or not all(isinstance(j, str) for j in joints)):
            raise _field_error(json_path, where, "keypoints", joints, "a list of joint names")


def _check_annotation(json_path: Path, position: int, ann: dict, image_ids: dict) -> None:
    """``image_id`` names an image, ``category_id`` is an integer, ``iscrowd`` is 0 or 1."""
    where = f"annotation {ann.get('id', f'at annotations[{position}]')}"
    if "image_id" not in ann or not _is_id(ann["image_id"]):
        raise _field_error(json_path, where, "image_id", ann.get("image_id"), "the id of an entry of 'images'")
    if ann["image_id"] not in image_ids:
        raise DataFormatError(f"{json_path} [{where}]: image_id {ann['image_id']!r} is not in 'images'")
    category = ann.get("category_id")
    if isinstance(category, bool) or not isinstance(category, int):
        raise _field_error(json_path, where, "category_id", category, "an integer id of an entry of 'categories'")
    crowd = ann.get("iscrowd", 0)
    if crowd not in (0, 1) or isinstance(crowd, float):
        raise _field_error(json_path, where, "iscrowd", crowd, "0 or 1")


def _keypoints(json_path: Path, anns: list[dict], num_joints: int) -> np.ndarray:
    """``float32 [N, num_joints, 3]`` joints of the annotations, checked for length."""
    joints = np.zeros((len(anns), num_joints, 3), dtype=np.float32)
    for i, ann in enumerate(anns):
        values = ann.get("keypoints")
        numeric = isinstance(values, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if not numeric or len(values) != 3 * num_joints:
            found = f"{len(values)} values" if isinstance(values, list) and numeric else f"{type(values).__name__} {values!r:.60}"
            raise DataFormatError(
                f"{json_path} [annotation {ann.get('id')}]: 'keypoints' must hold {3 * num_joints} numbers "
                f"(x, y, v for {num_joints} joints), got {found}"
            )
        joints[i] = np.asarray(values, dtype=np.float32).reshape(num_joints, 3)
    return joints


def _numbers(value: object, count: int) -> bool:
    """Whether ``value`` is ``count`` finite numbers (a bare number for ``count`` 0)."""
    items = [value] if count == 0 else value if isinstance(value, list) and len(value) == count else None
    return items is not None and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in items
    )


def _check_3d(json_path: Path, anns: list[dict]) -> None:
    """The 3D fields of the original's converted KITTI json: sizes, location, angles, flags."""
    for ann in anns:
        where = f"annotation {ann.get('id')}"
        for field, count, expected in (
            ("dim", 3, "3 finite numbers (h, w, l in metres)"),
            ("location", 3, "3 finite numbers (x, y, z in metres)"),
            ("rotation_y", 0, "a finite number (radians)"),
            ("alpha", 0, "a finite number (radians)"),
        ):
            if field in ann and not _numbers(ann[field], count):
                raise _field_error(json_path, where, field, ann[field], expected)
        if "truncated" in ann and not _numbers(ann["truncated"], 0):
            raise _field_error(json_path, where, "truncated", ann["truncated"], "a finite number")
        occluded = ann.get("occluded", 0)
        if isinstance(occluded, bool) or not isinstance(occluded, (int, float)) or occluded not in (-1, 0, 1, 2, 3):
            raise _field_error(json_path, where, "occluded", occluded, "an integer from -1 to 3")


def _calib(json_path: Path, image: dict) -> np.ndarray:
    """The ``[3, 4]`` camera matrix of an image of a converted KITTI json."""
    value = image.get("calib")
    rows = value if isinstance(value, list) and len(value) == 3 else None
    if rows is None or not all(_numbers(row, 4) for row in rows):
        flat = value if isinstance(value, list) and len(value) == 12 and _numbers(value, 12) else None
        if flat is None:
            raise _field_error(
                json_path, f"image {image['id']}", "calib", value, "the 3x4 camera matrix (3 rows of 4 numbers)"
            )
    return check_calib(json_path, f"image {image['id']}", np.asarray(value, dtype=np.float32).reshape(3, 4))


def _objects_3d(json_path: Path, anns: list[dict], types: list[str]) -> Objects3D:
    _check_3d(json_path, anns)
    try:
        return Objects3D(
            dims=np.array([a["dim"] for a in anns], dtype=np.float64).reshape(-1, 3),
            locations=np.array([a["location"] for a in anns], dtype=np.float64).reshape(-1, 3),
            rotation_y=np.array([a["rotation_y"] for a in anns], dtype=np.float64),
            alpha=np.array([a["alpha"] for a in anns], dtype=np.float64),
            truncation=np.array([a.get("truncated", 0) for a in anns], dtype=np.float64),
            occlusion=np.array([a.get("occluded", 0) for a in anns], dtype=np.int64),
            types=tuple(types),
        )
    except KeyError as error:
        raise DataFormatError(f"{json_path}: a KITTI annotation lacks {error}") from error


def read_coco(
    json_path: str | Path,
    image_dir: str | Path | None = None,
    crowd: FlagPolicy = "train",
) -> DetectionDataset:
    """Reads a COCO instances or person-keypoints json, or the original's converted KITTI json.

    Args:
        json_path: The annotation file.
        image_dir: Folder of the images; guessed from the usual layouts when ``None``.
        crowd: Policy for ``iscrowd`` boxes (``records.FlagPolicy``); ``"train"`` is the original's.

    Returns:
        A data set whose ``category_ids`` are the json's ids in ascending order. Keypoint files
        give ``keypoints [N, K, 3]`` and ``keypoint_names``; KITTI jsons give ``calib`` and
        ``objects_3d`` with the KITTI class rules (``kitti.KITTI_TYPE_RULES``).

    Raises:
        DataFormatError: Unreadable json, missing sections, malformed boxes or keypoints; the
            message names the file and the annotation id.
    """
    json_path = Path(json_path)
    try:
        data = json.loads(json_path.read_text())
        if not isinstance(data, dict):
            raise TypeError(f"the file holds a {type(data).__name__}, not an object")
        images, annotations, categories = data["images"], data["annotations"], data["categories"]
    except (OSError, UnicodeDecodeError) as error:
        raise DataFormatError(f"{json_path}: cannot read the annotation file ({error})") from error
    except json.JSONDecodeError as error:
        raise DataFormatError(f"{json_path}: not valid json ({error})") from error
    except (KeyError, TypeError) as error:
        raise DataFormatError(
            f"{json_path}: not a COCO annotation file (needs 'images', 'annotations' and 'categories' lists; "
            f"{'missing ' if isinstance(error, KeyError) else ''}{error})"
        ) from error
    for key, value in (("images", images), ("annotations", annotations), ("categories", categories)):
        if not isinstance(value, list):
            raise DataFormatError(f"{json_path}: '{key}' must be a list, got {type(value).__name__}")
    _check_categories(json_path, categories)
    _check_images(json_path, images)
    categories = sorted(categories, key=lambda c: c["id"])
    is_kitti = any("calib" in image for image in images)
    keypoint_names = next((tuple(c["keypoints"]) for c in categories if c.get("keypoints")), None)
    report = DataReport()

    if is_kitti:
        type_of_category = {c["id"]: c["name"] for c in categories}
        class_names = KITTI_CLASSES
        category_ids = tuple(next(c["id"] for c in categories if c["name"] == name) for name in class_names)
    else:
        class_names = tuple(c["name"] for c in categories)
        category_ids = tuple(c["id"] for c in categories)
    label_of_category = {cid: i for i, cid in enumerate(category_ids)}

    anns_of_image: dict[int, list[dict]] = {image["id"]: [] for image in images}
    for position, ann in enumerate(annotations):
        if not isinstance(ann, dict):
            raise DataFormatError(f"{json_path} [annotations[{position}]]: expected an object, got {ann!r}")
        _check_annotation(json_path, position, ann, anns_of_image)
        anns_of_image[ann["image_id"]].append(ann)

    if image_dir is not None:
        folder = Path(image_dir)
    else:
        folder = _guess_image_dir(json_path, images[0]["file_name"]) if images else json_path.parent
    records = []
    for image in images:
        path = folder / image["file_name"]
        width, height = (
            (image["width"], image["height"]) if "width" in image and "height" in image else image_size(path)
        )
        anns, labels, ignore, types = [], [], [], []
        for ann in anns_of_image[image["id"]]:
            category = ann.get("category_id")
            if is_kitti:
                rule = kitti_label(type_of_category.get(category, ""), class_names)
            else:
                rule = (label_of_category[category], False) if category in label_of_category else None
            if rule is None:
                report.unknown_category(json_path, image['file_name'], f"category_id {category!r}", f"annotation {ann.get('id')}")
                continue
            anns.append(ann)
            labels.append(rule[0])
            ignore.append(rule[1])
            if is_kitti:
                types.append(type_of_category[category])
        record = ImageRecord.create(
            path=path,
            image_id=image["id"],
            width=width,
            height=height,
            boxes=np.array([_annotation_box(json_path, a) for a in anns], dtype=np.float64).reshape(-1, 4),
            labels=labels,
            annotation_ids=[a.get("id", i) for i, a in enumerate(anns)],
            crowd=[bool(a.get("iscrowd", 0)) for a in anns],
            ignore=ignore,
            keypoints=None if keypoint_names is None else _keypoints(json_path, anns, len(keypoint_names)),
            calib=_calib(json_path, image) if is_kitti else image.get("calib"),
            objects_3d=_objects_3d(json_path, anns, types) if is_kitti else None,
        )
        records.append(validate_record(record, report, json_path, crowd=crowd))
    return DetectionDataset(
        records=records,
        class_names=class_names,
        category_ids=category_ids,
        report=report,
        source=str(json_path),
        keypoint_names=keypoint_names,
    )
