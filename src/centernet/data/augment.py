"""Training augmentation: the random window (crop or shift/scale), the flip, the colour jitter.

Training jitters the letterbox window of ``data.transforms`` (random crop or shift/scale), mirrors
the image with probability 0.5, then jitters colours (brightness, contrast, saturation in a random
order, then PCA lighting). Which of these steps a training sample goes through, and in which order
their random numbers are drawn, is decided by its task (``Task.augment``);
``TrainAugmentation`` holds the amplitudes and the steps.

Every random draw goes through an ``AugmentRandom`` so that a data loader can seed one per worker
and tests can replay the original's recorded draws one by one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import cv2
import numpy as np

from centernet.config import Config
from centernet.data.geometry import ImageMeta
from centernet.data.transforms import InputSpec, padded_size

# PCA of COCO pixel colours (BGR, 0..1), for the lighting jitter.
COCO_EIGEN_VALUES = np.array([0.2141788, 0.01817699, 0.00341571], dtype=np.float32)


COCO_EIGEN_VECTORS = np.array(
    [
        [-0.58752847, -0.69563484, 0.41340352],
        [-0.5832747, 0.00994535, -0.81221408],
        [-0.56089297, 0.71832671, 0.41158938],
    ],
    dtype=np.float32,
)


CROP_SCALES = np.arange(0.6, 1.4, 0.1)  # random-crop zoom factors 0.6 .. 1.3 (float steps as the original)


CROP_BORDER = 128  # pixels kept between a random crop's centre and the image border


COLOR_JITTER = 0.4  # brightness / contrast / saturation factors in 1 +- 0.4


LIGHTING_STD = 0.1


COLOR_OPS = ("brightness", "contrast", "saturation")


class AugmentRandom(Protocol):
    """The random draws of the original's augmentation, one method per kind of draw.

    The original takes them from three generators (numpy's global state, Python's ``random``
    and the data set's own ``RandomState``); the call order is fixed by each task's ``Task.augment``.
    """

    def choice(self, options: np.ndarray) -> float:
        """One of ``options``, uniformly."""

    def randint(self, low: int, high: int) -> int:
        """An integer in ``[low, high)``."""

    def random(self) -> float:
        """A float in ``[0, 1)``."""

    def randn(self) -> float:
        """A standard normal float."""

    def shuffle(self, names: list[str]) -> None:
        """Shuffle ``names`` in place (order of the colour operations)."""

    def uniform(self, low: float, high: float) -> float:
        """A float in ``[low, high)`` (colour factors)."""

    def normal(self, scale: float, size: int) -> np.ndarray:
        """``size`` normal floats with standard deviation ``scale`` (lighting), float64."""


class NumpyAugmentRandom:
    """``AugmentRandom`` backed by one ``numpy.random.Generator`` (seed it per worker).

    Args:
        seed: a ``Generator`` to draw from, or a seed for a new one (``None``: fresh entropy).
    """

    def __init__(self, seed: np.random.Generator | int | np.random.SeedSequence | None = None) -> None:
        self._rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)

    def choice(self, options: np.ndarray) -> float:
        return options[self._rng.integers(len(options))]

    def randint(self, low: int, high: int) -> int:
        return int(self._rng.integers(low, high))

    def random(self) -> float:
        return float(self._rng.random())

    def randn(self) -> float:
        return float(self._rng.standard_normal())

    def shuffle(self, names: list[str]) -> None:
        self._rng.shuffle(names)

    def uniform(self, low: float, high: float) -> float:
        return float(self._rng.uniform(low, high))

    def normal(self, scale: float, size: int) -> np.ndarray:
        return self._rng.normal(scale=scale, size=size)


def crop_border(border: int, size: int) -> int:
    """Margin kept between a random-crop centre and the image border (the original's ``_get_border``).

    Halves ``border`` until the centre range ``[border, size - border)`` is non-empty.
    """
    i = 1
    while size - border // i <= border // i:
        i *= 2
    return border // i


def color_augment(
    image: np.ndarray,
    rng: AugmentRandom,
    eigen_values: np.ndarray = COCO_EIGEN_VALUES,
    eigen_vectors: np.ndarray = COCO_EIGEN_VECTORS,
) -> None:
    """Brightness, contrast and saturation jitter in random order, then PCA lighting; in place.

    Args:
        image: ``[H, W, 3]`` float32 BGR image in 0..1 (modified in place; not clipped, as the original).
        rng: random source (one shuffle, three uniform factors, one 3-vector of normals).
        eigen_values, eigen_vectors: PCA of the data set's colours (BGR).
    """
    order = list(COLOR_OPS)
    rng.shuffle(order)
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    gray_mean = gray.mean()
    for op in order:
        alpha = 1.0 + rng.uniform(-COLOR_JITTER, COLOR_JITTER)
        image *= alpha
        if op == "contrast":
            image += gray_mean * (1 - alpha)
        elif op == "saturation":
            image += gray[:, :, None] * (1 - alpha)
    lighting = rng.normal(LIGHTING_STD, 3)
    image += np.dot(eigen_vectors, eigen_values * lighting)


@dataclass(frozen=True)
class AugmentedImage:
    """One training image after augmentation: the network input, its window and the warped pixels.

    Attributes:
        input: ``[3, h, w]`` float32 normalised network input (after colour jitter).
        meta: the window that cut it out (mirroring, rotation and augmentation flags included).
        warped: ``[h, w, 3]`` uint8 BGR result of the warp, before colour jitter and normalisation.
    """

    input: np.ndarray
    meta: ImageMeta
    warped: np.ndarray


@dataclass
class TrainAugmentation:
    """The original's training-time augmentation settings and the steps they parametrise.

    Each task composes these steps into its own training-sample pipeline
    (``Task.augment``): which steps apply and in which order the random numbers are drawn is
    the task's; the amplitudes are here. Field names follow ``centernet.config.AugmentConfig``.

    Attributes:
        spec: input size, padding and normalisation.
        random_crop: zoom by one of 0.6..1.3 around a random centre at least ``CROP_BORDER``
            (halved for small images) from the borders; ``False``: shift the centre by ``shift``
            and zoom by ``scale`` (normal draws clipped at 2 sigma for the shift, at ``1 +- scale``
            for the zoom).
        scale, shift: jitter amplitudes for ``random_crop = False`` and for the 3D augmentation.
        flip: probability of mirroring the image.
        color: colour jitter + PCA lighting.
        rotate: rotation amplitude in degrees (normal, clipped at 2 sigma), applied with
            probability ``rotate_prob`` (the original pose data set's ``--rotate`` / ``--aug_rot``).
        aug_ddd: probability that a 3D sample is scaled and shifted (the original's ``--aug_ddd``).
        eigen_values, eigen_vectors: colour PCA (BGR) for the lighting jitter.
    """

    spec: InputSpec = field(default_factory=InputSpec)
    random_crop: bool = True
    scale: float = 0.4
    shift: float = 0.1
    flip: float = 0.5
    color: bool = True
    rotate: float = 0.0
    rotate_prob: float = 0.0
    aug_ddd: float = 0.5
    eigen_values: np.ndarray = field(default_factory=lambda: COCO_EIGEN_VALUES.copy())
    eigen_vectors: np.ndarray = field(default_factory=lambda: COCO_EIGEN_VECTORS.copy())

    @classmethod
    def from_config(cls, cfg: Config) -> TrainAugmentation:
        """The augmentation of an experiment config (``augment.*`` and ``data.*``)."""
        aug = cfg.augment
        return cls(
            spec=InputSpec.from_config(cfg),
            random_crop=aug.random_crop,
            scale=aug.scale,
            shift=aug.shift,
            flip=aug.flip,
            color=aug.color,
            rotate=aug.rotate,
            rotate_prob=aug.rotate_probability(),
            aug_ddd=aug.aug_ddd,
        )

    # ------------------------------------------------------------------ windows
    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """Network input ``(h, w)`` for a source image: fixed, or the padded image (keep-res)."""
        if self.spec.input_hw is None:
            return padded_size(height, self.spec.pad), padded_size(width, self.spec.pad)
        return self.spec.input_hw

    def square_window(self, height: int, width: int) -> tuple[np.ndarray, float | np.ndarray]:
        """The un-augmented 2D / pose window: float32 centre, the longer side (keep-res: the input)."""
        center = np.array([width / 2.0, height / 2.0], dtype=np.float32)
        if self.spec.input_hw is None:
            inp_h, inp_w = self.input_size(height, width)
            return center, np.array([inp_w, inp_h], dtype=np.float32)
        return center, max(height, width) * 1.0

    def jitter_window(
        self, center: np.ndarray, window: float | np.ndarray, height: int, width: int, rng: AugmentRandom
    ) -> float | np.ndarray:
        """Random crop or shift/scale of a 2D / pose window; ``center`` (float32) moves in place.

        Random crop draws ``choice`` (zoom), ``randint`` (x), ``randint`` (y); shift/scale draws
        ``randn`` x3 (x shift, y shift, zoom; the shifts relative to the unzoomed window).

        Returns:
            The new window (float64, as numpy's promotion gives it).
        """
        if self.random_crop:
            # A float64 zoom, as numpy's choice returns it, keeps a float32 window's type promotion.
            window = window * np.float64(rng.choice(CROP_SCALES))
            w_border = crop_border(CROP_BORDER, width)
            h_border = crop_border(CROP_BORDER, height)
            center[0] = rng.randint(w_border, width - w_border)
            center[1] = rng.randint(h_border, height - h_border)
            return window
        center += window * np.clip(np.array([rng.randn(), rng.randn()]) * self.shift, -2 * self.shift, 2 * self.shift)
        return window * np.clip(rng.randn() * self.scale + 1, 1 - self.scale, 1 + self.scale)

    def draw_rotation(self, rng: AugmentRandom) -> float:
        """The pose rotation: one ``random`` test always, one ``randn`` angle (degrees) when it fires."""
        if rng.random() < self.rotate_prob:
            return float(np.clip(rng.randn() * self.rotate, -2 * self.rotate, 2 * self.rotate))
        return 0.0

    def draw_flip(self, rng: AugmentRandom) -> bool:
        """One ``random`` draw: mirror the image iff it is below ``flip``."""
        return rng.random() < self.flip

    def frame_window(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """The un-augmented 3D window: float64 centre and int32 ``(w, h)`` (keep-res: the input size)."""
        center = np.array([width / 2.0, height / 2.0])
        if self.spec.input_hw is None:
            inp_h, inp_w = self.input_size(height, width)
            return center, np.array([inp_w, inp_h], dtype=np.int32)
        return center, np.array([width, height], dtype=np.int32)

    def jitter_frame(
        self, center: np.ndarray, window: np.ndarray, height: int, width: int, rng: AugmentRandom
    ) -> tuple[bool, np.ndarray]:
        """The 3D augmentation: ``random`` test against ``aug_ddd``; when it fires ``randn`` x3.

        Zoom first (both sides by one factor), then the centre shifts by the image's width and
        height (not by the window), as the original's KITTI data set; ``center`` moves in place.

        Returns:
            ``(augmented, window)``.
        """
        if not rng.random() < self.aug_ddd:
            return False, window
        window = window * np.clip(rng.randn() * self.scale + 1, 1 - self.scale, 1 + self.scale)
        center[0] += width * np.clip(rng.randn() * self.shift, -2 * self.shift, 2 * self.shift)
        center[1] += height * np.clip(rng.randn() * self.shift, -2 * self.shift, 2 * self.shift)
        return True, window

    # ------------------------------------------------------------------ pixels
    def render(
        self,
        image: np.ndarray,
        center: np.ndarray,
        window: float | np.ndarray,
        rng: AugmentRandom,
        rot: float = 0.0,
        flipped: bool = False,
        color: bool = True,
        augmented: bool = False,
    ) -> AugmentedImage:
        """Mirror (``flipped``: ``center`` is moved here), warp, colour-jitter (``color`` and
        ``self.color``) and normalise one image.

        Args:
            image: ``[H, W, 3]`` uint8 BGR source image, not mirrored.
            center, window: the (augmented) window in source pixels, before mirroring.
            rng: random source of the colour jitter.
            rot: rotation of the input in degrees.
            flipped: mirror the image first.
            color: whether this task jitters colours at all.
            augmented: recorded in the meta (3D: the sample was scaled / shifted).
        """
        height, width = image.shape[:2]
        inp_h, inp_w = self.input_size(height, width)
        if flipped:
            image = image[:, ::-1, :]
            center[0] = width - center[0] - 1
        meta = ImageMeta(
            center=center,
            scale=window,
            input_hw=(inp_h, inp_w),
            output_hw=(inp_h // self.spec.down_ratio, inp_w // self.spec.down_ratio),
            image_hw=(height, width),
            rot=rot,
            flipped=flipped,
            augmented=augmented,
        )
        warped = cv2.warpAffine(image, meta.input_transform(), (inp_w, inp_h), flags=cv2.INTER_LINEAR)
        pixels = warped.astype(np.float32) / 255.0
        if color and self.color:
            color_augment(pixels, rng, self.eigen_values, self.eigen_vectors)
        return AugmentedImage(self.spec.normalize(pixels), meta, warped)
