"""How the original's ``gaussian_radius`` compares with the corner-shift bound it is derived from.

CornerNet's construction asks how far the corners of a detected box may move before its IoU with
the ground-truth box drops below ``min_overlap`` (0.7), in three ways: both corners shifted the same
way (a translated box), both inwards (a smaller box) and both outwards (a larger one); the bound is
the smallest of the three distances. This script finds that bound exactly (bisection on each IoU,
no quadratic formula) and prints it beside ``centernet.tasks.targets.gaussian_radius`` (the
original's roots, kept for fidelity) for square and elongated boxes. Its log,
``gaussian_radius.log``, is the figure in docs/parity.md.

    python benchmarks/gaussian_radius.py
"""
from __future__ import annotations

from collections.abc import Callable

from centernet.tasks.targets import gaussian_radius

MIN_OVERLAP = 0.7
BOXES = [(4, 4), (8, 8), (16, 16), (32, 32), (64, 64), (128, 128), (6, 12), (10, 40), (20, 5), (100, 30), (3, 90)]


def _largest(iou_minus_overlap: Callable[[float], float], high: float) -> float:
    """The largest shift r in [0, high] whose IoU still reaches the overlap (IoU falls as r grows)."""
    low = 0.0
    for _ in range(200):
        middle = (low + high) / 2
        if iou_minus_overlap(middle) >= 0:
            low = middle
        else:
            high = middle
    return low


def corner_shift_bound(height: float, width: float, overlap: float = MIN_OVERLAP) -> float:
    area = height * width
    translated = _largest(lambda r: (height - r) * (width - r) / (2 * area - (height - r) * (width - r)) - overlap, min(height, width))
    inside = _largest(lambda r: (height - 2 * r) * (width - 2 * r) / area - overlap, min(height, width) / 2)
    outside = _largest(lambda r: area / ((height + 2 * r) * (width + 2 * r)) - overlap, 10 * max(height, width))
    return min(translated, inside, outside)


def main() -> None:
    print(f"min_overlap {MIN_OVERLAP}; box (height x width) in output pixels")
    print("| box | corner-shift bound | original gaussian_radius | ratio |\n|---|---|---|---|")
    ratios = []
    for height, width in BOXES:
        bound = corner_shift_bound(height, width)
        original = gaussian_radius((height, width), MIN_OVERLAP)
        ratios.append(original / bound)
        print(f"| {height}x{width} | {bound:.3f} | {original:.3f} | {original / bound:.2f} |")
    print(f"ratio original / bound: {min(ratios):.2f} .. {max(ratios):.2f} (the original's radii are larger)")


if __name__ == "__main__":
    main()
