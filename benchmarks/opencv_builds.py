"""How far another OpenCV build moves the end-to-end results: each e2e case against the original's rows.

Runs every case of ``../shared/reference/e2e/cases.json`` as ``tests/test_e2e_original.py`` does
(the case's original-format checkpoint, ``centernet val`` with its options) under the OpenCV that is
installed, pairs our rows with the original's (per image and category, nearest first) and prints, per
case, the largest score and value changes (boxes and keypoints in image pixels; ddd: every KITTI
column but the angles, which are reported apart). Run it once per build, e.g.::

    python benchmarks/opencv_builds.py                                 # the locked OpenCV 5.0.0
    pip install --no-deps --target /tmp/cv51 opencv-python-headless==5.1.0.95
    PYTHONPATH=/tmp/cv51 python benchmarks/opencv_builds.py            # OpenCV 5.1.0
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from centernet.cli import main  # noqa: E402
from tests.test_e2e_original import E2E_DIR, _build_checkpoint, _ours_and_theirs, _scratch_data, our_command  # noqa: E402


def largest_changes(ours: dict, theirs: dict) -> dict:
    """Nearest-first pairing per image and category: largest |score|, |value| and |angle| changes, row counts."""
    worst = {"score": 0.0, "value": 0.0, "angle": 0.0, "rows_ours": 0, "rows_original": 0, "unpaired": 0}
    for image in theirs:
        for category in set(ours.get(image, {})) | set(theirs[image]):
            mine, ref = list(ours.get(image, {}).get(category, [])), list(theirs[image].get(category, []))
            worst["rows_ours"] += len(mine)
            worst["rows_original"] += len(ref)
            worst["unpaired"] += abs(len(mine) - len(ref))
            if not mine or not ref:
                continue
            cost = np.array([[abs(a[0] - b[0]) + sum(abs(x - y) for x, y in zip(a[1], b[1])) for b in ref] for a in mine])
            for _ in range(min(len(mine), len(ref))):
                i, j = np.unravel_index(np.argmin(cost), cost.shape)
                (score_a, values_a, angles), (score_b, values_b, _) = mine[i], ref[j]
                worst["score"] = max(worst["score"], abs(score_a - score_b))
                for va, vb, angle in zip(values_a, values_b, angles):
                    diff = abs(va - vb)
                    if angle:
                        diff = min(diff % (2 * math.pi), 2 * math.pi - diff % (2 * math.pi))
                        worst["angle"] = max(worst["angle"], diff)
                    else:
                        worst["value"] = max(worst["value"], diff)
                cost[i, :] = np.inf
                cost[:, j] = np.inf
    return worst


def main_(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", default=None, help="case names (default: all)")
    args = parser.parse_args(argv)
    import json

    contract = json.loads((E2E_DIR / "cases.json").read_text())
    names = args.cases or list(contract["cases"])
    print(f"OpenCV {cv2.__version__} (fixtures made with {contract['environment']['opencv']}); load average {os.getloadavg()}")
    print(f"| case | task | rows ours / original | max score change | max value change (px; ddd: m, px) | max angle change (rad) | seconds |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        case = contract["cases"][name]
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            checkpoint = _build_checkpoint(name, tmp / f"{name}.pth")
            annotation = _scratch_data(case, tmp / "data")
            out = tmp / "out"
            assert main(our_command(case, checkpoint, annotation, out)) == 0
            ours, theirs, _ = _ours_and_theirs(case, out)
        w = largest_changes(ours, theirs)
        print(f"| {name} | {case['task']} | {w['rows_ours']} / {w['rows_original']} | {w['score']:.2e} | {w['value']:.2e} | "
              f"{w['angle']:.2e} | {time.perf_counter() - start:.0f} |", flush=True)
    print(f"load average at the end {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main_())
