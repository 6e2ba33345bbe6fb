"""PASCAL VOC xml folders: the standard layout and the flat one of many small data sets.

Layouts (the first folder found wins):

* annotations: ``Annotations/`` or ``annotations/``;
* images: ``JPEGImages/`` or ``images/`` (file from the xml's ``<filename>``, else ``<stem>.*``);
* split: ``ImageSets/Main/<split>.txt`` or ``<split>.txt`` (one xml stem per line); a split
  that is in neither is an error naming the splits there are; ``None`` or ``"all"`` reads every
  xml file.

Corners are kept as written (VOC's 1-based pixel indices, no ``-1``), the way COCO conversions such
as the raccoon set's json take them. Image sizes come from the image file; a different ``<size>``
in the xml is reported. ``difficult`` objects follow a ``FlagPolicy`` (default: ordinary training
objects keeping their flag; the VOC metric ignores them at evaluation).
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from pathlib import Path

from centernet.data.image_io import image_size
from centernet.data.records import (
    WHOLE_SET,
    DataFormatError,
    DataReport,
    DetectionDataset,
    FlagPolicy,
    ImageRecord,
    missing_split_error,
)
from centernet.data.validation import validate_record

_ANNOTATION_DIRS = ("Annotations", "annotations")
_IMAGE_DIRS = ("JPEGImages", "images")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".JPG", ".JPEG", ".PNG")


def find_voc_folders(root: str | Path) -> tuple[Path, Path] | None:
    """``(annotation folder, image folder)`` of a VOC-style folder, or ``None``."""
    root = Path(root)
    annotations = next((root / d for d in _ANNOTATION_DIRS if (root / d).is_dir()), None)
    images = next((root / d for d in _IMAGE_DIRS if (root / d).is_dir()), None)
    if annotations is None or images is None or not any(annotations.glob("*.xml")):
        return None
    return annotations, images


def voc_splits(root: Path) -> list[str]:
    """Split names a VOC folder offers (``ImageSets/Main/*.txt``, ``*.txt`` beside the folders).

    VOC's per-class lists (``aeroplane_train.txt``) are left out where their split is listed itself.
    """
    names = {p.stem for folder in (root / "ImageSets" / "Main", root) for p in folder.glob("*.txt")}
    return sorted(n for n in names if n.rpartition("_")[2] not in names or "_" not in n)


def _split_stems(root: Path, split: str) -> list[str]:
    """The xml stems a split file lists (its first column), or the error naming the splits there are."""
    candidates = (root / "ImageSets" / "Main" / f"{split}.txt", root / f"{split}.txt")
    split_file = next((f for f in candidates if f.is_file()), None)
    if split_file is None:
        raise missing_split_error(root, split, " or ".join(str(f) for f in candidates), voc_splits(root))
    return [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]


def _text(element: ElementTree.Element, tag: str, xml_path: Path, where: str) -> str:
    child = element.find(tag)
    if child is None or child.text is None:
        raise DataFormatError(f"{xml_path} [{where}]: missing <{tag}>")
    return child.text.strip()


def _parse_xml(xml_path: Path) -> tuple[ElementTree.Element, list[tuple[str, list[float], bool]]]:
    """The xml root and its objects as ``(name, [x1, y1, x2, y2], difficult)``."""
    try:
        root = ElementTree.parse(xml_path).getroot()
    except (ElementTree.ParseError, OSError) as error:
        raise DataFormatError(f"{xml_path}: not a readable VOC xml file ({error})") from error
    if root.tag != "annotation":
        raise DataFormatError(f"{xml_path}: the root element is <{root.tag}>, expected <annotation> (a VOC annotation file)")
    objects = []
    for number, element in enumerate(root.iter("object"), start=1):
        where = f"object {number}"
        box = element.find("bndbox")
        if box is None:
            raise DataFormatError(f"{xml_path} [{where}]: missing <bndbox>")
        corners = []
        for tag in ("xmin", "ymin", "xmax", "ymax"):
            text = _text(box, tag, xml_path, where)
            try:
                corners.append(float(text))
            except ValueError:
                raise DataFormatError(f"{xml_path} [{where}]: <{tag}> is {text!r:.40}, expected a number (a box corner in pixels)") from None
        difficult = element.findtext("difficult", default="0").strip()
        if difficult not in ("0", "1", ""):
            raise DataFormatError(f"{xml_path} [{where}]: <difficult> is {difficult!r:.40}, expected 0 or 1")
        name = _text(element, "name", xml_path, where)
        if not name:
            raise DataFormatError(f"{xml_path} [{where}]: <name> is empty, expected the object's class name")
        objects.append((name, corners, difficult == "1"))
    return root, objects


def _image_path(image_dir: Path, xml_root: ElementTree.Element, stem: str, xml_path: Path) -> Path:
    file_name = xml_root.findtext("filename", default="").strip()
    if file_name and (image_dir / file_name).is_file():
        return image_dir / file_name
    for suffix in _IMAGE_SUFFIXES:
        if (image_dir / f"{stem}{suffix}").is_file():
            return image_dir / f"{stem}{suffix}"
    raise DataFormatError(f"{xml_path}: its image ({file_name or stem + '.*'}) is not in {image_dir}")


def read_voc(
    root: str | Path,
    split: str | None = None,
    class_names: Sequence[str] | None = None,
    difficult: FlagPolicy = "train",
) -> DetectionDataset:
    """Reads a folder of VOC xml annotations.

    Args:
        root: The folder holding the annotation and image folders (see the module docstring).
        split: Split file name without ``.txt``; ``None`` or ``"all"`` reads every xml file.
        class_names: Classes in label order; ``None``: every name found, sorted (for VOC this
            is the original's 20-class order). Objects of other names are skipped and reported.
        difficult: Policy for ``<difficult>1</difficult>`` objects.

    Returns:
        Records in split-file (or sorted file name) order with ``image_id`` = position + 1 and
        ``category_ids`` ``1..C``.

    Raises:
        DataFormatError: Not a VOC folder, a split with no split file (naming those there are), or
            an unreadable xml file.
    """
    root = Path(root)
    folders = find_voc_folders(root)
    if folders is None:
        raise DataFormatError(
            f"{root}: not a VOC folder (expected Annotations/ or annotations/ with xml files, "
            "and JPEGImages/ or images/)"
        )
    annotation_dir, image_dir = folders
    report = DataReport()
    stems = sorted(p.stem for p in annotation_dir.glob("*.xml"))
    if split not in (None, WHOLE_SET):
        stems = _split_stems(root, split)
    parsed = []
    for stem in stems:
        xml_path = annotation_dir / f"{stem}.xml"
        if not xml_path.is_file():
            raise DataFormatError(f"{xml_path}: listed in the split but not found")
        parsed.append((xml_path, *_parse_xml(xml_path)))
    if class_names is None:
        class_names = sorted({name for _, _, objects in parsed for name, _, _ in objects})
    label_of_name = {name: i for i, name in enumerate(class_names)}

    records = []
    for index, (xml_path, xml_root, objects) in enumerate(parsed):
        path = _image_path(image_dir, xml_root, xml_path.stem, xml_path)
        width, height = image_size(path)
        written = tuple(xml_root.findtext(f"size/{side}", default="0").strip() for side in ("width", "height"))
        if written != ("0", "0") and written != (str(width), str(height)):
            report.add(
                "size_mismatch",
                xml_path,
                f"image {path.name}: <size> says {'x'.join(written)}, the image is {width}x{height}",
            )
        known = []
        for number, (name, corners, is_difficult) in enumerate(objects, start=1):
            if name not in label_of_name:
                report.unknown_category(xml_path, path.name, f"class {name!r}", f"object {number}")
                continue
            known.append((number, label_of_name[name], corners, is_difficult))
        record = ImageRecord.create(
            path=path,
            image_id=index + 1,
            width=width,
            height=height,
            boxes=[corners for _, _, corners, _ in known],
            labels=[label for _, label, _, _ in known],
            annotation_ids=[number for number, _, _, _ in known],
            difficult=[d for _, _, _, d in known],
        )
        records.append(validate_record(record, report, xml_path, object_kind="object", difficult=difficult))
    return DetectionDataset(
        records=records,
        class_names=tuple(class_names),
        report=report,
        source=str(root),
    )
