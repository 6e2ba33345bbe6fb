"""Learning test: a small network overfits monocular 3D detection on real KITTI frames.

The frames are read in KITTI's own layout (``image_2`` / ``label_2`` / ``calib``) and each keeps its
own camera matrix. A ResNet-18 trains from scratch on the task's own targets and loss
(``DddTask``); its outputs go through the task's decoder and post-processing
(``models.predictor.Predictor``) and our KITTI evaluator (``Task.score``): Car 3D
AP11 at IoU 0.5, moderate difficulty, the original's thresholds.

Why the bar is relative: the KITTI evaluator samples its precision/recall curve at one score
threshold per matched detection while stepping the recall by 1/40, so with fewer than 40 ground
truth objects even perfect detections score well below 100 (all 13 kitti_mini frames: 54.5; two
frames: 18.2). The test therefore scores the labels themselves as detections and requires the
trained network to reach half of that. An absolute 50 is out of reach on kitti_mini for the
original's method itself (the test below shows it): trained the same way on all 13 frames for 360
full-batch steps (10 minutes), the network reached 43.0 (``benchmarks/RESULTS_tasks.md``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from centernet.data.check import load_dataset
from centernet.data.objects3d import Objects3D
from centernet.data.records import DetectionDataset
from centernet.data.transforms import InputSpec
from centernet.models.predictor import Predictor
from centernet.data.results import Results
from centernet.models import build_model
from centernet.tasks.registry import get_task
from centernet.tasks.ddd_decoding import locate_3d
from tests.helpers import fixed_input_batch

ARCH = "res_18"
INPUT_WIDTH = 320  # height follows the frames' aspect ratio, rounded to the network's stride of 32
NETWORK_STRIDE = 32
NUM_FRAMES = 2  # the frames holding the most cars
STEPS = 250
LR_DROP_STEP = 200  # a x0.1 drop, as the paper's schedules: the depth error falls ~10x after it
LEARNING_RATE = 1e-3
SEED = 0
METRIC = "car/3d/moderate/ap11"
FRACTION_OF_PERFECT = 0.5
# ImageNet's RGB statistics applied to BGR images, as the original's KITTI data set.
KITTI_MEAN = (0.485, 0.456, 0.406)
KITTI_STD = (0.229, 0.224, 0.225)


def _input_spec(data: DetectionDataset) -> InputSpec:
    """A reduced input keeping the frames' aspect ratio (KITTI: about 3.3 : 1)."""
    aspect = np.median([record.height / record.width for record in data.records])
    height = max(NETWORK_STRIDE, round(INPUT_WIDTH * float(aspect) / NETWORK_STRIDE) * NETWORK_STRIDE)
    return InputSpec(input_hw=(height, INPUT_WIDTH), mean=KITTI_MEAN, std=KITTI_STD)


def _labels_as_detections(data: DetectionDataset, from_box_centres: bool = False) -> dict[int, Results]:
    """Each frame's trained, non-ignored objects as score-1 detections: the evaluator's ceiling.

    With ``from_box_centres`` every 3D location is instead recovered as the original's decoder
    does from a perfect network: the 2D box centre (the heat-map target) back-projected at the
    true depth, then moved to the box bottom.
    """
    predictions = {}
    for index, record in enumerate(data.records):
        keep = (record.labels >= 0) & ~record.ignore
        objects = record.objects_3d.subset(keep)
        locations = objects.locations
        if from_box_centres:
            boxes = record.boxes[keep]
            centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
            locations, _ = locate_3d(centres, objects.alpha, objects.dims, objects.locations[:, 2], record.calib)
        boxes_3d = Objects3D(objects.dims, locations, objects.rotation_y, objects.alpha, record.calib)
        predictions[index] = Results(
            record.boxes[keep],
            np.ones(int(keep.sum()), np.float32),
            record.labels[keep],
            data.class_names,
            boxes_3d=boxes_3d,
        )
    return predictions


def test_the_original_centre_definition_caps_car_3d_ap_on_kitti_mini(data_dir) -> None:
    """Why no test asks for Car 3D AP11 >= 50 on kitti_mini: the original's method cannot reach it.

    The original puts an object's heat-map peak at its 2D box centre but decodes the peak as the
    projection of the 3D centre. Even with every head perfect (true depth, dimensions and angle),
    that offset costs 3D IoU: on all 13 frames the labels score 54.5 as they are and below 50
    when located the way the decoder locates them. Bird's-eye and 2D figures show where it goes.
    """
    data = load_dataset(data_dir / "kitti_mini", None)
    task = get_task("ddd", len(data.class_names))
    as_labelled = task.score(data, _labels_as_detections(data)).stats
    as_decoded = task.score(data, _labels_as_detections(data, from_box_centres=True)).stats
    assert as_labelled[METRIC] >= 50.0
    assert as_decoded[METRIC] < 50.0
    assert as_decoded["car/bbox/moderate/ap11"] == as_labelled["car/bbox/moderate/ap11"]
    assert as_decoded["car/bev/moderate/ap11"] < as_labelled["car/bev/moderate/ap11"]


@pytest.fixture(scope="module")
def frames(data_dir) -> DetectionDataset:
    """The ``NUM_FRAMES`` kitti_mini frames with the most cars, read from KITTI's own layout."""
    data = load_dataset(data_dir / "kitti_mini", None)
    car = data.class_names.index("Car")
    cars = [int(((record.labels == car) & ~record.ignore).sum()) for record in data.records]
    chosen = sorted(np.argsort(cars, kind="stable")[::-1][:NUM_FRAMES])
    assert all(cars[i] > 0 for i in chosen), "kitti_mini should hold frames with cars"
    assert all(data.records[i].calib is not None for i in chosen)
    return DetectionDataset([data.records[i] for i in chosen], data.class_names, data.category_ids, source=data.source)


@pytest.mark.slow
def test_ddd_overfits_kitti_cars_to_3d_ap(frames: DetectionDataset) -> None:
    torch.manual_seed(SEED)
    task = get_task("ddd", frames.num_classes)
    spec = _input_spec(frames)
    inputs, batch = fixed_input_batch(task, frames, spec)
    network = build_model(ARCH, task.heads)
    optimizer = torch.optim.Adam(network.parameters(), lr=LEARNING_RATE)
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, [LR_DROP_STEP], gamma=0.1)

    network.train()
    losses = []
    for _ in range(STEPS):
        total, _ = task.loss(network(inputs), batch)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(total.detach()))

    report = task.score(frames, Predictor(network, task, spec, frames.class_names, K=50).detect_dataset(frames, range(len(frames))))
    ceiling = task.score(frames, _labels_as_detections(frames)).stats[METRIC]
    assert ceiling > 0, "the labels scored as detections should reach a positive AP"
    assert losses[-1] < 0.5 * losses[0], f"loss {losses[0]:.3f} -> {losses[-1]:.3f}"
    assert report.stats[METRIC] >= FRACTION_OF_PERFECT * ceiling, (
        f"{METRIC} {report.stats[METRIC]:.2f} < {FRACTION_OF_PERFECT} x {ceiling:.2f} (labels as detections)\n{report.table}"
    )
