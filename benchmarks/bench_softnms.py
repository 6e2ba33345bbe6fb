"""Per-image cost of soft-NMS + merging at 5 test scales (not a test).

Feeds ``merge_ctdet`` / ``merge_multi_pose`` the per-scale results the original recorded in the
``tta`` reference fixtures (5 scales x top-100 on real COCO images), so the class mix and the
overlaps are those of a real multi-scale run, and prints the best-of-N wall time per image.

    python benchmarks/bench_softnms.py [--reference-dir ../shared/reference] [--repeat 20]
"""
from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path

import numpy as np

from centernet.tasks.tta import merge_ctdet, merge_multi_pose

DEFAULT_REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"


def _best_seconds(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-dir", type=Path, default=DEFAULT_REFERENCE)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    folder = args.reference_dir / "tta"

    for name, merge in (("ctdet_tta", "ctdet"), ("multi_pose_tta", "multi_pose")):
        meta = json.loads((folder / f"{name}.json").read_text())
        arrays = np.load(folder / f"{name}.npz")
        for config_name, config in meta["configs"].items():
            scales = config["options"]["test_scales"]
            if len(scales) < 2:
                continue
            for image in config["images"]:
                prefix = f"{config_name}__{image['key']}__"
                per_scale = [arrays[f"{prefix}scale{k}__post__dets"] for k in range(len(scales))]
                if merge == "ctdet":
                    num_classes = meta["num_classes"]
                    dicts = [{c: rows[rows[:, 5] == c, :5] for c in range(1, num_classes + 1)} for rows in per_scale]
                    seconds = _best_seconds(partial(merge_ctdet, dicts, num_classes), args.repeat)
                else:
                    seconds = _best_seconds(partial(merge_multi_pose, per_scale), args.repeat)
                rows = sum(len(rows) for rows in per_scale)
                print(f"{merge:10s} {config_name:16s} {image['key']}: {len(scales)} scales, {rows} rows, "
                      f"soft-NMS + merge {seconds * 1e3:7.2f} ms")


if __name__ == "__main__":
    main()
