"""Where an onnxruntime graph spends its time: per operator type and per node, from onnxruntime's profiler.

Exports the CenterNet network (random weights, 80 classes, decoding in the graph) as float32 and
INT8 (``export_onnx(..., int8=True)``, calibrated on coco_mini training photos) and, with the
``bench`` extra, YOLOv8n from its yaml (``torch.onnx.export``); runs each ``--runs`` times with
onnxruntime's profiling on and prints, per graph, the summed kernel time of each operator type
(the decoder's nodes, ``decode/...`` in the INT8 graph, counted apart) and the slowest nodes with
their input shapes. On a shared machine absolute times are inflated; the shares are what counts.

    python benchmarks/profile_onnx.py --size 512
"""
from __future__ import annotations

import argparse
import collections
import copy
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from pipelines import CALIBRATION_IMAGES, COCO_MINI, K, NUM_CLASSES, export_yolo_onnx

from centernet.models.detector import CenterNet
from centernet.export.int8 import DECODER_PREFIX
from centernet.export.onnx import export_onnx


def profile(path: Path, size: int, runs: int, threads: int) -> tuple[collections.Counter, list[tuple[float, str, str, str]]]:
    """``({op type: ms per run}, [(ms per run, op type, node, input shapes)])`` of ``runs`` profiled runs."""
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {"images": np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)}
    if any(i.name == "trans" for i in session.get_inputs()):
        feed["trans"] = np.eye(2, 3, dtype=np.float32)[None]
    session.run(None, feed)  # warm-up, also profiled: dropped below by counting the last `runs` only
    for _ in range(runs):
        session.run(None, feed)
    trace = Path(session.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    per_node: dict[str, list] = {}
    for event in kernels:
        name = event["name"][: -len("_kernel_time")]
        entry = per_node.setdefault(name, [[], event["args"]["op_name"], str(event["args"].get("input_type_shape", ""))])
        entry[0].append(event["dur"] / 1000)
    by_op: collections.Counter = collections.Counter()
    nodes = []
    for name, (durations, op, shapes) in per_node.items():
        ms = sum(durations[-runs:]) / runs
        by_op[("decoder " if name.startswith(DECODER_PREFIX) else "") + op] += ms
        nodes.append((ms, op, name, shapes))
    return by_op, sorted(nodes, reverse=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="timm_tf_efficientnet_lite0")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    parser.add_argument("--top", type=int, default=12, help="slowest nodes listed per graph")
    args = parser.parse_args()
    print(f"load average at the start: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="profile_onnx_") as folder:
        torch.manual_seed(0)
        detector = CenterNet(args.arch, num_classes=NUM_CLASSES, input_size=(args.size, args.size), K=K).eval()
        graphs = {
            f"{args.arch} float32": export_onnx(copy.deepcopy(detector), Path(folder) / "f32.onnx", K=K),
            f"{args.arch} INT8": export_onnx(copy.deepcopy(detector), Path(folder) / "int8.onnx", K=K, int8=True,
                                             calibration_images=COCO_MINI / "train2017", calibration_count=CALIBRATION_IMAGES),
        }
        try:
            from ultralytics import YOLO

            model = YOLO("yolov8n.yaml").model.eval().fuse(verbose=False)
            graphs["yolov8n float32"] = export_yolo_onnx(model, Path(folder) / "yolov8n.onnx", args.size, 1)
        except ImportError as exc:
            print(f"yolov8n skipped: {exc}", file=sys.stderr)
        for title, path in graphs.items():
            by_op, nodes = profile(path, args.size, args.runs, args.threads)
            total = sum(by_op.values())
            print(f"\n### {title} at {args.size} (sum of kernel times {total:.1f} ms per run; load average {os.getloadavg()[0]:.1f})\n")
            print("| operator | ms per run | share |\n|---|---|---|")
            for op, ms in by_op.most_common():
                if ms >= 0.005 * total:
                    print(f"| {op} | {ms:.1f} | {100 * ms / total:.1f}% |")
            print(f"\nSlowest {args.top} nodes: " + "; ".join(f"{op} {ms:.1f} ms {shapes[:70]}" for ms, op, _, shapes in nodes[: args.top]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
