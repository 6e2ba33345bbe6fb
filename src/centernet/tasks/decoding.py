"""Peak decoding shared by the tasks: the 3x3 max-pool peak filter, top-K and feature gathering.

Paper, section 4: a peak is a heat-map value not smaller than its 8 neighbours (a 3x3 max pool
replaces NMS, ``peak_filter``); the top 100 peaks over all classes (``topk``) read the size
and offset maps at their position (``gather_features``). ``flip_lr`` mirrors maps for the
flip test. Maps are NCHW; ``ind = y * W + x`` indexes the flattened output map.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from centernet.tasks.base import Task


def gather_features(fmap: torch.Tensor, ind: torch.Tensor) -> torch.Tensor:
    """Read the feature vector at each object's centre.

    Args:
        fmap: ``[B, C, H, W]`` map.
        ind: ``[B, M]`` int64 flat indices ``y * W + x``.

    Returns:
        ``[B, M, C]``.
    """
    batch, channels = fmap.shape[:2]
    flat = fmap.reshape(batch, channels, -1)
    return flat.gather(2, ind.unsqueeze(1).expand(batch, channels, ind.shape[1])).permute(0, 2, 1)


def _sliding_max(x: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    """Maximum over a window of ``2 * radius + 1`` along ``dim`` (-1 or -2), ignoring the outside."""
    length = x.shape[dim]
    padding = (radius, radius) if dim == -1 else (0, 0, radius, radius)
    padded = F.pad(x, padding, value=float("-inf"))
    out = padded.narrow(dim, 0, length)
    for shift in range(1, 2 * radius + 1):
        out = torch.maximum(out, padded.narrow(dim, shift, length))
    return out


def peak_filter(heat: torch.Tensor, kernel: int = 3) -> torch.Tensor:
    """Zero every value that is not the maximum of its ``kernel x kernel`` neighbourhood.

    The original's max-pool "NMS"; ties are kept: every pixel of an equal-valued plateau survives.
    In PyTorch the window maximum is computed separably (rows, then columns) as element-wise maxima
    of shifted views, which gives exactly ``max_pool2d``'s result (the maximum is associative) in
    about a fifth of its CPU time. In an ONNX export it is ``max_pool2d`` itself: onnxruntime's
    ``MaxPool`` takes a third of the time of the pads, slices and maxima (``benchmarks/RESULTS.md``,
    the mobile CenterNet against YOLO). Non-peaks are zeroed by a multiplication with the mask,
    which onnxruntime runs several times faster than ``Where``; the result is the same.

    Args:
        heat: ``[B, C, H, W]`` scores.
        kernel: odd window size.

    Returns:
        ``[B, C, H, W]``, the surviving peaks, zeros elsewhere.
    """
    radius = (kernel - 1) // 2
    if torch.onnx.is_in_onnx_export():
        window_max = F.max_pool2d(heat, kernel, stride=1, padding=radius)
    else:
        window_max = _sliding_max(_sliding_max(heat, radius, -1), radius, -2)
    return heat * (window_max == heat).to(heat.dtype)


def topk(
    scores: torch.Tensor, K: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``K`` best pixels over all classes, as the original: top-K per class, then overall.

    Args:
        scores: ``[B, C, H, W]`` peak-filtered scores.
        K: number of detections per image (at most ``C * H * W``).

    Returns:
        ``(scores [B, K], inds [B, K] int64 flat ``y * W + x``, classes [B, K] int64 0-based,
        ys [B, K] float, xs [B, K] float)``, sorted by decreasing score.
    """
    batch, num_classes, height, width = scores.shape
    per_class_k = min(K, height * width)
    class_scores, class_inds = torch.topk(scores.reshape(batch, num_classes, -1), per_class_k)
    top_scores, top = torch.topk(class_scores.reshape(batch, -1), K)
    classes = torch.div(top, per_class_k, rounding_mode="floor")
    inds = class_inds.reshape(batch, -1).gather(1, top)
    ys = torch.div(inds, width, rounding_mode="floor").float()
    xs = (inds % width).float()
    return top_scores, inds, classes, ys, xs


def flip_lr(x: torch.Tensor) -> torch.Tensor:
    """Mirror maps left-right (last dimension)."""
    return torch.flip(x, [-1])


def flip_lr_pairs(x: torch.Tensor, pairs: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Mirror maps left-right and swap the channels (dim 1) of each left/right pair.

    For heat maps of symmetric parts (``hm_hp [B, J, H, W]``); for per-joint vectors reshape to
    ``[B, J, 2, H, W]`` first.
    """
    flipped = flip_lr(x)
    order = list(range(x.shape[1]))
    for left, right in pairs:
        order[left], order[right] = right, left
    return flipped[:, order]


class ExportDecoder(nn.Module):
    """A task's decoding inside an exported graph: raw head maps (and per-image inputs) -> fixed-size outputs.

    ``forward`` takes the head maps in ``heads`` order (``[B, C, Ho, Wo]``; ``[2B, ...]`` with
    ``flip``: the images then their mirrors, as ``Task.decode``), then one tensor per name of
    ``extra_inputs``, and returns one tensor per name of ``outputs`` (batch ``B``, ``K`` rows each).
    The runtime feeds the extra inputs by name: ``trans [B, 2, 3]``, each image's output-map ->
    image-pixel affine; ``calib [B, 3, 4]``, each image's camera matrix. ``Task.from_export``
    turns one image's outputs back into the task's ``post_process`` form. Each task subclasses it
    (``Task.export_decoder``).

    Args:
        task: the task whose ``decode`` runs in the graph.
        K: detections per image.
        flip: the graph's batch holds each image and its mirror (the flip test), merged by ``decode``.
    """

    extra_inputs: ClassVar[tuple[str, ...]] = ("trans",)
    outputs: ClassVar[tuple[str, ...]] = ()
    # Shape of one image's slice of each extra input (for the export's sample inputs).
    EXTRA_SHAPES: ClassVar[dict[str, tuple[int, ...]]] = {"trans": (2, 3), "calib": (3, 4)}

    def __init__(self, task: Task, K: int, flip: bool = False) -> None:
        super().__init__()
        self.task, self.K, self.flip = task, int(K), bool(flip)
        self.heads = tuple(task.heads)

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        maps = dict(zip(self.heads, tensors))
        dets = self.task.decode(maps, K=self.K, flip=self.flip)
        return self.to_outputs(dets, *tensors[len(self.heads):])

    def to_outputs(self, dets: torch.Tensor, *extra: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``Task.decode``'s rows ``[B, K, D]`` (output-map pixels) -> the graph's ``outputs`` (image pixels)."""
        raise NotImplementedError


def to_image_pixels(points: torch.Tensor, trans: torch.Tensor) -> torch.Tensor:
    """Points ``[B, N, 2]`` in output-map pixels through each image's affine ``trans [B, 2, 3]``."""
    return points @ trans[:, :, :2].transpose(1, 2) + trans[:, None, :, 2]
