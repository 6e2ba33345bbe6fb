"""The values of a KITTI label line and calibration checked field by field, each bad one named.

``kitti._parse_kitti_file`` and ``kitti.read_calib`` call these after the column counts are right:
a value that is not finite, an occlusion outside KITTI's ``-1..3``, a non-positive size of a real
object (``DontCare`` regions carry ``-1``) or a camera matrix without positive focal lengths is one
``DataFormatError`` naming the file, the line, the column and what was expected.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from centernet.data.records import DataFormatError

#: Columns after the type, in file order (a result line adds ``score``).
VALUE_COLUMNS = ("truncated", "occluded", "alpha", "x1", "y1", "x2", "y2", "h", "w", "l", "x", "y", "z", "rotation_y", "score")
_SIZES = ("h", "w", "l")


def check_label_values(path: Path, number: int, type_name: str, values: Sequence[float]) -> None:
    """Refuse the first impossible value of one label / result line (``values``: the columns after the type)."""
    for name, value in zip(VALUE_COLUMNS, values):
        if not math.isfinite(value):
            raise DataFormatError(f"{path} [line {number}]: column '{name}' is {value}, expected a finite number")
    occluded = values[1]
    if occluded != int(occluded):
        raise DataFormatError(f"{path} [line {number}]: occlusion must be an integer, found '{occluded:g}' (column 'occluded')")
    if not -1 <= occluded <= 3:
        raise DataFormatError(f"{path} [line {number}]: column 'occluded' is {occluded:g}, expected an integer from -1 to 3")
    if type_name != "DontCare":
        for name in _SIZES:
            value = values[VALUE_COLUMNS.index(name)]
            if value <= 0 and value != -1:  # -1: KITTI's "unknown" (2D-only rows of result files)
                raise DataFormatError(
                    f"{path} [line {number}]: column '{name}' is {value:g}, expected a positive size in metres (or -1, unknown)"
                )


def check_calib(path: Path, where: str, matrix: np.ndarray) -> np.ndarray:
    """``matrix`` (``P2``, 3x4) if it is a camera projection: finite, positive focal lengths, ``P[2, 2]`` not 0.

    ``where``: the place in ``path`` named in the error (``line 3``, ``image 7``).
    """
    if not np.isfinite(matrix).all():
        raise DataFormatError(f"{path} [{where}]: P2 holds non-finite values, expected 12 finite numbers")
    if matrix[0, 0] <= 0 or matrix[1, 1] <= 0 or matrix[2, 2] == 0:
        raise DataFormatError(
            f"{path} [{where}]: P2 has focal lengths ({matrix[0, 0]:g}, {matrix[1, 1]:g}) and P[2,2] {matrix[2, 2]:g}, "
            "expected a camera projection (positive focal lengths, P[2,2] not 0)"
        )
    return matrix
