"""Inference input: the letterbox window, the warp onto the network input, normalisation.

An image is cut out of its source by ONE affine warp (``cv2.warpAffine``, bilinear, black
border) of a window ``(center, scale)`` onto the network input; the same window maps annotations
onto the output map (``ImageMeta.output_transform``). Test time uses a fixed window (letterbox,
"fix-res", or the padded full image, "keep-res"); training jitters it (``data.augment``).
``InputSpec`` holds the input size, padding and the normalisation statistics.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from centernet.config import COCO_MEAN_BGR, COCO_STD_BGR, Config
from centernet.data.geometry import ImageMeta

DOWN_RATIO = 4  # every CenterNet network predicts at stride 4


def padded_size(size: int, pad: int) -> int:
    """Smallest multiple of ``pad + 1`` above ``size`` (``(size | pad) + 1``; ``pad`` = 2^k - 1).

    Note an exact multiple still grows by a full step, as in the original.
    """
    return (size | pad) + 1


def inference_meta(
    height: int,
    width: int,
    input_hw: tuple[int, int] | None = (512, 512),
    scale: float = 1.0,
    pad: int = 31,
    down_ratio: int = DOWN_RATIO,
) -> ImageMeta:
    """Test-time window of an image (the original detector's ``pre_process``).

    Args:
        height, width: source image size in pixels (before the test scale).
        input_hw: network input ``(height, width)`` for fix-res letterboxing, or ``None`` for
            keep-res (the scaled image padded to a multiple of ``pad + 1``).
        scale: test scale; the image is first resized to ``int(height * scale)`` x
            ``int(width * scale)`` (see ``warp_to_input``).
        pad: ``31`` (multiple of 32), ``127`` for Hourglass.
        down_ratio: output stride of the network.

    Returns:
        The meta; ``image_hw`` is the size of the resized image the window refers to. In fix-res
        the window is ``max(height, width)`` of the UNSCALED image centred on the scaled one (as the
        original, which makes a test scale zoom the content).
    """
    new_h, new_w = int(height * scale), int(width * scale)
    if input_hw is not None:
        center = np.array([new_w / 2.0, new_h / 2.0], dtype=np.float32)
        window: float | np.ndarray = max(height, width) * 1.0
        inp_h, inp_w = input_hw
    else:
        inp_h, inp_w = padded_size(new_h, pad), padded_size(new_w, pad)
        center = np.array([new_w // 2, new_h // 2], dtype=np.float32)
        window = np.array([inp_w, inp_h], dtype=np.float32)
    return ImageMeta(
        center=center,
        scale=window,
        input_hw=(inp_h, inp_w),
        output_hw=(inp_h // down_ratio, inp_w // down_ratio),
        image_hw=(new_h, new_w),
    )


def warp_to_input(image: np.ndarray, meta: ImageMeta) -> np.ndarray:
    """Resize ``image`` to ``meta.image_hw`` if needed, then warp it onto the network input.

    Args:
        image: ``[H, W, 3]`` uint8 (or float) image.
        meta: its window.

    Returns:
        ``[input_h, input_w, 3]`` image of the same dtype (bilinear, black outside the source).
    """
    new_h, new_w = meta.image_hw
    if image.shape[:2] != (new_h, new_w):
        image = cv2.resize(image, (new_w, new_h))
    inp_h, inp_w = meta.input_hw
    return cv2.warpAffine(image, meta.input_transform(), (inp_w, inp_h), flags=cv2.INTER_LINEAR)


@dataclass(frozen=True)
class InputSpec:
    """How a BGR image becomes a network input: size, padding, normalisation, channel order.

    Attributes:
        input_hw: network input ``(height, width)`` (fix-res letterbox), ``None`` for keep-res.
        pad: keep-res padding ``2^k - 1``: 31 (multiple of 32), 127 for Hourglass.
        mean, std: per-channel normalisation of 0..1 pixels, in ``channel_order``.
        channel_order: ``"bgr"`` (the original's, images as OpenCV reads them) or ``"rgb"``.
        down_ratio: output stride of the network.
    """

    input_hw: tuple[int, int] | None = (512, 512)
    pad: int = 31
    mean: tuple[float, ...] = COCO_MEAN_BGR
    std: tuple[float, ...] = COCO_STD_BGR
    channel_order: str = "bgr"
    down_ratio: int = DOWN_RATIO

    def __post_init__(self) -> None:
        if self.channel_order not in ("bgr", "rgb"):
            raise ValueError(f"channel_order must be 'bgr' or 'rgb', not {self.channel_order!r}")

    @classmethod
    def from_config(cls, cfg: Config) -> InputSpec:
        """The input side of an experiment config (``data.*``; Hourglass pads to 128)."""
        return cls(
            input_hw=None if cfg.data.keep_res else (int(cfg.data.input_size[0]), int(cfg.data.input_size[1])),
            pad=keep_res_pad(cfg.model.arch),
            mean=tuple(cfg.data.mean),
            std=tuple(cfg.data.std),
            channel_order=cfg.data.channel_order,
        )

    def meta(self, height: int, width: int, scale: float = 1.0) -> ImageMeta:
        """Test-time window of a ``height x width`` image at a test ``scale``."""
        return inference_meta(height, width, self.input_hw, scale, self.pad, self.down_ratio)

    def batch_metas(self, sizes: list[tuple[int, int]]) -> list[ImageMeta]:
        """Windows of images of different ``(height, width)`` sharing one input canvas.

        Fix-res: every image gets its own letterbox onto ``input_hw``. Keep-res: the canvas is the
        largest padded size of the batch and each image sits at its centre, unscaled (for a single
        image this is exactly the original's keep-res window).
        """
        if self.input_hw is not None:
            return [self.meta(h, w) for h, w in sizes]
        canvas_h = max(padded_size(h, self.pad) for h, _ in sizes)
        canvas_w = max(padded_size(w, self.pad) for _, w in sizes)
        return [
            ImageMeta(
                center=np.array([w // 2, h // 2], dtype=np.float32),
                scale=np.array([canvas_w, canvas_h], dtype=np.float32),
                input_hw=(canvas_h, canvas_w),
                output_hw=(canvas_h // self.down_ratio, canvas_w // self.down_ratio),
                image_hw=(h, w),
            )
            for h, w in sizes
        ]

    def _channels(self, image: np.ndarray) -> np.ndarray:
        return image[:, :, ::-1] if self.channel_order == "rgb" else image

    def _statistics(self) -> tuple[np.ndarray, np.ndarray]:
        shape = (1, 1, 3)
        return np.asarray(self.mean, np.float32).reshape(shape), np.asarray(self.std, np.float32).reshape(shape)

    def normalize(self, image: np.ndarray) -> np.ndarray:
        """``[H, W, 3]`` float32 BGR image in 0..1 -> ``[3, H, W]`` float32 network input.

        Float32 maths, as the original's data sets (training and validation targets).
        """
        mean, std = self._statistics()
        return np.ascontiguousarray(((self._channels(image) - mean) / std).transpose(2, 0, 1))

    def normalize_uint8(self, image: np.ndarray) -> np.ndarray:
        """``[H, W, 3]`` uint8 BGR image -> ``[3, H, W]`` float32 network input.

        Normalised in float64 then rounded to float32, as the original detector's ``pre_process``:
        the 256 possible results per channel are computed so once (``uint8_lookup``) and looked up,
        bit-equal and about 5x faster than the arithmetic on every pixel.
        """
        table = uint8_lookup(tuple(self.mean), tuple(self.std))
        network_input = np.empty((3, *image.shape[:2]), np.float32)
        for channel, source in enumerate(self._sources()):
            np.take(table[channel], image[:, :, source], out=network_input[channel])
        return network_input

    def normalize_uint8_tensor(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, 3]`` uint8 BGR images on any device -> ``[B, 3, H, W]`` float32 network inputs.

        The same lookup table as ``normalize_uint8``, indexed on the images' device, so the two are
        bit-equal by construction. Lets a GPU receive 8-bit pixels, a quarter of the float32 traffic.
        """
        table = torch.tensor(uint8_lookup(tuple(self.mean), tuple(self.std)), device=images.device)
        pixels = images.long()
        return torch.stack([table[channel][pixels[..., source]] for channel, source in enumerate(self._sources())], dim=1)

    def _sources(self) -> tuple[int, int, int]:
        """The BGR image channel each network input channel is read from."""
        return (2, 1, 0) if self.channel_order == "rgb" else (0, 1, 2)

    def warped_input(self, image: np.ndarray, scale: float = 1.0) -> tuple[np.ndarray, ImageMeta]:
        """A uint8 BGR image cut out onto the network input, before normalisation: ``([h, w, 3] uint8, meta)``."""
        meta = self.meta(image.shape[0], image.shape[1], scale)
        return warp_to_input(image, meta), meta

    def inference_input(self, image: np.ndarray, scale: float = 1.0) -> tuple[np.ndarray, ImageMeta]:
        """A uint8 BGR image as the original detector feeds it: ``([3, h, w] float32, meta)``."""
        warped, meta = self.warped_input(image, scale)
        return self.normalize_uint8(warped), meta


@functools.lru_cache(maxsize=16)
def uint8_lookup(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """``[3, 256]`` float32: ``(v / 255 - mean[c]) / std[c]`` for every 8-bit value ``v``, in float64 then rounded."""
    values = np.arange(256, dtype=np.float64) / 255.0
    mean32, std32 = np.asarray(mean, np.float32).reshape(3, 1), np.asarray(std, np.float32).reshape(3, 1)
    table = ((values[None, :] - mean32) / std32).astype(np.float32)
    table.flags.writeable = False
    return table


def keep_res_pad(arch: str) -> int:
    """Keep-res padding of an architecture: Hourglass-104 needs multiples of 128, others of 32."""
    return 127 if arch.startswith("hourglass") else 31


def prepare_inference_input(image: np.ndarray, spec: InputSpec | Config, scale: float = 1.0) -> tuple[np.ndarray, ImageMeta]:
    """Test-time network input of a uint8 BGR image: ``([3, h, w] float32, meta)``.

    Args:
        image: ``[H, W, 3]`` uint8 BGR.
        spec: the input spec, or an experiment config to take it from.
        scale: test scale.
    """
    if not isinstance(spec, InputSpec):
        spec = InputSpec.from_config(spec)
    return spec.inference_input(image, scale)


