"""INT8 against float32 onnxruntime, in one run: speed, and the task's AP, for any task.

``--task ctdet`` (default) scores the raccoon val photos (all 40 with ``--weights``); ``--task multi_pose`` the first
``--images`` well-labelled people photos of coco_mini's val keypoints (OKS AP); ``--task ddd`` the
``--images`` kitti_mini frames with most cars (KITTI AP, each frame's own camera). Without
``--weights`` a ResNet-18 is first overfit on those very images (``--steps`` full-batch Adam steps
at ``--size``, no augmentation, as ``tests/test_learning_*``): a model that scores, from nothing
downloaded, but one scored on its own training images. INT8 calibrates on other photos of the same
data set (raccoon train, coco_mini train2017, the other kitti_mini frames).

From one checkpoint (e.g. the ``ctdet_effl0_raccoon_384`` run of ``benchmarks/train_raccoon.py``):

1. exports the float32 decoded graph and the INT8 one (``export_onnx(..., int8=True)``, calibrated
   on ``--calibration-count`` of the raccoon *training* photos, none of the val photos);
2. times both with onnxruntime, ``--threads`` intra-op threads, interleaved (float32, INT8, float32,
   ...) on the same val photo, ``--runs`` rounds: the graph alone (``session.run`` on a
   pre-processed input, decoding included) and end to end (``OnnxDetector.predict`` on the BGR
   photo: letterbox, normalisation, graph); medians, with the load average of every round;
3. scores both with the task's own metric (``Task.score``, as ``centernet val``), and the
   checkpoint itself through the ``Predictor`` with the graph's input size, K and flip test, which
   float32 ONNX should equal;
4. prints a markdown report (commit it as ``benchmarks/RESULTS_int8.md``).

Example::

    python benchmarks/bench_int8.py --weights runs/benchmarks/effl0_384/best.pt > benchmarks/RESULTS_int8.md
    python benchmarks/bench_int8.py --task multi_pose --runs 10
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from centernet.config import KITTI_MEAN, KITTI_STD
from centernet.data.check import load_dataset
from centernet.data.image_io import load_image
from centernet.data.records import DetectionDataset
from centernet.engine.dataset import collate
from centernet.export.onnx import OnnxDetector, export_onnx, read_metadata
from centernet.models.detector import CenterNet
from centernet.models.predictor import Predictor

VARIANTS = ("float32", "int8")
METRICS = {"ctdet": ("AP", "AP50", "AP75"), "multi_pose": ("AP", "AP50", "AP75"),
           "ddd": ("car/bbox/moderate/ap11", "car/bev/moderate/ap11", "car/3d/moderate/ap11")}
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _load() -> tuple[float, float, float]:
    return os.getloadavg()


def _eval_set(task: str, count: int | None) -> tuple[DetectionDataset, list[Path]]:
    """The scored images of ``task`` and the calibration photos (others of the same data set).

    ctdet: the raccoon val photos (the first ``count`` for an overfit model, else all 40).
    """
    if task == "ctdet":
        data = load_dataset(DATA / "raccoon" / "val.json")
        train = json.loads((DATA / "raccoon" / "train.json").read_text())["images"]
        data = data if count is None else dataclasses.replace(data, records=data.records[:count])
        return data, [DATA / "raccoon" / "images" / image["file_name"] for image in train]
    if task == "multi_pose":
        data = load_dataset(DATA / "coco_mini" / "annotations" / "person_keypoints_val2017.json")
        good = [r for r in data.records if len(r) and not r.crowd.any() and ((r.keypoints[:, :, 2] > 0).sum(1) >= 10).all()]
        return dataclasses.replace(data, records=good[:count]), sorted((DATA / "coco_mini" / "train2017").glob("*.jpg"))
    data = load_dataset(DATA / "kitti_mini", None)
    car = data.class_names.index("Car")
    cars = [int(((r.labels == car) & ~r.ignore).sum()) for r in data.records]
    chosen = sorted(np.argsort(cars, kind="stable")[::-1][:count])
    others = [r.path for i, r in enumerate(data.records) if i not in chosen]
    return DetectionDataset([data.records[i] for i in chosen], data.class_names, data.category_ids, source=data.source), others


def _overfit(task: str, data: DetectionDataset, size: int, steps: int, folder: Path) -> Path:
    """A ResNet-18 overfit on ``data`` without augmentation (full batch, Adam 1e-3, x0.1 at 80 %), saved."""
    torch.manual_seed(0)
    if task == "ddd":  # KITTI's aspect ratio at width ``size``
        aspect = float(np.median([r.height / r.width for r in data.records]))
        options = {"input_size": (max(32, round(size * aspect / 32) * 32), size), "mean": KITTI_MEAN, "std": KITTI_STD}
    else:
        options = {"input_size": (size, size)}
    detector = CenterNet("res_18", class_names=data.class_names, task=task, K=100, **options)
    spec = dataclasses.replace(detector.spec)
    inputs, targets = [], []
    for index, record in enumerate(data.records):
        network_input, meta = spec.inference_input(data.load_image(index))
        inputs.append(network_input)
        targets.append(detector.task.encode(record.annotations(), dataclasses.replace(meta, calib=record.calib)))
    inputs, batch = torch.from_numpy(np.stack(inputs)), collate(targets)
    optimizer = torch.optim.Adam(detector.network.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, [int(steps * 0.8)], gamma=0.1)
    detector.network.train()
    for step in range(steps):
        total, _ = detector.task.loss(detector.network(inputs), batch)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        schedule.step()
        if step in (0, steps - 1):
            print(f"overfit step {step + 1}/{steps}: loss {float(total.detach()):.3f}")
    detector.eval().save(folder / f"{task}_overfit.pt")
    return folder / f"{task}_overfit.pt"


def _time_interleaved(detectors: dict[str, OnnxDetector], image: np.ndarray, runs: int,
                      calib: np.ndarray | None) -> tuple[dict, dict, list]:
    """Median seconds per variant, graph alone and end to end, from ``runs`` interleaved rounds."""
    calibs = None if calib is None else [calib]
    feeds = next(iter(detectors.values())).preprocess([image], calibs)
    graph = {name: [] for name in detectors}
    end_to_end = {name: [] for name in detectors}
    loads = []
    for name, detector in detectors.items():  # warm-up: first runs allocate and pick kernels
        for _ in range(3):
            detector.session.run(None, feeds)
    for _ in range(runs):
        for name, detector in detectors.items():
            started = time.perf_counter()
            detector.session.run(None, feeds)
            graph[name].append(time.perf_counter() - started)
            started = time.perf_counter()
            detector.predict([image], calib=calibs)
            end_to_end[name].append(time.perf_counter() - started)
        loads.append(_load()[0])
    return ({k: statistics.median(v) for k, v in graph.items()}, {k: statistics.median(v) for k, v in end_to_end.items()}, loads)


def _onnx_ap(detector: OnnxDetector, data) -> dict[str, float]:
    predictions = {}
    for i, record in enumerate(data.records):
        calib = None if record.calib is None or not detector.task.needs_calib else [record.calib]
        predictions[i] = detector.predict([load_image(record.path)], calib=calib)[0]
    report = detector.task.score(data, predictions)
    return {k: report.stats[k] for k in METRICS[detector.task.name]}


def _pytorch_ap(weights: Path, meta, data) -> dict[str, float]:
    """The checkpoint through the ``Predictor`` with the graph's input, K and flip test."""
    detector = CenterNet.from_checkpoint(weights)
    predictor = Predictor(detector.network, detector.task, meta.input_spec(), data.class_names, data.category_ids,
                          K=meta.K, flip=meta.flip)
    report = detector.task.score(data, predictor.detect_dataset(data, range(len(data))))
    return {k: report.stats[k] for k in METRICS[detector.task.name]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=tuple(METRICS), default="ctdet")
    parser.add_argument("--weights", type=Path, default=None,
                        help="checkpoint (.pt) of --task (ctdet: trained on raccoon); default: overfit a ResNet-18 on --images")
    parser.add_argument("--images", type=int, default=4, help="images scored (ctdet with --weights: all 40) (default: %(default)s)")
    parser.add_argument("--size", type=int, default=128, help="overfit model's input (ddd: width) (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=100, help="overfit steps (default: %(default)s)")
    parser.add_argument("--calibration-count", type=int, default=64)
    parser.add_argument("--runs", type=int, default=20, help="interleaved timing rounds (medians)")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    parser.add_argument("--output", type=Path, default=None, help="folder for the graphs (default: a temporary one)")
    args = parser.parse_args()
    if args.runs < 10:
        parser.error("--runs: at least 10 rounds for the medians")

    with tempfile.TemporaryDirectory(prefix="bench_int8_") as scratch:
        folder = args.output or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        calibration = Path(scratch) / "calibration"
        calibration.mkdir()
        data, calibration_photos = _eval_set(args.task, args.images if args.weights is None or args.task != "ctdet" else None)
        print(f"# INT8 vs float32 onnxruntime, {args.task}: {args.weights or 'ResNet-18 overfit on the scored images'}\n")
        print("```")
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
              f"onnxruntime {ort.__version__}, {args.threads} intra-op threads")
        print(f"load average at the start: {' '.join(f'{v:.2f}' for v in _load())}")
        if args.weights is None:
            started = time.perf_counter()
            args.weights = _overfit(args.task, data, args.size, args.steps, folder)
            print(f"overfit {args.steps} steps at --size {args.size} on {len(data)} images: {time.perf_counter() - started:.0f} s")
        for source in calibration_photos:
            (calibration / source.name).symlink_to(source)
        print(f"calibration: {min(args.calibration_count, len(calibration_photos))} of {len(calibration_photos)} other photos")
        paths = {}
        for name in VARIANTS:
            started = time.perf_counter()
            paths[name] = export_onnx(
                args.weights, folder / f"{name}.onnx", int8=name == "int8",
                calibration_images=calibration if name == "int8" else None, calibration_count=args.calibration_count,
            )
            print(f"export {name}: {time.perf_counter() - started:.1f} s, {paths[name].stat().st_size / 2**20:.1f} MiB")
        meta = read_metadata(paths["float32"])
        print(f"model: {meta.arch} ({meta.task}), input {meta.input_hw[0]}x{meta.input_hw[1]}, K {meta.K}, flip test {meta.flip}")
        detectors = {name: OnnxDetector(path, threads=args.threads) for name, path in paths.items()}

        image = load_image(data.records[0].path)
        graph, end_to_end, loads = _time_interleaved(detectors, image, args.runs, data.records[0].calib)
        print(f"timing: {args.runs} interleaved rounds on {data.records[0].path.name} ({image.shape[1]}x{image.shape[0]}); "
              f"1-min load average per round {min(loads):.2f}..{max(loads):.2f}")

        ap = {name: _onnx_ap(detector, data) for name, detector in detectors.items()}
        pytorch = _pytorch_ap(args.weights, meta, data)
        print(f"load average at the end: {' '.join(f'{v:.2f}' for v in _load())}")
        print("```\n")

    metrics = METRICS[args.task]
    print(f"| runtime | graph ms (median) | end to end ms (median) | {' | '.join(metrics)} |")
    print("|---|---|---|" + "---|" * len(metrics))
    print("| PyTorch float32 (`Predictor`, the graph's input, K, flip) | | | "
          + " | ".join(f"{pytorch[k]:.3f}" for k in metrics) + " |")
    for name in VARIANTS:
        print(f"| onnxruntime {name} | {graph[name] * 1e3:.1f} | {end_to_end[name] * 1e3:.1f} | "
              + " | ".join(f"{ap[name][k]:.3f}" for k in metrics) + " |")
    cost = ", ".join(f"{k} {ap['int8'][k] - ap['float32'][k]:+.3f}" for k in metrics)
    print(f"\nINT8 / float32: graph {graph['float32'] / graph['int8']:.2f}x faster, end to end "
          f"{end_to_end['float32'] / end_to_end['int8']:.2f}x faster; {cost} ({len(data)} images).")


if __name__ == "__main__":
    main()
