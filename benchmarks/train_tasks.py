"""Train each task for a fixed CPU time on the shared mini data sets and print its standard metrics.

Tasks and data (``--data`` holds the shared sets):

* ``ctdet``: raccoon, trained on ``train.json``, COCO box AP on ``val.json`` and on the training images;
* ``multi_pose``: coco_mini people (images with labelled joints), trained on train2017, COCO
  keypoint OKS AP on val2017 and on the training images;
* ``ddd``: kitti_mini (13 frames, KITTI's own layout, each with its calibration), trained and
  evaluated on the same frames: KITTI AP11 / AP40 of Car 2D, BEV and 3D.

Every network is a ResNet-18 from scratch (no weights may be downloaded), trained with Adam and the
task's own targets and loss; the learning rate drops x0.1 after ``--drop`` of the time budget, as
the paper's step schedules. 2D and pose use the original's training augmentation; 3D uses
the original's scale/shift jitter without flips (a mirrored frame would need a mirrored camera).
Runs are seeded; wall-clock budgets make the step count depend on the machine. COCO figures are
fractions (0..1), KITTI figures percentages, as the two evaluators report them.

Example::

    python benchmarks/train_tasks.py --seconds 600 --threads 2
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from centernet.data.check import load_dataset
from centernet.data.records import DetectionDataset
from centernet.data.transforms import InputSpec
from centernet.data.augment import TrainAugmentation
from centernet.evaluation.scoring import EvaluationReport
from centernet.models.predictor import Predictor
from centernet.models import build_model
from centernet.tasks.base import Task
from centernet.tasks.registry import get_task

VARIABLE_SIZE_KEYS = ("gt_det",)  # the original's debug-only ground truth rows, not a training array
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # applied to BGR images, as the original's KITTI data set
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Benchmark:
    """One task's run: its data, input and batch size, and the headline metrics to print."""

    task: str
    train: DetectionDataset
    evaluations: dict[str, DetectionDataset]
    spec: InputSpec
    augmentation: TrainAugmentation
    batch_size: int
    metrics: tuple[str, ...]


def _with_people(data: DetectionDataset) -> DetectionDataset:
    """Only the images holding at least one person with a labelled joint."""
    keep = [r for r in data.records if r.keypoints is not None and (r.keypoints[:, :, 2] > 0).any()]
    return dataclasses.replace(data, records=keep)


def benchmarks(data_dir: Path, size: int, kitti_width: int) -> list[Benchmark]:
    """The three task benchmarks: ``size`` is the square input side of 2D and pose, ``kitti_width``
    the 3D input width (its height keeps the frames' aspect ratio, a multiple of 32)."""
    square = InputSpec(input_hw=(size, size))
    coco_metrics = ("AP", "AP50", "AP75")
    raccoon_train = load_dataset(data_dir / "raccoon" / "train.json")
    people_train = _with_people(
        load_dataset(data_dir / "coco_mini" / "annotations" / "person_keypoints_train2017.json")
    )
    kitti = load_dataset(data_dir / "kitti_mini", None)
    kitti_height = round(kitti_width * kitti.records[0].height / kitti.records[0].width / 32) * 32
    kitti_spec = InputSpec(input_hw=(kitti_height, kitti_width), mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return [
        Benchmark(
            "ctdet",
            raccoon_train,
            {"val": load_dataset(data_dir / "raccoon" / "val.json"), "train": raccoon_train},
            square,
            TrainAugmentation(spec=square),
            8,
            coco_metrics,
        ),
        Benchmark(
            "multi_pose",
            people_train,
            {
                "val": _with_people(
                    load_dataset(data_dir / "coco_mini" / "annotations" / "person_keypoints_val2017.json")
                ),
                "train": people_train,
            },
            square,
            TrainAugmentation(spec=square),
            8,
            coco_metrics,
        ),
        Benchmark(
            "ddd",
            kitti,
            {"train": kitti},
            kitti_spec,
            TrainAugmentation(spec=kitti_spec, random_crop=False, flip=0.0),
            4,
            tuple(f"car/{kind}/moderate/{ap}" for kind in ("bbox", "bev", "3d") for ap in ("ap11", "ap40")),
        ),
    ]


def _batch(task: Task, bench: Benchmark, indices: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, dict]:
    inputs, targets = [], []
    for index in indices:
        network_input, meta = bench.augmentation(bench.train.load_image(int(index)), rng)
        inputs.append(network_input)
        targets.append(task.encode(bench.train.records[int(index)].annotations(), meta))
    stacked = {
        key: torch.from_numpy(np.stack([t[key] for t in targets]))
        for key in targets[0]
        if key not in VARIABLE_SIZE_KEYS
    }
    return torch.from_numpy(np.stack(inputs)), stacked


def train_and_evaluate(
    bench: Benchmark, seconds: float, lr: float, drop: float, seed: int
) -> tuple[dict[str, EvaluationReport], int, float]:
    """Train for ``seconds`` of wall time, then evaluate; returns (reports by split, steps, last loss)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    task = get_task(bench.task, bench.train.num_classes)
    network = build_model("res_18", task.heads)
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    network.train()
    started, steps, dropped, loss = time.time(), 0, False, float("nan")
    while time.time() - started < seconds:
        order = rng.permutation(len(bench.train))
        for start in range(0, len(order) - bench.batch_size + 1, bench.batch_size):
            elapsed = time.time() - started
            if elapsed >= seconds:
                break
            if not dropped and elapsed >= drop * seconds:
                for group in optimizer.param_groups:
                    group["lr"] = lr * 0.1
                dropped = True
            inputs, targets = _batch(task, bench, order[start : start + bench.batch_size], rng)
            total, _ = task.loss(network(inputs), targets)
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
            steps, loss = steps + 1, float(total.detach())
    reports = {
        split: task.score(data, Predictor(network, task, bench.spec, data.class_names, data.category_ids, K=100, threads=torch.get_num_threads()).detect_dataset(data, range(len(data))))
        for split, data in bench.evaluations.items()
    }
    return reports, steps, loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--seconds", type=float, default=600.0, help="training wall time per task")
    parser.add_argument("--size", type=int, default=256, help="square input side of 2D and pose")
    parser.add_argument("--kitti-width", type=int, default=640, help="3D input width (KITTI aspect kept)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--drop", type=float, default=0.8, help="fraction of the budget before the x0.1 drop")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tasks", nargs="+", default=["ctdet", "multi_pose", "ddd"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(
        f"machine: {platform.processor() or platform.machine()}, {args.threads} torch threads, torch {torch.__version__}"
    )
    for bench in benchmarks(args.data, args.size, args.kitti_width):
        if bench.task not in args.tasks:
            continue
        started = time.time()
        reports, steps, loss = train_and_evaluate(bench, args.seconds, args.lr, args.drop, args.seed)
        print(
            f"\n## {bench.task}: {len(bench.train)} training images, input {bench.spec.input_hw}, batch {bench.batch_size}, "
            f"{steps} steps in {args.seconds:.0f} s (last loss {loss:.3f}; {time.time() - started:.0f} s with evaluation)"
        )
        for split, report in reports.items():
            figures = ", ".join(f"{name} {report.stats.get(name, float('nan')):.3f}" for name in bench.metrics)
            print(f"{split} ({len(bench.evaluations[split])} images): {figures}")


if __name__ == "__main__":
    main()
