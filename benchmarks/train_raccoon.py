"""Real-data training benchmark: a recipe (ResNet-18 from scratch by default) on the raccoon photos at 384x384.

Runs the library's own training (``--recipe``, ``ctdet_res18_raccoon_384`` by default, or
``ctdet_effl0_raccoon_384``: the pretrained EfficientNet-Lite0, through ``centernet.train``:
the original's augmentation, multi-worker loading, validation with pycocotools) on the 160
training photos of ``--data``/raccoon, validates on the 40 val photos, and prints the run's
``results.csv`` as a table (losses, lr, COCO AP / AP50 / AP75, seconds per epoch) with the total
wall time and the load average before and after (the machine may be shared). Every figure is read
back from the run folder, which is kept for its plots and images.

The CPU budget is set by the number of epochs (about 40 s per epoch on 2 idle cores of an
AVX512-BF16 machine). Extra ``section.field=value`` arguments override the recipe.

Example::

    python benchmarks/train_raccoon.py --epochs 20
    python benchmarks/train_raccoon.py --recipe ctdet_effl0_raccoon_384 --name effl0_384
    python benchmarks/train_raccoon.py --epochs 5 train.cpu_bf16=false   # float32 steps
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import time
from pathlib import Path

import torch

import centernet
from centernet.config import load_config

RECIPE = "ctdet_res18_raccoon_384"
COLUMNS = ("epoch", "lr", "loss", "hm_loss", "wh_loss", "off_loss", "AP", "AP50", "AP75", "time")


def _table(rows: list[dict[str, str]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(row.get(column) or "" for column in COLUMNS) + " |")
    return "\n".join(lines)


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--recipe", default=RECIPE, help=f"recipe to train (default {RECIPE})")
    parser.add_argument("--epochs", type=int, default=None, help="training length (default: the recipe's)")
    parser.add_argument("--project", default="runs/benchmarks", help="where the run folder is written")
    parser.add_argument("--name", default="raccoon_384")
    parser.add_argument("--threads", default="auto",
                        help="train.threads and test.threads: a count, or auto (the default: chosen from the free cores)")
    parser.add_argument("overrides", nargs="*", help="section.field=value")
    args = parser.parse_args()

    raccoon = args.data / "raccoon"
    if not (raccoon / "train.json").is_file():
        parser.error(f"{raccoon}: no raccoon data set here (train.json, val.json); pass --data")
    overrides = [
        f"data.source={raccoon / 'train.json'}",
        f"data.val_source={raccoon / 'val.json'}",
        f"project={args.project}",
        f"name={args.name}",
        f"train.threads={args.threads}",
        f"test.threads={args.threads}",
    ]
    if args.epochs is not None:
        # The recipe's drop stays at the same fraction of the run (train.schedule_epochs); the last
        # epoch is always validated.
        overrides.append(f"train.epochs={args.epochs}")
    cfg = load_config(args.recipe, overrides + list(args.overrides))
    run = Path(cfg.project) / cfg.name
    if run.exists():
        parser.error(f"{run} exists: remove it or pass another --name")

    print(f"machine: {platform.processor() or platform.machine()}, threads {args.threads} (train.threads / test.threads), torch {torch.__version__}")
    print(f"load average at the start: {_load()} ({os.cpu_count()} cores)")
    print(
        f"recipe {args.recipe}: {cfg.model.arch} (pretrained: {cfg.model.pretrained}), input {cfg.data.input_size}, batch {cfg.train.batch_size}, "
        f"{cfg.train.epochs} epochs, lr {cfg.train.lr} (drops after {cfg.lr_milestones()}), "
        f"bf16 {cfg.train.cpu_bf16}, channels_last {cfg.train.channels_last}"
    )
    started = time.perf_counter()
    summary = centernet.train(cfg)
    wall = time.perf_counter() - started
    with (run / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    print()
    print(_table(rows))
    print(
        f"\nval (40 photos) after epoch {summary['epoch']}: AP {summary['AP']:.3f}, AP50 {summary['AP50']:.3f}, "
        f"AP75 {summary['AP75']:.3f}; {wall / 60:.1f} min wall in all; run folder {run}"
    )
    print(f"load average at the end: {_load()}")


if __name__ == "__main__":
    main()
