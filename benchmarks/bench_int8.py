"""INT8 against float32 onnxruntime, in one run: speed, and COCO AP on the raccoon val photos.

From one checkpoint (e.g. the ``ctdet_effl0_raccoon_384`` run of ``benchmarks/train_raccoon.py``):

1. exports the float32 decoded graph and the INT8 one (``export_onnx(..., int8=True)``, calibrated
   on ``--calibration-count`` of the raccoon *training* photos, none of the val photos);
2. times both with onnxruntime, ``--threads`` intra-op threads, interleaved (float32, INT8, float32,
   ...) on the same val photo, ``--runs`` rounds: the graph alone (``session.run`` on a
   pre-processed input, decoding included) and end to end (``OnnxDetector.predict`` on the BGR
   photo: letterbox, normalisation, graph); medians, with the load average of every round;
3. scores both on the 40 val photos with the project's COCO scoring (``score_coco``, as
   ``centernet val``), and the checkpoint itself through ``evaluate_checkpoint`` with the same
   single-scale test (the graphs do not flip), which float32 ONNX should equal;
4. prints a markdown report (commit it as ``benchmarks/RESULTS_int8.md``).

Example::

    python benchmarks/bench_int8.py --weights runs/benchmarks/effl0_384/best.pt > benchmarks/RESULTS_int8.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from centernet.data.check import load_dataset
from centernet.data.image_io import load_image
from centernet.engine.evaluate import evaluate_checkpoint
from centernet.evaluation.scoring import score_coco
from centernet.export.onnx import OnnxDetector, export_onnx, read_metadata
from centernet.tasks.ctdet import CtdetTask

VARIANTS = ("float32", "int8")
METRICS = ("AP", "AP50", "AP75")


def _load() -> tuple[float, float, float]:
    return os.getloadavg()


def _calibration_folder(train_json: Path, folder: Path, count: int) -> Path:
    """A folder of links to the training photos (``calibration_files`` takes ``count`` of them)."""
    images = json.loads(train_json.read_text())["images"]
    for image in images:
        source = train_json.parent / "images" / image["file_name"]
        (folder / source.name).symlink_to(source)
    print(f"calibration: {min(count, len(images))} of the {len(images)} training photos")
    return folder


def _time_interleaved(detectors: dict[str, OnnxDetector], image: np.ndarray, runs: int) -> tuple[dict, dict, list]:
    """Median seconds per variant, graph alone and end to end, from ``runs`` interleaved rounds."""
    inputs, trans = next(iter(detectors.values())).preprocess([image])
    graph = {name: [] for name in detectors}
    end_to_end = {name: [] for name in detectors}
    loads = []
    for name, detector in detectors.items():  # warm-up: first runs allocate and pick kernels
        for _ in range(3):
            detector.session.run(None, {"images": inputs, "trans": trans})
    for _ in range(runs):
        for name, detector in detectors.items():
            started = time.perf_counter()
            detector.session.run(None, {"images": inputs, "trans": trans})
            graph[name].append(time.perf_counter() - started)
            started = time.perf_counter()
            detector.predict([image])
            end_to_end[name].append(time.perf_counter() - started)
        loads.append(_load()[0])
    return ({k: statistics.median(v) for k, v in graph.items()}, {k: statistics.median(v) for k, v in end_to_end.items()}, loads)


def _onnx_ap(detector: OnnxDetector, data) -> dict[str, float]:
    predictions = {i: detector.predict([load_image(record.path)])[0] for i, record in enumerate(data.records)}
    report = score_coco(CtdetTask(len(data.class_names)), data, predictions, keypoints=False)
    return {k: report.stats[k] for k in METRICS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", type=Path, required=True, help="checkpoint trained on raccoon (.pt)")
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "raccoon")
    parser.add_argument("--calibration-count", type=int, default=64)
    parser.add_argument("--runs", type=int, default=20, help="interleaved timing rounds (medians)")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    parser.add_argument("--output", type=Path, default=None, help="folder for the graphs (default: a temporary one)")
    args = parser.parse_args()
    if not (args.data / "train.json").is_file() or not (args.data / "val.json").is_file():
        parser.error(f"{args.data}: no raccoon data set here (train.json, val.json); pass --data")
    if args.runs < 10:
        parser.error("--runs: at least 10 rounds for the medians")

    with tempfile.TemporaryDirectory(prefix="bench_int8_") as scratch:
        folder = args.output or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        calibration = Path(scratch) / "calibration"
        calibration.mkdir()
        print(f"# INT8 vs float32 onnxruntime: {args.weights}\n")
        print("```")
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
              f"onnxruntime {ort.__version__}, {args.threads} intra-op threads")
        print(f"load average at the start: {' '.join(f'{v:.2f}' for v in _load())}")
        _calibration_folder(args.data / "train.json", calibration, args.calibration_count)
        paths = {}
        for name in VARIANTS:
            started = time.perf_counter()
            paths[name] = export_onnx(
                args.weights, folder / f"{name}.onnx", int8=name == "int8",
                calibration_images=calibration if name == "int8" else None, calibration_count=args.calibration_count,
            )
            print(f"export {name}: {time.perf_counter() - started:.1f} s, {paths[name].stat().st_size / 2**20:.1f} MiB")
        meta = read_metadata(paths["float32"])
        print(f"model: {meta.arch}, input {meta.input_hw[0]}x{meta.input_hw[1]}, K {meta.K}")
        detectors = {name: OnnxDetector(path, threads=args.threads) for name, path in paths.items()}

        data = load_dataset(args.data / "val.json")
        image = load_image(data.records[0].path)
        graph, end_to_end, loads = _time_interleaved(detectors, image, args.runs)
        print(f"timing: {args.runs} interleaved rounds on {data.records[0].path.name} ({image.shape[1]}x{image.shape[0]}); "
              f"1-min load average per round {min(loads):.2f}..{max(loads):.2f}")

        ap = {name: _onnx_ap(detector, data) for name, detector in detectors.items()}
        overrides = [f"data.val_source={args.data / 'val.json'}", "test.flip=false"]
        pytorch = evaluate_checkpoint(args.weights, overrides=overrides).stats
        print(f"load average at the end: {' '.join(f'{v:.2f}' for v in _load())}")
        print("```\n")

    print("| runtime | graph ms (median) | end to end ms (median) | AP | AP50 | AP75 |")
    print("|---|---|---|---|---|---|")
    print("| PyTorch float32 (`evaluate_checkpoint`, no flip) | | | "
          + " | ".join(f"{pytorch[k]:.3f}" for k in METRICS) + " |")
    for name in VARIANTS:
        print(f"| onnxruntime {name} | {graph[name] * 1e3:.1f} | {end_to_end[name] * 1e3:.1f} | "
              + " | ".join(f"{ap[name][k]:.3f}" for k in METRICS) + " |")
    print(f"\nINT8 / float32: graph {graph['float32'] / graph['int8']:.2f}x faster, end to end "
          f"{end_to_end['float32'] / end_to_end['int8']:.2f}x faster; AP {ap['int8']['AP'] - ap['float32']['AP']:+.3f}, "
          f"AP50 {ap['int8']['AP50'] - ap['float32']['AP50']:+.3f}, AP75 {ap['int8']['AP75'] - ap['float32']['AP75']:+.3f} "
          f"({len(data)} val photos).")


if __name__ == "__main__":
    main()
