"""Training threads on a busy machine: the demo recipe's steps with the default thread choice against fixed counts.

One command, one report::

    python benchmarks/bench_threads.py --contend 2 --output benchmarks/RESULTS_threads.md

The demo recipe (``configs/ctdet_res18_synthetic.yaml``: res_18, 128x128, batch 8, bfloat16
autocast, channels_last, 2 DataLoader workers) is built once per variant as ``centernet train``
builds it (``engine.trainer.Trainer``), with ``train.threads`` set to ``auto`` (the default: chosen
from the free cores, re-chosen every few seconds) or to a fixed count (1, 2, ... up to the cores).
Each variant then runs ``--steps`` optimisation steps per round (``Trainer.train_step`` on the
DataLoader's batches, data waiting included), the variants interleaved in a new order each round;
the report gives the median seconds per step over ``--rounds`` rounds after one warm-up round.

Two conditions in one run: as the machine is (no process started here; on a shared machine
other work is running, and the load average says how much), then with ``--contend N`` busy
processes this script starts and stops. The goal: the default within 1.2x the best fixed count in
both. A control row, a second trainer with ``train.threads=1`` (not counted as a fixed count),
shows how far two identical settings differ in the same run: the noise a ratio is read against.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

# auto must choose, not take a shell's setting: cleared before torch starts its thread pool (as the
# process starts, OMP_NUM_THREADS is a setting; see centernet.threads.ENVIRONMENT_THREADS).
os.environ.pop("OMP_NUM_THREADS", None)

import torch  # noqa: E402

from centernet.config import load_config  # noqa: E402
from centernet.engine.trainer import Trainer  # noqa: E402
from centernet.threads import available_cores  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import contention, load_average  # noqa: E402  (benchmarks/ is a script folder)


CONTROL = "1 (control)"


class Variant:
    """A demo trainer with one ``train.threads`` setting and an endless stream of its batches."""

    def __init__(self, setting: str, folder: Path, args: argparse.Namespace, label: str | None = None) -> None:
        overrides = [
            f"train.threads={setting}", f"project={folder}", f"name=threads-{setting}{'-control' if label else ''}", "train.tensorboard=false",
            f"data.synthetic_images={{train: {args.images}, val: 8}}", f"data.num_workers={args.workers}",
        ]
        self.setting = label or setting
        self.trainer = Trainer(load_config(args.recipe, overrides))
        self.trainer.network.train()
        self.epoch = 0
        self.batches = iter(())
        self.chosen: list[int] = []

    def next_batch(self):
        try:
            return next(self.batches)
        except StopIteration:
            self.epoch += 1
            self.trainer.sampler.set_epoch(self.epoch)
            self.batches = iter(self.trainer.loader)
            return next(self.batches)

    def steps(self, count: int) -> float:
        """Seconds per step over ``count`` steps (waiting for data included)."""
        start = time.perf_counter()
        for _ in range(count):
            self.trainer.train_step(self.next_batch())
            self.chosen.append(torch.get_num_threads())
        return (time.perf_counter() - start) / count


def run_condition(variants: list[Variant], args: argparse.Namespace) -> tuple[dict[str, float], dict[str, list[int]], list[float]]:
    times: dict[str, list[float]] = {v.setting: [] for v in variants}
    loads: list[float] = []
    order = random.Random(0)
    for v in variants:
        v.chosen = []
        v.steps(args.steps)  # warm-up: workers started, first batches prefetched, allocator warm
    for round_index in range(args.rounds):
        for v in order.sample(variants, len(variants)):
            times[v.setting].append(v.steps(args.steps))
            loads.append(load_average())
        print(f"  round {round_index + 1}/{args.rounds}, load {loads[-1]:.2f}", file=sys.stderr, flush=True)
    return {k: statistics.median(t) for k, t in times.items()}, {v.setting: v.chosen for v in variants}, loads


def section(title: str, medians: dict[str, float], chosen: dict[str, list[int]], loads: list[float]) -> tuple[list[str], float]:
    fixed = {k: t for k, t in medians.items() if k not in ("auto", CONTROL)}
    best_name = min(fixed, key=fixed.get)
    ratio = medians["auto"] / fixed[best_name]
    lines = [
        f"## {title}",
        "",
        f"1-minute load average {min(loads):.2f} to {max(loads):.2f} during this condition.",
        "",
        "| train.threads | threads used per step | median s / step | / best fixed |",
        "|---|---|---|---|",
    ]
    for name, seconds in medians.items():
        used = sorted(set(chosen[name]))
        counts = ", ".join(f"{n}: {chosen[name].count(n)} steps" for n in used)
        lines.append(f"| {name} | {counts} | {seconds:.3f} | {seconds / fixed[best_name]:.2f} |")
    lines += ["", f"**default (auto) / best fixed ({best_name} thread(s)): {ratio:.2f}**"]
    return lines, ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="ctdet_res18_synthetic", help="recipe whose steps are timed (default: the demo's)")
    parser.add_argument("--contend", type=int, default=2, metavar="N", help="busy processes of the contended condition (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=4, help="steps per variant per round")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per condition")
    parser.add_argument("--images", type=int, default=256, help="synthetic training images (the loader cycles through them)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (the demo's 2)")
    parser.add_argument("--output", type=Path, help="also write the report (markdown) to this file")
    args = parser.parse_args()
    cores = available_cores()
    settings = ["auto"] + [str(n) for n in sorted({1, 2, cores}) if n <= cores]
    report, ratios = [], {}
    with tempfile.TemporaryDirectory() as folder:
        variants = [Variant(setting, Path(folder), args) for setting in settings]
        variants.append(Variant("1", Path(folder), args, label=CONTROL))
        for busy in (0, args.contend):
            title = "as the machine is (no process started)" if not busy else f"contended: {busy} busy processes started by the script"
            with contention(busy):
                medians, chosen, loads = run_condition(variants, args)
            lines, ratios[busy] = section(title, medians, chosen, loads)
            report += ["", *lines]
    command = " ".join(["python benchmarks/bench_threads.py", *sys.argv[1:]])
    head = [
        "# Training threads: the default choice against fixed counts (demo recipe steps)",
        "",
        (f"`{command}` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
         f"{platform.processor() or platform.machine()}, {cores} cores available, torch {torch.__version__}; "
         f"recipe {args.recipe}, {args.workers} DataLoader workers, {args.steps} steps per variant per round, "
         f"medians of {args.rounds} interleaved rounds after a warm-up round."),
        "",
        f"**default / best fixed count: {ratios[0]:.2f} as the machine is, {ratios[args.contend]:.2f} with {args.contend} busy processes** (goal <= 1.2).",
    ]
    text = "\n".join(head + report)
    print(text)
    if args.output is not None:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
