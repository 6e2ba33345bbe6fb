"""Inference benchmark: CenterNet stage by stage and its peers, interleaved, as one markdown report.

One command, one report per run::

    python benchmarks/bench_inference.py --quick            # res_18, dla_34, dlav0_34 and the peers, 512, batch 1
    python benchmarks/bench_inference.py                    # also the mobile CenterNet, batch 1 and 8
    python benchmarks/bench_inference.py --device cuda --amp fp16 --archs res_18 dla_34 --batches 1 32
    python benchmarks/bench_inference.py --mobile --threads 2     # Lite0 eager / onnxruntime / INT8 against YOLO, 384 and 512

Every variant of every model of one (size, batch) runs interleaved (``timing.interleaved``: one run
of each per round, ``--repeats`` rounds, at least 10), so they all see the same load; medians are
taken per stage, and the 1-minute load average is recorded with every run and printed per variant.
Absolute times on a shared machine are inflated; the ratios between rows of one run are what
counts, and the "Ratios" section computes the ones the project tracks against a baseline measured
in the same run (res_18 eager end to end, or its network). The pipelines are in
``benchmarks/pipelines.py``: CenterNet through the one inference path ``Predictor`` (eager,
channels_last, ``test.compile`` / CUDA graphs, autocast on CUDA, onnxruntime on the exported
graph, float32 or INT8), torchvision's RetinaNet, Faster R-CNN MobileNetV3-FPN and SSDlite320 with
score threshold 0, and Ultralytics YOLOv8n and YOLO11n from their yamls, eager and onnxruntime (the
``bench`` extra). All weights are random. ``--mobile`` is the mobile CenterNet's run: Lite0 eager,
onnxruntime and INT8 against the two YOLOs, at 384 and 512, batch 1.

Then the training input pipeline on coco_mini (one worker) and the res_18 training step.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from pipelines import (
    CENTERNET_STAGES,
    COCO_MINI,
    Variant,
    centernet_variants,
    torchvision_variants,
    training_sample_rates,
    training_step_rate,
    yolo_variants,
)
from timing import (
    LOADED,
    Measurement,
    PeakMemory,
    interleaved,
    load_average,
    synchronizer,
)

from centernet.data.image_io import load_image

MOBILE_CENTERNET = "timm_tf_efficientnet_lite0"
DECODE_BUDGET = 0.05  # decoding <= 5 % of the network time (res_18, 512, CPU)
END_TO_END_BUDGET = 1.10  # end to end <= 1.10 x the network alone
MIN_REPEATS = 10


@dataclass
class Row:
    """One variant's medians per stage, with its load and memory."""

    variant: Variant
    measurements: dict[str, Measurement]

    def median(self, stage: str) -> float:
        m = self.measurements.get(stage)
        return m.median if m is not None else float("nan")

    @property
    def end_to_end(self) -> Measurement:
        return self.measurements.get("end_to_end", Measurement())

    @property
    def failure(self) -> str:
        return self.variant.note if not self.measurements else next((m.failure for m in self.measurements.values() if m.failure), "")


@dataclass
class Ratio:
    """A ratio the project tracks: ``numerator / denominator`` medians of the same run."""

    name: str
    numerator: tuple[str, str, str]  # (model, variant, stage)
    denominator: tuple[str, str, str]
    goal: str = "--"
    limit: float | None = None  # the ratio must be at most this
    floor: float | None = None  # the ratio must be at least this

    def value(self, rows: list[Row]) -> float:
        def find(key: tuple[str, str, str]) -> float:
            model, variant, stage = key
            return next((r.median(stage) for r in rows if (r.variant.model, r.variant.variant) == (model, variant)), float("nan"))

        return find(self.numerator) / find(self.denominator)


RATIOS = [
    Ratio("res_18 end to end / res_18 network", ("res_18", "eager", "end_to_end"), ("res_18", "eager", "network"), "<= 1.10", END_TO_END_BUDGET),
    Ratio("Faster R-CNN MobileNetV3-FPN end to end / res_18 end to end",
          ("fasterrcnn_mobilenet_v3_large_fpn", "eager", "end_to_end"), ("res_18", "eager", "end_to_end"), ">= 2", floor=2.0),
    Ratio("RetinaNet-R50-FPN end to end / res_18 end to end",
          ("retinanet_resnet50_fpn", "eager", "end_to_end"), ("res_18", "eager", "end_to_end")),
    Ratio("SSDlite320 (at 320) end to end / res_18 end to end",
          ("ssdlite320_mobilenet_v3_large", "eager", "end_to_end"), ("res_18", "eager", "end_to_end")),
    Ratio("YOLOv8n end to end / res_18 end to end", ("yolov8n", "eager", "end_to_end"), ("res_18", "eager", "end_to_end")),
    Ratio("dla_34 network / dlav0_34 network (deformable convs / plain)",
          ("dla_34", "eager", "network"), ("dlav0_34", "eager", "network"), "<= 1.5", 1.5),
    Ratio(f"{MOBILE_CENTERNET} end to end / res_18 end to end", (MOBILE_CENTERNET, "eager", "end_to_end"), ("res_18", "eager", "end_to_end")),
    Ratio(f"{MOBILE_CENTERNET} INT8 end to end / YOLOv8n onnxruntime end to end",
          (MOBILE_CENTERNET, "onnxruntime int8", "end_to_end"), ("yolov8n", "onnxruntime", "end_to_end"), "<= 1.0", 1.0),
    Ratio(f"{MOBILE_CENTERNET} INT8 graph (decoding inside) / YOLOv8n onnxruntime graph (NMS outside)",
          (MOBILE_CENTERNET, "onnxruntime int8", "network"), ("yolov8n", "onnxruntime", "network")),
    Ratio(f"{MOBILE_CENTERNET} INT8 end to end / YOLO11n onnxruntime end to end",
          (MOBILE_CENTERNET, "onnxruntime int8", "end_to_end"), ("yolo11n", "onnxruntime", "end_to_end")),
    Ratio(f"{MOBILE_CENTERNET} onnxruntime end to end / YOLOv8n onnxruntime end to end",
          (MOBILE_CENTERNET, "onnxruntime", "end_to_end"), ("yolov8n", "onnxruntime", "end_to_end")),
    Ratio(f"{MOBILE_CENTERNET} eager end to end / YOLOv8n eager end to end",
          (MOBILE_CENTERNET, "eager", "end_to_end"), ("yolov8n", "eager", "end_to_end")),
]


def ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{1000 * seconds:.1f}"


def load_text(m: Measurement) -> str:
    if not m.samples:
        return "-"
    low, high = m.load_range
    return f"{m.median_load:.1f} ({low:.1f}-{high:.1f})"


def format_table(rows: list[Row]) -> str:
    header = ("| model | variant | size | batch | preprocess ms | network ms | decode ms | postprocess ms | end-to-end ms | "
              "images/s | network vs eager | runs | peak MiB | load avg (min-max) | note |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    eager_network = {(r.variant.model, r.variant.size, r.variant.batch): r.median("network") for r in rows if r.variant.variant == "eager"}
    for row in rows:
        v, e2e = row.variant, row.end_to_end
        base = eager_network.get((v.model, v.size, v.batch), float("nan"))
        ratio = row.median("network") / base
        fps = "-" if math.isnan(e2e.median) else f"{v.batch / e2e.median:.2f}"
        note = "; ".join(dict.fromkeys(n for n in (v.note, row.failure) if n))
        lines.append(
            f"| {v.model} | {v.variant} | {v.size} | {v.batch} | "
            + " | ".join(ms(row.median(stage)) for stage in CENTERNET_STAGES)
            + f" | {fps} | {'-' if math.isnan(ratio) else f'{ratio:.2f}x'} | {len(e2e.samples)} | "
            + f"{'-' if math.isnan(e2e.peak_mib) else f'{e2e.peak_mib:.0f}'} | {load_text(e2e)} | {note} |"
        )
    return "\n".join(lines)


def ratio_lines(rows: list[Row]) -> list[str]:
    """The tracked ratios of each (size, batch) group, against baselines of the same run."""
    lines = []
    for size, batch in dict.fromkeys((r.variant.size, r.variant.batch) for r in rows):
        group = [r for r in rows if (r.variant.size, r.variant.batch) == (size, batch)]
        loads = [s.load for r in group for m in r.measurements.values() for s in m.samples]
        load = statistics.median(loads) if loads else float("nan")
        marked = "loaded machine" if load > LOADED else "quiet machine"
        lines += [f"\n### Ratios at {size}, batch {batch} (median load average {load:.1f}: {marked})\n",
                  "| ratio | value | goal | verdict |", "|---|---|---|---|"]
        for ratio in RATIOS:
            value = ratio.value(group)
            if math.isnan(value):
                continue
            if ratio.limit is not None:
                verdict = "ok" if value <= ratio.limit else "OVER"
            elif ratio.floor is not None:
                verdict = "ok" if value >= ratio.floor else "UNDER"
            else:
                verdict = "-"
            lines.append(f"| {ratio.name} | {value:.2f} | {ratio.goal} | {verdict} |")
    return lines


def budget_lines(rows: list[Row]) -> list[str]:
    """The decoding share and end-to-end overhead of every eager CenterNet row."""
    lines = []
    for row in rows:
        network, decode, e2e = row.median("network"), row.median("decode"), row.median("end_to_end")
        if row.variant.variant != "eager" or math.isnan(decode):
            continue
        share, overhead = decode / network, e2e / network
        lines.append(
            f"- {row.variant.model} {row.variant.size} b{row.variant.batch}: decode = {100 * share:.1f}% of the network "
            f"({'ok' if share <= DECODE_BUDGET else 'OVER'} <= {100 * DECODE_BUDGET:.0f}%), "
            f"end to end = {overhead:.3f}x the network ({'ok' if overhead <= END_TO_END_BUDGET else 'OVER'} <= {END_TO_END_BUDGET}x)"
        )
    return lines


def machine_description(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    parts = [
        f"{cpu}, {os.cpu_count()} cores visible, torch threads {torch.get_num_threads()}",
        f"python {platform.python_version()}, torch {torch.__version__}",
    ]
    if device.type == "cuda":
        parts.append(f"GPU {torch.cuda.get_device_name(device)}")
    return "; ".join(parts)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=None,
                        help=f"default res_18 dla_34 dlav0_34 {MOBILE_CENTERNET} (--quick: res_18 dla_34 dlav0_34)")
    parser.add_argument("--sizes", nargs="+", type=int, default=None, help="default 512 (--mobile: 384 512)")
    parser.add_argument("--batches", nargs="+", type=int, default=None, help="default 1 8 (--quick: 1)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--amp", choices=("none", "fp16", "bf16"), default="fp16", help="autocast variant on CUDA")
    parser.add_argument("--variants", nargs="*", default=None, choices=("channels_last", "compile", "onnx", "int8"),
                        help="variants besides eager (default channels_last compile onnx; --quick: onnx; --mobile: onnx int8)")
    parser.add_argument("--no-torchvision", action="store_true", help="skip the torchvision detectors and the YOLOs")
    parser.add_argument("--no-training", action="store_true", help="skip the training input / step throughput")
    # The first runs of a network on the CPU are several times slower (oneDNN primitives, allocator).
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20, help=f"interleaved rounds (at least {MIN_REPEATS})")
    parser.add_argument("--train-images", type=int, default=80, help="coco_mini images for the input pipeline")
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--train-steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="res_18, dla_34, dlav0_34 and peers, batch 1, 10 rounds, small training runs")
    parser.add_argument("--mobile", action="store_true",
                        help=f"{MOBILE_CENTERNET} eager, onnxruntime and INT8 against YOLOv8n and YOLO11n (eager, onnxruntime), "
                        "384 and 512, batch 1, no torchvision peers, no training")
    args = parser.parse_args(argv)
    args.torchvision_peers = not args.no_torchvision
    args.sizes = args.sizes or ([384, 512] if args.mobile else [512])
    if args.mobile:
        args.archs = args.archs or [MOBILE_CENTERNET]
        args.batches = args.batches or [1]
        args.variants = ["onnx", "int8"] if args.variants is None else args.variants
        args.torchvision_peers, args.no_training = False, True
    args.archs = args.archs or (["res_18", "dla_34", "dlav0_34"] + ([] if args.quick else [MOBILE_CENTERNET]))
    args.batches = args.batches or ([1] if args.quick else [1, 8])
    if args.variants is None:
        args.variants = ["onnx"] if args.quick else ["channels_last", "compile", "onnx"]
    if args.quick:
        args.repeats = MIN_REPEATS
        args.train_images, args.train_batch, args.train_steps = 16, 2, 2
    if args.repeats < MIN_REPEATS:
        parser.error(f"--repeats {args.repeats}: medians need at least {MIN_REPEATS} runs")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    image_paths = sorted((COCO_MINI / "val2017").glob("*.jpg"))[:8]
    if not image_paths:
        print(f"error: no images under {COCO_MINI / 'val2017'}; set CENTERNET_DATA_DIR", file=sys.stderr)
        return 2
    images = [load_image(p) for p in image_paths]
    started, load_at_start = time.perf_counter(), load_average()

    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as workdir:
        for size in args.sizes:
            for batch in args.batches:
                variants: list[Variant] = []
                for arch in args.archs:
                    variants += centernet_variants(arch, size, batch, images, device, args.variants, args.amp, Path(workdir), threads=args.threads or "auto")
                if args.torchvision_peers:
                    variants += torchvision_variants(size, batch, images, device)
                if not args.no_torchvision:
                    variants += yolo_variants(size, batch, images, device, args.variants, Path(workdir))
                tasks = {(i, stage): run for i, v in enumerate(variants) for stage, run in v.stages.items()}
                print(f"  timing {len(tasks)} tasks of {len(variants)} variants at {size}, batch {batch} ...", file=sys.stderr, flush=True)
                measured = interleaved({f"{i}/{stage}": run for (i, stage), run in tasks.items()}, args.repeats, args.warmup,
                                       synchronizer(device), PeakMemory(device))
                for i, variant in enumerate(variants):
                    rows.append(Row(variant, {stage: measured[f"{i}/{stage}"] for stage in variant.stages}))
                del variants, tasks

    print(f"\n## Inference ({args.device}; {args.repeats} interleaved rounds after {args.warmup} warm-up, medians; "
          f"COCO val images {images[0].shape[1]}x{images[0].shape[0]}...)\n")
    print(f"Machine: {machine_description(device)}; load average at the start {load_at_start:.1f}\n")
    print(format_table(rows))
    print("\n".join(ratio_lines(rows)))
    print("\nBudgets (eager CenterNet):")
    print("\n".join(budget_lines(rows)))

    if not args.no_training:
        size = args.sizes[0]
        rates, samples, num_classes = training_sample_rates(size, args.train_images)
        step_rate = training_step_rate(samples, num_classes, args.train_batch, args.train_steps, device)
        print(f"\n## Training input and step throughput ({size}x{size}, coco_mini train, one worker; load average {load_average():.1f})\n")
        print("| stage | value |\n|---|---|")
        for name, value in rates.items():
            print(f"| {name} | {value:.2f} |")
        print(f"| res_18 training step (batch {args.train_batch}, {args.train_steps} steps) images/s | {step_rate:.2f} |")
    print(f"\n(total benchmark time {time.perf_counter() - started:.0f} s; load average at the end {load_average():.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
