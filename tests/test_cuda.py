"""The CUDA path, for the day a GPU is there (``pytest -m cuda``; ``benchmarks/gpu_check.sh`` runs it).

Every test skips, saying why, when ``torch.cuda.is_available()`` is False. Tolerances (float32 on the
same GPU is the reference; the heat map is the sigmoid of the ``hm`` head, in 0..1):

- float16 autocast: heat map max abs diff <= 1e-2; bfloat16 (8 mantissa bits): <= 4e-2;
- detections: each of float32's 20 best detections is found again (same class, IoU >= 0.9) with a
  score within the heat-map tolerance, for at least 18 of the 20 (near-ties may swap across the cut);
- compiled (CUDA graphs) vs eager, both float32: scores within 1e-4, boxes within 1e-2 pixels;
- GPU pre-processing vs the CPU path: bit-equal network inputs.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from centernet import config as config_module
from centernet.data.image_io import load_image
from centernet.models.detector import CenterNet
from centernet.models.predictor import Predictor
from centernet.engine.trainer import Trainer
from centernet.engine.hooks import TrainerHook
from tests.test_device_paths import run_one_process_training
from tests.test_predictor import FILES, INPUT, weights  # noqa: F401  (weights: the calibrated checkpoint fixture)
from tests.test_train_engine import TINY, tiny_config

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU: torch.cuda.is_available() is False"),
]

HEAT_TOLERANCE = {"float16": 1e-2, "bfloat16": 4e-2}
TOP = 20


@pytest.fixture(scope="module")
def detector(weights):  # noqa: F811  (the imported fixture)
    return CenterNet.from_checkpoint(weights, input_size=tuple(INPUT), K=100).eval()


@pytest.fixture(scope="module")
def images(data_dir) -> list[np.ndarray]:
    return [load_image(data_dir / "coco_mini" / "val2017" / name) for name in FILES]


def _predictor(detector: CenterNet, **options) -> Predictor:
    return Predictor(detector.network, detector.task, detector.spec, detector.class_names, K=100, device="cuda", **options)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1, y1 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    x2, y2 = np.minimum(box[2], boxes[:, 2]), np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area, areas = (box[2] - box[0]) * (box[3] - box[1]), (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / (area + areas - inter)


@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_half_precision_inference_against_float32(detector, images, precision):
    reference, half = _predictor(detector), _predictor(detector, precision=precision)
    warped = [reference.spec.warped_input(image)[0] for image in images]
    inputs = reference.network_inputs(warped)
    heat = reference.forward(inputs)["hm"].sigmoid()
    heat_half = half.forward(inputs)["hm"].sigmoid()
    diff = float((heat - heat_half).abs().max())
    assert diff <= HEAT_TOLERANCE[precision], f"{precision} heat map max abs diff {diff:.2e}"

    for want, got in zip(reference.detect(images), half.detect(images)):
        best = np.argsort(-want.scores)[:TOP]
        found = 0
        for i in best:
            same_class = got.labels == want.labels[i]
            if not same_class.any():
                continue
            ious = _iou(want.boxes[i], got.boxes[same_class])
            j = int(np.argmax(ious))
            if ious[j] >= 0.9 and abs(got.scores[same_class][j] - want.scores[i]) <= HEAT_TOLERANCE[precision]:
                found += 1
        assert found >= TOP - 2, f"{precision}: {found} of float32's {TOP} best detections found again"


def test_compiled_cuda_graphs_equal_eager(detector, images):
    eager = _predictor(detector).detect(images)
    compiled = _predictor(detector, compile=True)
    assert compiled.compiled
    for _ in range(2):  # the first call records the graphs, the second replays them
        for want, got in zip(eager, compiled.detect(images)):
            np.testing.assert_allclose(got.scores, want.scores, atol=1e-4)
            np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-2)


def test_gpu_preprocessing_equals_the_cpu_path(detector, images):
    on_gpu = _predictor(detector)
    assert on_gpu.preprocess_on_device  # the default on a GPU
    for image in images:
        warped, _ = on_gpu.spec.warped_input(image)
        got = on_gpu.network_inputs([warped])
        assert got.device.type == "cuda"
        assert np.array_equal(got.cpu().numpy()[0], on_gpu.spec.normalize_uint8(warped))
    on_host = _predictor(detector, preprocess_on_device=False)
    for a, b in zip(on_host.detect(images), on_gpu.detect(images)):
        assert np.array_equal(a.scores, b.scores) and np.array_equal(a.boxes, b.boxes)


class LossRecorder(TrainerHook):
    def __init__(self) -> None:
        self.losses: list[dict[str, float]] = []

    def on_step_end(self, trainer, losses) -> None:
        self.losses.append(losses)


def test_amp_training_steps_and_grad_scaler(tmp_path):
    recorder = LossRecorder()
    trainer = Trainer(tiny_config(tmp_path, "amp", "train.device=cuda", "train.amp=true", "train.epochs=1"), hooks=[recorder])
    dtypes = []
    trainer.model.register_forward_hook(lambda module, args, out: dtypes.append(out["hm"].dtype) if module.training else None)
    trainer.fit()
    assert recorder.losses and set(dtypes) == {torch.float16}
    assert all(math.isfinite(v) for step in recorder.losses for v in step.values()), recorder.losses
    scaler = trainer.scaler
    assert scaler.is_enabled() and math.isfinite(scaler.get_scale()) and scaler.get_scale() > 0

    # A step whose gradients hold an inf is skipped, and the scale backs off by half.
    model, optimizer = trainer.model, trainer.optimizer
    before = [p.detach().clone() for p in model.parameters()]
    scale = scaler.get_scale()
    batch = {k: v.to(trainer.ctx.device) for k, v in next(iter(trainer.loader)).items()}
    model.train()
    with torch.autocast("cuda", dtype=torch.float16):
        total = sum(trainer.network(batch["input"], batch).values())
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(total).backward()
    next(p for p in model.parameters() if p.grad is not None).grad.view(-1)[0] = float("inf")
    scaler.step(optimizer)
    scaler.update()
    assert scaler.get_scale() == scale * 0.5
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before)), "the inf step changed the weights"


@pytest.mark.skipif(not torch.distributed.is_nccl_available(), reason="this torch build has no NCCL")
def test_one_process_ddp_on_nccl(tmp_path):
    done = run_one_process_training(tmp_path, "cuda", [*TINY, "train.epochs=1"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "ddp1" / "last.pt").is_file() and (tmp_path / "ddp1" / "results.csv").is_file()


def test_cuda_fields_reach_the_predictor(detector):
    test = config_module.TestConfig(device="cuda", precision="float16", compile=True)
    predictor = Predictor.for_detector(detector, test)
    assert predictor.device.type == "cuda" and predictor.precision == "float16" and predictor.compiled and predictor.preprocess_on_device
