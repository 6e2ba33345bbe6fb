"""A built-in data set that needs no files: coloured shapes on textured backgrounds, drawn from (seed, index).

Each class is one shape in one saturated colour (dark red rectangles, bright green ellipses,
mid blue triangles, with a little colour jitter), 24-120 px, 1-6 per image, never overlapping, on a
smooth low-contrast grey texture with pixel noise. The three colours differ in brightness as well
as hue: with red and blue of equal brightness, a network trained from scratch for minutes often
still scores a red rectangle as a blue triangle too. Boxes are the exact pixel extent of each drawn
shape, so a small network learns the set quickly (the README demo trains ``res_18`` on it on a CPU).

Everything is a pure function of ``(seed, index)``: the layout (for the records) and the pixels
(rendered on demand) use separate generators seeded with ``[seed, index, stream]``, so records are
cheap to build and images are identical on every call, process and platform.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from centernet.data.records import DataReport, DetectionDataset, ImageRecord

SHAPE_CLASSES: tuple[str, ...] = ("rectangle", "ellipse", "triangle")
_COLOURS_BGR = np.array([(20, 20, 160), (90, 230, 110), (240, 140, 30)], dtype=np.int64)
_COLOUR_JITTER = 25
_PLACEMENT_TRIES = 30
_MARGIN = 2  # pixels kept free between shapes, so no two boxes touch
_TEXTURE_GRID = 6  # control points per side of the background's low-frequency texture
_LAYOUT_STREAM, _PIXEL_STREAM = 0, 1


@dataclass(frozen=True)
class ShapeLayout:
    """The objects of one synthetic image.

    Attributes:
        boxes: ``int64 [N, 4]`` ``(x1, y1, x2, y2)`` pixel extent, ``x2`` / ``y2`` exclusive.
        labels: ``int64 [N]`` index into ``SHAPE_CLASSES``.
        colours: ``int64 [N, 3]`` BGR fill colour.
        apex: ``int64 [N]`` x of a triangle's top vertex (unused for other shapes).
    """

    boxes: np.ndarray
    labels: np.ndarray
    colours: np.ndarray
    apex: np.ndarray


@dataclass(frozen=True)
class SyntheticShapes:
    """The generator: a callable that renders a record's image, usable as ``image_source``.

    Attributes:
        seed: Selects the whole data set.
        height: Image height in pixels.
        width: Image width in pixels.
        min_objects: Fewest objects per image (fewer only when no free space is found).
        max_objects: Most objects per image.
        min_size: Smallest side of a shape, pixels.
        max_size: Largest side of a shape, pixels (capped at half the image's smaller side).
    """

    seed: int = 0
    height: int = 320
    width: int = 320
    min_objects: int = 1
    max_objects: int = 6
    min_size: int = 24
    max_size: int = 120

    def layout(self, index: int) -> ShapeLayout:
        """Places the shapes of image ``index``: random class, size and position, no overlaps."""
        rng = np.random.default_rng([self.seed, index, _LAYOUT_STREAM])
        largest = max(self.min_size, min(self.max_size, min(self.height, self.width) // 2))
        count = int(rng.integers(self.min_objects, self.max_objects + 1))
        boxes, labels, colours, apex = [], [], [], []
        for _ in range(count):
            for _ in range(_PLACEMENT_TRIES):
                label = int(rng.integers(len(SHAPE_CLASSES)))
                w, h = (int(v) for v in rng.integers(self.min_size, largest + 1, size=2))
                x1, y1 = int(rng.integers(0, self.width - w + 1)), int(rng.integers(0, self.height - h + 1))
                box = (x1, y1, x1 + w, y1 + h)
                if all(_apart(box, other) for other in boxes):
                    boxes.append(box)
                    labels.append(label)
                    colours.append(
                        np.clip(_COLOURS_BGR[label] + rng.integers(-_COLOUR_JITTER, _COLOUR_JITTER + 1, 3), 0, 255)
                    )
                    apex.append(int(rng.integers(x1, x1 + w)))
                    break
        return ShapeLayout(
            boxes=np.array(boxes, dtype=np.int64).reshape(-1, 4),
            labels=np.array(labels, dtype=np.int64),
            colours=np.array(colours, dtype=np.int64).reshape(-1, 3),
            apex=np.array(apex, dtype=np.int64),
        )

    def render(self, index: int) -> np.ndarray:
        """BGR ``uint8 [height, width, 3]`` pixels of image ``index``."""
        rng = np.random.default_rng([self.seed, index, _PIXEL_STREAM])
        grid = rng.random((_TEXTURE_GRID, _TEXTURE_GRID, 3)).astype(np.float32)
        texture = cv2.resize(grid, (self.width, self.height), interpolation=cv2.INTER_CUBIC)
        grey = texture.mean(axis=2, keepdims=True)
        tone = rng.uniform(90.0, 150.0)
        background = tone + 60.0 * (0.75 * grey + 0.25 * texture - 0.5)
        image = np.clip(background, 0, 255).astype(np.uint8)
        layout = self.layout(index)
        for (x1, y1, x2, y2), label, colour, apex in zip(layout.boxes, layout.labels, layout.colours, layout.apex):
            _draw_shape(
                image,
                SHAPE_CLASSES[label],
                (int(x1), int(y1), int(x2) - 1, int(y2) - 1),
                tuple(int(c) for c in colour),
                int(apex),
            )
        noise = 5.0 * rng.standard_normal(size=image.shape, dtype=np.float32)
        return np.clip(image + noise, 0, 255).astype(np.uint8)

    def __call__(self, record: ImageRecord) -> np.ndarray:
        """Renders a record of this generator (``image_id`` = index + 1)."""
        return self.render(record.image_id - 1)

    def record(self, index: int) -> ImageRecord:
        """The record of image ``index`` (boxes as ``float32`` pixel extents)."""
        layout = self.layout(index)
        return ImageRecord.create(
            path=Path(f"synthetic-seed{self.seed}") / f"{index:06d}.png",
            image_id=index + 1,
            width=self.width,
            height=self.height,
            boxes=layout.boxes,
            labels=layout.labels,
        )


def _apart(box: tuple[int, int, int, int], other: tuple[int, int, int, int]) -> bool:
    """Whether two ``xyxy`` boxes are at least ``_MARGIN`` pixels apart on some axis."""
    return (
        box[0] >= other[2] + _MARGIN
        or other[0] >= box[2] + _MARGIN
        or box[1] >= other[3] + _MARGIN
        or other[1] >= box[3] + _MARGIN
    )


def _draw_shape(
    image: np.ndarray, shape: str, corners: tuple[int, int, int, int], colour: tuple[int, ...], apex: int
) -> None:
    """Fills one shape exactly covering the inclusive pixel rectangle ``corners``."""
    x1, y1, x2, y2 = corners
    if shape == "rectangle":
        cv2.rectangle(image, (x1, y1), (x2, y2), colour, thickness=-1)
    elif shape == "ellipse":
        # Drawn through fillPoly with 4x sub-pixel precision so even sides fit exactly.
        shift = 2
        points = cv2.ellipse2Poly(((x1 + x2) * 2, (y1 + y2) * 2), ((x2 - x1) * 2, (y2 - y1) * 2), 0, 0, 360, 2)
        cv2.fillPoly(image, [points], colour, lineType=cv2.LINE_8, shift=shift)
    else:
        cv2.fillPoly(image, [np.array([(apex, y1), (x1, y2), (x2, y2)], dtype=np.int32)], colour, lineType=cv2.LINE_8)


def synthetic_dataset(
    num_images: int = 256,
    image_size: int | tuple[int, int] = 320,
    seed: int = 0,
    min_objects: int = 1,
    max_objects: int = 6,
    min_size: int = 24,
    max_size: int = 120,
) -> DetectionDataset:
    """The synthetic shapes data set; images are rendered when ``load_image`` asks for them.

    Args:
        num_images: Number of images.
        image_size: Side of square images, or ``(height, width)``.
        seed: Selects the data set; use different seeds for training and validation.
        min_objects: Fewest shapes per image.
        max_objects: Most shapes per image.
        min_size: Smallest shape side, pixels.
        max_size: Largest shape side, pixels.
    """
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    generator = SyntheticShapes(seed, height, width, min_objects, max_objects, min_size, max_size)
    return DetectionDataset(
        records=[generator.record(index) for index in range(num_images)],
        class_names=SHAPE_CLASSES,
        report=DataReport(),
        source=f"synthetic(seed={seed}, images={num_images}, size={height}x{width})",
        image_source=generator,
    )
