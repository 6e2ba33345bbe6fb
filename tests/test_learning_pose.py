"""Learning test: a small network overfits multi-person pose on real COCO images and scores OKS AP.

This checks the whole pose chain end to end on real annotations: the task's own targets
(``MultiPoseTask.encode``) and loss train a ResNet-18 from scratch; its outputs go through the
task's decoder and post-processing (``models.predictor.Predictor``) and pycocotools' keypoint
evaluation (``Task.score``). A wrong target, loss, decoder or coordinate mapping keeps
OKS AP near zero. No augmentation: the inputs are the test-time letterboxes, so training and
evaluation see the same pixels, and every random draw is seeded.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from centernet.data.check import load_dataset
from centernet.data.records import DetectionDataset, ImageRecord
from centernet.data.transforms import InputSpec
from centernet.models.predictor import Predictor
from centernet.models import build_model
from centernet.tasks.registry import get_task
from tests.helpers import fixed_input_batch

ARCH = "res_18"
INPUT_HW = (128, 128)  # small enough for a CPU; large people still span ~15 output pixels
NUM_IMAGES = 4
MIN_LABELLED_JOINTS = 10  # every person of a chosen image shows this many joints: learnable targets
STEPS = 100
LEARNING_RATE = 1e-3
SEED = 0
# Measured 0.90 (docs/tasks.md: 0.89-0.94 across runs); 0.15 of margin, so a regression that halves the AP fails.
MIN_OKS_AP = 0.75
# Target keys that are not fixed-size training arrays (the original's debug-only ground truth rows).


def _well_labelled(record: ImageRecord) -> bool:
    """An image with people, none of them crowd, each with ``MIN_LABELLED_JOINTS`` labelled joints."""
    if len(record) == 0 or record.crowd.any() or record.keypoints is None:
        return False
    return bool(((record.keypoints[:, :, 2] > 0).sum(axis=1) >= MIN_LABELLED_JOINTS).all())


@pytest.fixture(scope="module")
def people(data_dir: Path) -> DetectionDataset:
    """The first ``NUM_IMAGES`` well-labelled images of coco_mini's validation keypoints."""
    keypoint_files = sorted((data_dir / "coco_mini" / "annotations").glob("person_keypoints_val*.json"))
    assert keypoint_files, f"no person_keypoints_val*.json under {data_dir / 'coco_mini' / 'annotations'}"
    data = load_dataset(keypoint_files[0])
    chosen = [record for record in data.records if _well_labelled(record)][:NUM_IMAGES]
    assert len(chosen) == NUM_IMAGES, f"{keypoint_files[0]}: only {len(chosen)} well-labelled person images"
    assert max(len(record) for record in chosen) >= 2, "the chosen images should include several people in one image"
    return dataclasses.replace(data, records=chosen)


@pytest.mark.slow
def test_pose_overfits_people_to_oks_ap(people: DetectionDataset) -> None:
    torch.manual_seed(SEED)
    task = get_task("multi_pose", people.num_classes)
    spec = InputSpec(input_hw=INPUT_HW)
    inputs, batch = fixed_input_batch(task, people, spec)
    network = build_model(ARCH, task.heads)
    optimizer = torch.optim.Adam(network.parameters(), lr=LEARNING_RATE)

    network.train()
    losses = []
    for _ in range(STEPS):
        total, _ = task.loss(network(inputs), batch)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses.append(float(total.detach()))

    predictions = Predictor(network, task, spec, people.class_names, people.category_ids, K=20).detect_dataset(people, range(len(people)))
    report = task.score(people, predictions)
    assert losses[-1] < 0.2 * losses[0], f"loss {losses[0]:.3f} -> {losses[-1]:.3f}"
    assert report.primary >= MIN_OKS_AP, report.table
