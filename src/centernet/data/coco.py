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
        f"{json_path}: cannot find the folder of its images (looked for {file_name} in "
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
            raise DataFormatError(f"{json_path} [images[{position}]]: an image needs 'id' and 'file_name', got {image!r}")
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


def _keypoints(json_path: Path, anns: list[dict], num_joints: int) -> np.ndarray:
    """``float32 [N, num_joints, 3]`` joints of the annotations, checked for length."""
    joints = np.zeros((len(anns), num_joints, 3), dtype=np.float32)
    for i, ann in enumerate(anns):
        values = ann.get("keypoints")
        if values is None or len(values) != 3 * num_joints:
            raise DataFormatError(
                f"{json_path} [annotation {ann.get('id')}]: 'keypoints' must hold {3 * num_joints} numbers "
                f"(x, y, v for {num_joints} joints), got {None if values is None else len(values)}"
            )
        joints[i] = np.asarray(values, dtype=np.float32).reshape(num_joints, 3)
    return joints


def _objects_3d(json_path: Path, anns: list[dict], types: list[str]) -> Objects3D:
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
    if any(not isinstance(c, dict) or "id" not in c or "name" not in c for c in categories):
        raise DataFormatError(f"{json_path}: every category needs an 'id' and a 'name'")
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
        if ann.get("image_id") not in anns_of_image:
            raise DataFormatError(
                f"{json_path} [annotation {ann.get('id')}]: image_id {ann.get('image_id')!r} is not in 'images'"
            )
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
            calib=image.get("calib"),
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
