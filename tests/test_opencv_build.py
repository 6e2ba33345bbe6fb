"""The tools that keep parity tests meaningful under another OpenCV build (tests/opencv_build.py)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from tests.opencv_build import made_with_opencv, release, same_build, warp_rounding_only


def warped_pair():
    rng = np.random.default_rng(0)
    source = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    matrix = np.array([[0.73, 0.05, 3.3], [-0.04, 0.81, 2.7]])
    ours = cv2.warpAffine(source, matrix, (32, 30), flags=cv2.INTER_LINEAR)
    exact = cv2.warpAffine(source.astype(np.float32), matrix, (32, 30), flags=cv2.INTER_LINEAR)
    return source, matrix, ours, exact


def test_only_half_way_pixels_may_differ_by_one_level() -> None:
    source, matrix, ours, exact = warped_pair()
    fraction = exact - np.floor(exact)
    theirs = ours.copy()
    half = np.argwhere((np.abs(fraction - 0.5) < 0.01) & (ours < 255))
    assert len(half), "the fixture image should have half-way values"
    theirs[tuple(half[0])] += 1
    mask = warp_rounding_only(ours, theirs, source, matrix, "half-way")
    assert mask.sum() == 1 and mask[tuple(half[0][:2])]

    far = np.argwhere((np.abs(fraction - 0.5) > 0.2) & (ours < 255))
    other = ours.copy()
    other[tuple(far[0])] += 1
    with pytest.raises(AssertionError, match="not half-way rounding"):
        warp_rounding_only(ours, other, source, matrix, "off")
    two = ours.copy()
    two[tuple(half[0])] = min(255, int(two[tuple(half[0])]) + 2) if two[tuple(half[0])] < 254 else two[tuple(half[0])] - 2
    with pytest.raises(AssertionError, match="not half-way rounding"):
        warp_rounding_only(ours, two, source, matrix, "two levels")


def test_a_miss_under_another_build_is_one_line_naming_both() -> None:
    installed = {"opencv": cv2.__version__}
    assert same_build(installed) and same_build({}) and release("5.0.0.93") == (5, 0, 0)
    with pytest.raises(AssertionError, match="numbers"):  # the same build: the miss itself
        with made_with_opencv(installed, "case"):
            raise AssertionError("numbers")
    other = {"opencv": "4.0.0"}
    with pytest.raises(pytest.fail.Exception) as failed:
        with made_with_opencv(other, "case x"):
            raise AssertionError("numbers")
    line = str(failed.value)
    assert "\n" not in line and "4.0.0" in line and cv2.__version__ in line and "requirements/lock.txt" in line
    assert failed.value.__suppress_context__
    with made_with_opencv(other, "case y"):  # what passes under another build passes
        pass
