"""Times the KITTI evaluator on a synthetic problem the size of KITTI val (not a test).

3,769 frames, about 15k labelled objects plus DontCare regions, about 100 detections per frame
(noisy copies of the labels, duplicates and low-scoring false positives, scores with 2 decimals
as the original writes them). Run:

    python benchmarks/bench_kitti_eval.py [--frames 3769] [--detections 100] [--files]

``--files`` also times the file route (write a result folder, read it back, evaluate).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from centernet.data.objects3d import Objects3D
from centernet.data.kitti import format_kitti_lines, write_kitti_results
from centernet.evaluation.kitti import evaluate_kitti, evaluate_kitti_objects

FOCAL_PX, CENTRE_X, CENTRE_Y, IMAGE_W, IMAGE_H = 721.5, 609.6, 172.9, 1242.0, 375.0
# type, probability, (height, width, length) in metres
CLASSES = (
    ("Car", 0.55, (1.5, 1.6, 3.9)),
    ("Pedestrian", 0.15, (1.75, 0.65, 0.85)),
    ("Cyclist", 0.07, (1.7, 0.6, 1.75)),
    ("Van", 0.08, (2.2, 1.9, 5.0)),
    ("DontCare", 0.15, (-1.0, -1.0, -1.0)),
)


def _objects(
    rng: np.random.Generator,
    n: int,
    types: list[str],
    locations: np.ndarray,
    dims: np.ndarray,
    ry: np.ndarray,
    scores: np.ndarray | None = None,
) -> Objects3D:
    """Objects with 2D boxes projected from the 3D boxes' centre and size (a crude pinhole)."""
    depth = np.maximum(locations[:, 2], 1.0)
    u = FOCAL_PX * locations[:, 0] / depth + CENTRE_X
    v_bottom = FOCAL_PX * locations[:, 1] / depth + CENTRE_Y
    half_w = FOCAL_PX * np.maximum(np.abs(dims[:, 2]), 1.0) / depth / 2
    height = FOCAL_PX * np.maximum(np.abs(dims[:, 0]), 1.0) / depth
    boxes = np.stack([u - half_w, v_bottom - height, u + half_w, v_bottom], axis=1)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, IMAGE_W - 1)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, IMAGE_H - 1)
    return Objects3D(
        types=types,
        boxes=boxes,
        alpha=ry - np.arctan2(locations[:, 0], depth),
        dims=dims,
        locations=locations,
        rotation_y=ry,
        truncation=rng.choice([0.0, 0.2, 0.4], n),
        occlusion=rng.integers(0, 4, n),
        scores=scores,
    )


def make_problem(num_frames: int, detections_per_frame: int, seed: int = 0):
    """Synthetic (ground truth, detections) frame lists."""
    rng = np.random.default_rng(seed)
    names = [c[0] for c in CLASSES]
    probs = np.array([c[1] for c in CLASSES])
    sizes = np.array([c[2] for c in CLASSES])
    ground_truth, detections = [], []
    for _ in range(num_frames):
        n = rng.poisson(4.8) + 1
        kind = rng.choice(len(names), n, p=probs)
        loc = np.stack([rng.uniform(-15, 15, n), rng.uniform(1.4, 1.9, n), rng.uniform(5, 60, n)], axis=1)
        dims = sizes[kind] * rng.uniform(0.9, 1.1, (n, 1)) ** (sizes[kind] > 0)
        ry = rng.uniform(-np.pi, np.pi, n)
        gt = _objects(rng, n, [names[k] for k in kind], loc, dims, ry)
        ground_truth.append(gt)

        # Noisy copies of most labels (plus some duplicates), then false positives up to the budget.
        real = np.flatnonzero(kind != names.index("DontCare"))
        real = real[rng.random(len(real)) < 0.9]
        real = np.concatenate([real, real[rng.random(len(real)) < 0.2]])
        m_fp = max(detections_per_frame - len(real), 0)
        fp_kind = rng.choice(3, m_fp, p=[0.6, 0.25, 0.15])
        det_loc = np.concatenate(
            [
                loc[real] + rng.normal(0, [0.15, 0.03, 0.5], (len(real), 3)),
                np.stack([rng.uniform(-20, 20, m_fp), rng.uniform(1.4, 1.9, m_fp), rng.uniform(3, 70, m_fp)], axis=1),
            ]
        )
        det_dims = np.concatenate([dims[real] * rng.uniform(0.9, 1.1, (len(real), 3)), sizes[fp_kind]])
        det_ry = np.concatenate([ry[real] + rng.normal(0, 0.2, len(real)), rng.uniform(-np.pi, np.pi, m_fp)])
        scores = np.round(np.concatenate([rng.uniform(0.3, 1.0, len(real)), rng.uniform(0.0, 0.4, m_fp)]), 2)
        det_types = [names[kind[i]] if names[kind[i]] != "Van" else "Car" for i in real]
        det_types += [names[k] for k in fp_kind]
        detections.append(_objects(rng, len(det_types), det_types, det_loc, det_dims, det_ry, scores))
    return ground_truth, detections


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=3769)
    parser.add_argument("--detections", type=int, default=100, help="detections per frame")
    parser.add_argument("--files", action="store_true", help="also time the file route")
    args = parser.parse_args()

    ground_truth, detections = make_problem(args.frames, args.detections)
    n_gt = sum(len(g) for g in ground_truth)
    n_dc = sum(t == "DontCare" for g in ground_truth for t in g.types)
    n_det = sum(len(d) for d in detections)
    print(f"{args.frames} frames, {n_gt - n_dc} labelled objects + {n_dc} DontCare, {n_det} detections")

    start = time.perf_counter()
    result = evaluate_kitti_objects(ground_truth, detections)
    print(f"in-memory evaluation: {time.perf_counter() - start:.2f} s")
    print(result.format_table())

    if args.files:
        with tempfile.TemporaryDirectory() as tmp:
            gt_dir, det_dir = Path(tmp) / "label", Path(tmp) / "results"
            gt_dir.mkdir()
            for i, gt in enumerate(ground_truth):
                lines = format_kitti_lines(gt, detections=False)
                (gt_dir / f"{i:06d}.txt").write_text("".join(line + "\n" for line in lines))
            write_kitti_results(det_dir, dict(enumerate(detections)))
            start = time.perf_counter()
            evaluate_kitti(gt_dir, det_dir)
            print(f"file route (read + evaluate): {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
