"""The OpenCV build a reference set was made with, and what a test does when this one differs.

OpenCV releases round ``cv2.warpAffine``'s exact half-way pixels differently (5.1.0 against the
5.0.0 the fixtures were made with): a warped image then differs by one grey level at those pixels, and
a network amplifies that. The fixtures record their build (``environment.opencv`` of ``index.json``,
``e2e/cases.json``, ``train/index.json``, ``tta/index.json``). Two tools:

- ``warp_rounding_only``: compares warped images (and what is computed from them) independently of
  that rounding without weakening the check: a pixel may differ by one grey level only where the
  exact interpolated value is half-way between two levels.
- ``made_with_opencv``: where an outcome depends on the build, a failure under another build becomes
  one line naming both versions and the install command, instead of dozens of numeric differences.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import cv2
import numpy as np
import pytest

INSTALL = 'pip install -c requirements/lock.txt -e ".[test]"'
# How close to half-way the exact value must be where the builds' rounding may differ: OpenCV's 8-bit
# bilinear warp weights are fixed point (1/32768), so its value carries up to ~0.016 grey levels of error.
HALF_WAY = 0.03


def release(version: str) -> tuple[int, ...]:
    """``"5.0.0"`` or ``"5.0.0.93"`` (a wheel's build number) -> ``(5, 0, 0)``."""
    return tuple(int(part) for part in version.split("+")[0].split(".")[:3])


def same_build(environment: dict) -> bool:
    """Whether the installed OpenCV is the release the fixtures record (True when they record none)."""
    made = environment.get("opencv")
    return made is None or release(made) == release(cv2.__version__)


def mismatch_line(environment: dict, what: str) -> str:
    return (
        f"{what} depends on OpenCV's warpAffine rounding: the fixtures were made with OpenCV {environment.get('opencv')}, "
        f"this environment has {cv2.__version__}; install the locked build: {INSTALL}"
    )


@contextlib.contextmanager
def made_with_opencv(environment: dict, what: str) -> Iterator[None]:
    """Runs the comparisons inside; under another OpenCV release a failure is one line naming both."""
    if same_build(environment):
        yield
        return
    try:
        yield
    except AssertionError:
        # ``from None``: the numeric report of the miss is not chained to the line.
        raise pytest.fail.Exception(mismatch_line(environment, what), pytrace=False) from None


def warp_rounding_only(ours: np.ndarray, theirs: np.ndarray, source: np.ndarray, matrix: np.ndarray, name: str) -> np.ndarray:
    """Asserts two 8-bit ``warpAffine(source, matrix)`` results differ only by half-way rounding.

    ``ours`` and ``theirs`` are ``[H, W, C]`` uint8 warps of ``source`` by the 2x3 ``matrix``
    (bilinear, constant border). Where they differ, the difference must be one grey level and the
    exact value (the same warp in float32) half-way between two levels. Returns the ``[H, W]`` mask
    of pixels where any channel differs.
    """
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype == np.uint8, f"{name}: {ours.shape} {ours.dtype} vs {theirs.shape} {theirs.dtype}"
    diff = ours.astype(np.int16) - theirs.astype(np.int16)
    differ = diff != 0
    if differ.any():
        height, width = ours.shape[:2]
        exact = cv2.warpAffine(np.ascontiguousarray(source, dtype=np.float32), np.asarray(matrix, np.float64), (width, height), flags=cv2.INTER_LINEAR)
        exact = exact.reshape(ours.shape)
        off_half = np.abs(exact - np.floor(exact) - 0.5) > HALF_WAY
        bad = differ & ((np.abs(diff) > 1) | off_half)
        assert not bad.any(), (
            f"{name}: {int(bad.sum())} of {int(differ.sum())} differing pixels are not half-way rounding "
            f"(first at {tuple(int(i) for i in np.argwhere(bad)[0])}: ours {ours[bad][0]}, theirs {theirs[bad][0]}, exact {exact[bad][0]:.4f})"
        )
    return differ.any(axis=-1) if differ.ndim == 3 else differ
