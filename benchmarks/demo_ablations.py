"""The demo recipe's figures in docs/demo.md: ``centernet demo`` and the settings it was tuned with.

Each variant trains the demo recipe (``configs/ctdet_res18_synthetic.yaml``, through
``centernet.engine.demo.run_demo``) with one setting changed and prints the final validation COCO
AP (flip test) and the wall time. The log of a run is committed beside ``RESULTS*.md``
(``demo_ablations.log``); docs/demo.md and the README quote it.

    python benchmarks/demo_ablations.py                      # the demo itself
    python benchmarks/demo_ablations.py --variants all       # every variant (about 9 min each, 2 idle cores)
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from centernet.engine.demo import run_demo

#: name -> overrides of the demo recipe (docs/demo.md).
VARIANTS: dict[str, list[str]] = {
    "demo": [],
    "seed_1": ["train.seed=1"],
    "head_init_original": ["model.head_init=original"],
    "wh_loss_0.1": ["train.loss_weights={wh_loss: 0.1}"],
    "wh_loss_0.4": ["train.loss_weights={wh_loss: 0.4}"],
    "no_warmup": ["train.warmup_iters=0"],
    "no_warmup_seed_1": ["train.warmup_iters=0", "train.seed=1"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", nargs="+", default=["demo"], help=f"any of {', '.join(VARIANTS)}, or all")
    parser.add_argument("--project", default="runs/benchmarks/demo")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    names = list(VARIANTS) if args.variants == ["all"] else args.variants
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    torch.set_num_threads(args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, {args.threads} torch threads, torch {torch.__version__}")
    print("load average at start (1, 5, 15 min): {:.2f} {:.2f} {:.2f} on {} cores".format(*os.getloadavg(), os.cpu_count()), flush=True)
    rows = []
    for name in names:
        started = time.time()
        summary = run_demo(f"{args.project}/{name}", overrides=[*VARIANTS[name], f"train.threads={args.threads}", f"test.threads={args.threads}"])
        minutes = (time.time() - started) / 60
        rows.append((name, " ".join(VARIANTS[name]) or "(the recipe)", summary["AP"], summary["AP50"], summary["AP75"], minutes))
        print(f"{name}: AP {summary['AP']:.3f} AP50 {summary['AP50']:.3f} AP75 {summary['AP75']:.3f} in {minutes:.1f} min", flush=True)
    print("load average at end (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print("\n| variant | overrides | AP | AP50 | AP75 | minutes |\n|---|---|---|---|---|---|")
    for name, overrides, ap, ap50, ap75, minutes in rows:
        print(f"| {name} | `{overrides}` | {ap:.3f} | {ap50:.3f} | {ap75:.3f} | {minutes:.1f} |")


if __name__ == "__main__":
    main()
