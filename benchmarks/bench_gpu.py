"""GPU benchmark: res_18 and dla_34 at 512, batch 1 and 32, float16, end-to-end images/s through the Predictor.

Run by ``benchmarks/gpu_check.sh``; alone::

    python benchmarks/bench_gpu.py                       # eager float16, CUDA graphs at batch 1
    python benchmarks/bench_gpu.py --compile-batches     # no CUDA-graph rows

End to end is ``Predictor.detect`` on uint8 COCO val images: the letterbox warp on the CPU, uint8
upload, normalisation, the network under float16 autocast, decoding, and the detections back on
the host as ``Results``. The float32 eager row of each model is the reference of the same run; the
variants run interleaved (``timing.interleaved``). The paper's figures are end-to-end FPS on a
Titan Xp at batch 1 (res_18 142, dla_34 52); the project's goals are 1000 and 400 FPS at batch 1 on
an H100-class GPU.
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from pipelines import COCO_MINI, centernet_variants
from timing import PeakMemory, interleaved, synchronizer

from centernet.data.image_io import load_image

PAPER_FPS = {"res_18": 142, "dla_34": 52}  # the paper's Table 1, Titan Xp, batch 1
GOAL_FPS = {"res_18": 1000, "dla_34": 400}  # batch 1, H100


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda or cuda:N (cpu: a dry run of the script itself)")
    parser.add_argument("--archs", nargs="+", default=["res_18", "dla_34"])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--compile-batches", nargs="*", type=int, default=[1], help="batches that also run the CUDA-graph variant")
    parser.add_argument("--repeats", type=int, default=20, help="interleaved rounds (at least 10)")
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)
    if args.repeats < 10:
        parser.error("--repeats: medians need at least 10 runs")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("GPU benchmark skipped: no CUDA GPU (torch.cuda.is_available() is False)")
        return 0
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU dry run"
    images = [load_image(p) for p in sorted((COCO_MINI / "val2017").glob("*.jpg"))[:8]]
    if not images:
        print(f"error: no images under {COCO_MINI / 'val2017'}; set CENTERNET_DATA_DIR", file=sys.stderr)
        return 2
    started = time.perf_counter()
    lines = [
        (f"## GPU inference ({name}, torch {torch.__version__}, {args.size}x{args.size}, "
         f"medians of {args.repeats} interleaved rounds)\n"),
        "| model | batch | variant | network ms | end-to-end ms / batch | images/s | paper FPS (Titan Xp, b1) | goal (b1) | verdict | peak MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    # Rows are printed per batch as they are measured: a run stopped by a time limit keeps them.
    print("\n".join(lines), flush=True)
    with tempfile.TemporaryDirectory() as workdir:
        for batch in args.batches:
            extra = ["compile"] if batch in args.compile_batches else []
            variants = []
            for arch in args.archs:
                variants += centernet_variants(arch, args.size, batch, images, device, extra, "fp16", Path(workdir))
            tasks = {f"{i}/{stage}": run for i, v in enumerate(variants) for stage, run in v.stages.items() if stage in ("network", "end_to_end")}
            measured = interleaved(tasks, args.repeats, args.warmup, synchronizer(device), PeakMemory(device))
            rows = []
            for i, v in enumerate(variants):
                network, e2e = measured.get(f"{i}/network"), measured.get(f"{i}/end_to_end")
                fps = batch / e2e.median if e2e is not None and e2e.samples else float("nan")
                goal = GOAL_FPS.get(v.model) if batch == 1 else None
                verdict = "-" if goal is None or math.isnan(fps) or "16" not in v.variant else ("ok" if fps >= goal else "under")
                failure = v.note if e2e is None else e2e.failure
                rows.append(
                    f"| {v.model} | {batch} | {v.variant}{f' ({failure})' if failure else ''} | "
                    f"{1000 * network.median if network is not None else float('nan'):.2f} | "
                    f"{1000 * e2e.median if e2e is not None else float('nan'):.2f} | {fps:.0f} | "
                    f"{PAPER_FPS.get(v.model, '-') if batch == 1 else '-'} | {goal or '-'} | {verdict} | "
                    f"{e2e.peak_mib if e2e is not None else float('nan'):.0f} |"
                )
            print("\n".join(rows), flush=True)
            del variants, tasks, measured
            if device.type == "cuda":
                torch.cuda.empty_cache()
    print(f"\n(GPU benchmark time {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
