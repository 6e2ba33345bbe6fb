"""Maths shared by every task: Gaussian targets, affine warps, losses and peak decoding.

Each function reproduces the original implementation's numerics (including its dtype choices and
known quirks), because released checkpoints and the reference fixtures depend on them.

Conventions: heat maps and regression maps are NCHW; ``ind = y * W + x`` indexes the flattened
output map (row-major, integer centre); affine matrices are float64 2x3 and map ``[x, y, 1]``.
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

ArrayLike = np.ndarray | Sequence[float] | float

# ----------------------------------------------------------------------------------------------
# Gaussian heat-map targets
# ----------------------------------------------------------------------------------------------


def gaussian_radius(det_size: tuple[float, float], min_overlap: float = 0.7) -> float:
    """Radius of the centre Gaussian for a box of ``(height, width)`` output pixels.

    CornerNet's construction: the smallest of three radii, one per way a shifted box can keep IoU
    ``>= min_overlap`` with the ground truth. Each radius is the root of a quadratic
    ``a r^2 + b r + c = 0``, but, as in CornerNet and the original CenterNet, every root is computed
    as ``(b + sqrt(b^2 - 4ac)) / 2`` instead of ``(-b +- sqrt(.)) / (2a)``. The result is not the
    radius the derivation intends (3.4-3.9x larger, benchmarks/gaussian_radius.py), but it is what every
    released checkpoint was trained with, so we keep it to stay faithful.

    Args:
        det_size: ``(height, width)`` of the box, in output-map pixels.
        min_overlap: required IoU.

    Returns:
        The (float) radius; callers truncate it with ``max(0, int(r))``.
    """
    height, width = det_size

    b1 = height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + np.sqrt(b1**2 - 4 * c1)) / 2

    a2 = 4
    b2 = 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + np.sqrt(b2**2 - 4 * a2 * c2)) / 2

    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + np.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def gaussian2d(shape: tuple[int, int], sigma: float = 1.0) -> np.ndarray:
    """Unnormalised 2D Gaussian kernel (peak 1 at the centre), float64.

    Args:
        shape: ``(rows, cols)``, odd sizes so the peak falls on a pixel.
        sigma: standard deviation in pixels.

    Returns:
        ``[rows, cols]`` float64; values below ``eps * max`` are set to 0 as the original does.
    """
    m, n = [(size - 1.0) / 2.0 for size in shape]
    y, x = np.ogrid[-m : m + 1, -n : n + 1]
    kernel = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    kernel[kernel < np.finfo(kernel.dtype).eps * kernel.max()] = 0
    return kernel


def _clipped_gaussian(
    map_hw: tuple[int, int], center: ArrayLike, radius: int
) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """The original's Gaussian of ``radius`` at ``center``, clipped to a map of ``map_hw``.

    Diameter ``2r + 1``, sigma ``diameter / 6``, the centre truncated with ``int()``.

    Returns:
        ``(window, kernel)``: the map's ``(rows, cols)`` slices and the float64 kernel covering
        them; ``None`` when nothing of the kernel falls on the map.
    """
    diameter = 2 * radius + 1
    x, y = int(center[0]), int(center[1])
    height, width = map_hw
    left, right = min(x, radius), min(width - x, radius + 1)
    top, bottom = min(y, radius), min(height - y, radius + 1)
    if left + right <= 0 or top + bottom <= 0:
        # Entirely outside the map; slicing would wrap around with negative indices.
        return None
    gaussian = gaussian2d((diameter, diameter), sigma=diameter / 6)
    kernel = gaussian[radius - top : radius + bottom, radius - left : radius + right]
    return (slice(y - top, y + bottom), slice(x - left, x + right)), kernel


def draw_gaussian(heatmap: np.ndarray, center: ArrayLike, radius: int, k: float = 1.0) -> np.ndarray:
    """Splat a Gaussian of ``radius`` at ``center`` onto ``heatmap``, in place, keeping the maximum.

    The original's ``draw_umich_gaussian``: diameter ``2r + 1``, sigma ``diameter / 6``, the centre
    truncated with ``int()``, the kernel clipped at the map borders.

    Args:
        heatmap: ``[H, W]`` map (one class channel), modified in place.
        center: ``(x, y)`` in map pixels.
        radius: integer radius in pixels (0 draws a single pixel).
        k: peak value.

    Returns:
        ``heatmap`` (the same array).
    """
    clipped = _clipped_gaussian(heatmap.shape[0:2], center, radius)
    if clipped is not None:
        window, kernel = clipped
        region = heatmap[window]
        np.maximum(region, kernel * k, out=region)
    return heatmap


def draw_dense_reg(
    regmap: np.ndarray,
    heatmaps: np.ndarray,
    center: ArrayLike,
    value: ArrayLike,
    radius: int,
    is_offset: bool = False,
    float64_test: bool = False,
) -> np.ndarray:
    """Write ``value`` into ``regmap`` around ``center`` wherever this object's Gaussian rules the heat maps.

    The original's ``draw_dense_reg`` (``--dense_wh``): the kernel of ``draw_gaussian`` with the
    same ``radius`` is compared with the maximum over classes of ``heatmaps`` (this object already
    drawn); where the kernel is at least that, the pixel takes ``value``. Later objects overwrite
    earlier ones where their Gaussian is as high. Only the kernel's window is reduced over classes.

    One deliberate difference: the kernel is rounded to the heat maps' dtype before the test. The
    original compares its float64 kernel with the float32 heat map it was drawn into, so wherever
    float32 rounding went up (about half of each Gaussian) the test fails, the pixel keeps 0 and
    the loss, weighted by the heat map there, pulls the size towards 0.

    Args:
        regmap: ``[D, H, W]`` map, modified in place.
        heatmaps: ``[C, H, W]`` per-class heat maps.
        center: ``(x, y)`` in map pixels (truncated with ``int()``).
        value: ``D`` values (e.g. the box's width and height).
        radius: integer radius in pixels.
        is_offset: ``value`` is an offset ``(dx, dy)`` from the integer centre (``--dense_hp``):
            each pixel ``(x, y)`` gets the offset from itself, ``value - (x - cx, y - cy)``.
        float64_test: compare the float64 kernel as the original does (bit-faithful targets,
            with the holes described above) instead of the kernel rounded to the maps' dtype.

    Returns:
        ``regmap`` (the same array).
    """
    clipped = _clipped_gaussian(heatmaps.shape[1:3], center, radius)
    if clipped is not None:
        window, kernel = clipped
        ruling = heatmaps[(slice(None), *window)].max(axis=0)
        owned = (kernel if float64_test else kernel.astype(heatmaps.dtype)) >= ruling
        value = np.asarray(value, dtype=np.float32).reshape(-1, 1, 1)
        patch = np.broadcast_to(value, (len(value), *kernel.shape)).copy()
        if is_offset:
            rows, cols = window
            patch[0] -= np.arange(cols.start, cols.stop) - int(center[0])
            patch[1] -= (np.arange(rows.start, rows.stop) - int(center[1]))[:, None]
        regmap[(slice(None), *window)][:, owned] = patch[:, owned]
    return regmap


# ----------------------------------------------------------------------------------------------
# Affine warps between image, network input and output map
# ----------------------------------------------------------------------------------------------


def _rotate(point: Sequence[float], angle_rad: float) -> list[float]:
    sn, cs = np.sin(angle_rad), np.cos(angle_rad)
    return [point[0] * cs - point[1] * sn, point[0] * sn + point[1] * cs]


def _third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The point making ``(a, b, result)`` a right angle at ``b`` (fixes the affine's shear)."""
    direction = a - b
    return b + np.array([-direction[1], direction[0]], dtype=np.float32)


def get_affine_transform(
    center: ArrayLike,
    scale: ArrayLike,
    rot: float,
    output_size: Sequence[int],
    shift: ArrayLike = (0.0, 0.0),
    inv: bool = False,
) -> np.ndarray:
    """Affine matrix mapping a ``scale``-sized window around ``center`` onto an output canvas.

    The window's width ``scale[0]`` maps onto the output width (aspect ratio preserved; the
    height of the window follows the output's aspect), rotated by ``rot`` degrees.
    The three correspondences are built in float32 like the original so the float64 matrix that
    ``cv2.getAffineTransform`` solves for is bit-identical.

    Args:
        center: ``(x, y)`` window centre in source pixels.
        scale: window size in source pixels, a scalar (square window) or ``(w, h)``.
        rot: rotation in degrees (counter-clockwise in image coordinates as the original).
        output_size: ``(width, height)`` of the destination canvas, in pixels.
        shift: window shift as a fraction of ``scale``.
        inv: return the inverse map (destination -> source) instead.

    Returns:
        ``[2, 3]`` float64 matrix acting on ``[x, y, 1]``.
    """
    # A scalar (including a 0-d array) means a square window; numpy's type promotion from here on
    # follows the original's so that the float32 correspondences round identically.
    scale = np.array([scale, scale], dtype=np.float32) if np.ndim(scale) == 0 else np.asarray(scale)
    shift = np.asarray(shift, dtype=np.float32)
    center = np.asarray(center)
    src_w = scale[0]
    dst_w, dst_h = output_size[0], output_size[1]

    src_dir = _rotate([0, src_w * -0.5], np.pi * rot / 180)
    dst_dir = np.array([0, dst_w * -0.5], np.float32)

    src = np.zeros((3, 2), dtype=np.float32)
    dst = np.zeros((3, 2), dtype=np.float32)
    src[0, :] = center + scale * shift
    src[1, :] = center + src_dir + scale * shift
    dst[0, :] = [dst_w * 0.5, dst_h * 0.5]
    dst[1, :] = np.array([dst_w * 0.5, dst_h * 0.5], np.float32) + dst_dir
    src[2, :] = _third_point(src[0, :], src[1, :])
    dst[2, :] = _third_point(dst[0, :], dst[1, :])

    if inv:
        return cv2.getAffineTransform(dst, src)
    return cv2.getAffineTransform(src, dst)


def affine_transform(points: ArrayLike, t: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to one point ``(2,)`` or to many ``[..., 2]``.

    Points are rounded to float32 first, as the original does, then mapped in float64.

    Returns:
        Float64 array with the shape of ``points``.
    """
    points = np.asarray(points, dtype=np.float32)
    flat = points.reshape(-1, 2).astype(np.float64)
    mapped = flat[:, 0:1] * t[:, 0] + flat[:, 1:2] * t[:, 1] + t[:, 2]
    return mapped.reshape(points.shape)


def transform_preds(
    coords: np.ndarray, center: ArrayLike, scale: ArrayLike, output_size: Sequence[int]
) -> np.ndarray:
    """Map points from output-map pixels back to source-image pixels.

    Args:
        coords: ``[N, 2]`` points ``(x, y)`` in output-map pixels.
        center, scale: the window used for the forward warp (see ``get_affine_transform``).
        output_size: ``(width, height)`` of the output map.

    Returns:
        ``[N, 2]`` float64 points in source-image pixels.
    """
    trans = get_affine_transform(center, scale, 0, output_size, inv=True)
    return affine_transform(np.asarray(coords)[:, 0:2], trans)


# ----------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------


def clamped_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """Sigmoid clamped to ``[1e-4, 1 - 1e-4]`` so the focal loss's logs stay finite."""
    return torch.clamp(x.sigmoid(), min=1e-4, max=1 - 1e-4)


def focal_loss(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Penalty-reduced pixel-wise focal loss (CornerNet; alpha 2, beta 4).

    Positives are pixels where ``gt == 1``; negatives are down-weighted by ``(1 - gt)^4`` near
    the peaks. The sum is normalised by the number of positives over the whole batch, or, when
    the batch holds no positive at all, not normalised (the negative term alone).

    Args:
        pred: ``[B, C, H, W]`` probabilities in (0, 1) (see ``clamped_sigmoid``).
        gt: ``[B, C, H, W]`` target heat map in [0, 1].

    Returns:
        Scalar loss.
    """
    pos = gt.eq(1).float()
    neg = gt.lt(1).float()
    neg_weights = torch.pow(1 - gt, 4)

    pos_loss = (torch.log(pred) * torch.pow(1 - pred, 2) * pos).sum()
    neg_loss = (torch.log(1 - pred) * torch.pow(pred, 2) * neg_weights * neg).sum()
    num_pos = pos.sum()
    if num_pos == 0:
        return -neg_loss
    return -(pos_loss + neg_loss) / num_pos


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


def reg_l1_loss(output: torch.Tensor, mask: torch.Tensor, ind: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 regression at object centres, normalised by the number of regressed values.

    ``sum |pred - target| * mask / (mask.sum() * D + 1e-4)`` (the original's ``RegL1Loss``).

    Args:
        output: ``[B, D, H, W]`` raw regression map.
        mask: ``[B, M]`` 1 for real objects, 0 for padding.
        ind: ``[B, M]`` flat centre indices.
        target: ``[B, M, D]``.
    """
    pred = gather_features(output, ind)
    mask = mask.unsqueeze(2).expand_as(pred).float()
    loss = F.l1_loss(pred * mask, target * mask, reduction="sum")
    return loss / (mask.sum() + 1e-4)


def dense_l1_loss(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L1 over whole maps weighted by ``mask`` (the original's ``--dense_wh`` size loss).

    ``sum |output * mask - target * mask| / (mask.sum() + 1e-4)``, all ``[B, D, H, W]``.
    """
    return F.l1_loss(output * mask, target * mask, reduction="sum") / (mask.sum() + 1e-4)


def reg_weighted_l1_loss(
    output: torch.Tensor, mask: torch.Tensor, ind: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """L1 regression with a per-coordinate mask (the original's ``RegWeightedL1Loss``).

    Args:
        output: ``[B, D, H, W]`` raw regression map.
        mask: ``[B, M, D]`` per-coordinate weights (0/1).
        ind: ``[B, M]`` flat centre indices.
        target: ``[B, M, D]``.
    """
    pred = gather_features(output, ind)
    mask = mask.float()
    loss = F.l1_loss(pred * mask, target * mask, reduction="sum")
    return loss / (mask.sum() + 1e-4)


# ----------------------------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------------------------


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

