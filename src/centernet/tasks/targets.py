"""Training targets shared by every task: the Gaussian radius and the heat-map splats.

Paper, section 3 ("Objects as Points"): each ground-truth centre ``p`` becomes a peak
``exp(-((x - p~x)^2 + (y - p~y)^2) / (2 sigma_p^2))`` on the low-resolution map, where two
objects of one class overlap the element-wise maximum is kept (``draw_gaussian``); the standard
deviation follows from the object size through CornerNet's radius (``gaussian_radius``).
Conventions: maps are ``[C, H, W]`` float32 in output-map pixels (input / 4).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ArrayLike = np.ndarray | Sequence[float] | float


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
