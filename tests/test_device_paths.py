"""The accelerated paths of the one inference path and of training, checked where a CPU can check them.

``tests/test_cuda.py`` repeats them on a GPU; here: the compiled network gives the eager network's
detections, uint8 upload + on-device normalisation is bit-equal to the CPU pre-processing, CPU training runs
bfloat16 autocast (``train.cpu_bf16``) without float16 loss scaling, and a one-process group (gloo) trains.
"""
from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from centernet.data.transforms import InputSpec
from centernet.engine.distributed import DistributedContext
from centernet.models.predictor import Predictor
from centernet.tasks.ctdet import CtdetTask

NUM_CLASSES = 3
SPEC = InputSpec(input_hw=(64, 64))


class TinyHeads(nn.Module):
    """Stride-4 head maps of a normalised batch: average pooling, then one 1x1 convolution per head."""

    def __init__(self, heads: dict[str, int]) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(4)
        self.heads = nn.ModuleDict({name: nn.Conv2d(3, channels, 1) for name, channels in heads.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.pool(x)
        return {name: head(features) for name, head in self.heads.items()}


def _images(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (48 + 8 * i, 80, 3), dtype=np.uint8) for i in range(count)]


def _predictor(**options) -> Predictor:
    torch.manual_seed(0)
    task = CtdetTask(NUM_CLASSES)
    return Predictor(TinyHeads(task.heads), task, SPEC, [f"c{i}" for i in range(NUM_CLASSES)], K=10, device="cpu", **options)


def test_device_normalisation_is_bit_equal_to_the_cpu_path():
    for order in ("bgr", "rgb"):
        spec = InputSpec(input_hw=(64, 64), channel_order=order)
        warped = [spec.warped_input(image)[0] for image in _images(3)]
        expected = np.stack([spec.normalize_uint8(w) for w in warped])
        got = spec.normalize_uint8_tensor(torch.from_numpy(np.stack(warped))).numpy()
        assert got.dtype == np.float32 and got.shape == expected.shape
        assert np.array_equal(got, expected), order


def test_predictor_preprocessing_on_the_device_gives_the_same_detections():
    images = _images(3)
    on_host = _predictor(preprocess_on_device=False)
    on_device = _predictor(preprocess_on_device=True)
    assert not _predictor().preprocess_on_device  # default: on a GPU only
    for a, b in zip(on_host.detect(images), on_device.detect(images)):
        assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.scores, b.scores) and np.array_equal(a.labels, b.labels)


@pytest.mark.slow
def test_compiled_network_gives_the_eager_detections():
    images = _images(2)
    eager = _predictor().detect(images)
    compiled = _predictor(compile=True)
    assert compiled.compiled
    for a, b in zip(eager, compiled.detect(images)):
        np.testing.assert_allclose(b.scores, a.scores, atol=1e-5)
        np.testing.assert_allclose(b.boxes, a.boxes, atol=1e-3)
        assert np.array_equal(a.labels, b.labels)


def test_cpu_training_precision_is_bfloat16_autocast_without_loss_scaling(tmp_path):
    """The trainer's mixed precision on a CPU (``test_cuda.py`` checks float16 + GradScaler on a GPU).

    ``train.amp`` (float16 with loss scaling) is CUDA's: on a CPU the trainer's scaler stays off
    whatever it says. ``train.cpu_bf16`` runs the forward under bfloat16 autocast; the losses and
    the Adam step stay float32 (the weights keep their type and move, every loss is finite).
    """
    from centernet.engine.trainer import Trainer, TrainerHook
    from tests.test_train_engine import tiny_config

    class LossRecorder(TrainerHook):
        def __init__(self) -> None:
            self.losses: list[dict[str, float]] = []

        def on_step_end(self, trainer, losses) -> None:
            self.losses.append(losses)

    for cpu_bf16, forward_dtype in ((False, torch.float32), (True, torch.bfloat16)):
        recorder = LossRecorder()
        cfg = tiny_config(
            tmp_path, f"bf16_{cpu_bf16}", "data.synthetic_images={train: 8, val: 1}", "train.device=cpu", "train.amp=true",
            f"train.cpu_bf16={cpu_bf16}", "train.epochs=1", "train.save_images=0",
        )
        trainer = Trainer(cfg, hooks=[recorder])
        dtypes = []
        trainer.model.register_forward_hook(lambda module, args, out: dtypes.append(out["hm"].dtype) if module.training else None)
        before = [p.detach().clone() for p in trainer.model.parameters()]
        trainer.fit()
        assert not trainer.scaler.is_enabled(), "float16 loss scaling switched on for a CPU run"
        assert dtypes and set(dtypes) == {forward_dtype}, (cpu_bf16, set(dtypes))
        assert recorder.losses and all(math.isfinite(v) for step in recorder.losses for v in step.values()), recorder.losses
        after = list(trainer.model.parameters())
        assert all(p.dtype == torch.float32 for p in after)
        assert any(not torch.equal(p, q) for p, q in zip(after, before)), "no weight moved"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_process_group_env(port: int) -> dict[str, str]:
    """The variables a one-process ``torchrun`` sets."""
    return {"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}


def test_one_process_group_is_a_real_process_group(monkeypatch):
    for name, value in one_process_group_env(free_port()).items():
        monkeypatch.setenv(name, value)
    ctx = DistributedContext.from_env("cpu")
    try:
        assert ctx.enabled and torch.distributed.is_initialized() and torch.distributed.get_backend() == "gloo"
        assert ctx.gather({"rank": ctx.rank}) == [{"rank": 0}]
        assert float(ctx.all_reduce_mean(torch.tensor(3.0))) == 3.0
    finally:
        ctx.close()
    assert not torch.distributed.is_initialized()


def test_without_launcher_variables_there_is_no_process_group(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    ctx = DistributedContext.from_env("cpu")
    assert not ctx.enabled and not torch.distributed.is_initialized()


def run_one_process_training(tmp_path: Path, device: str, overrides: list[str]) -> subprocess.CompletedProcess:
    """``centernet train`` as a one-process ``torchrun`` would start it (the DDP wrapper included)."""
    env = {**os.environ, **one_process_group_env(free_port()), "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    cmd = [sys.executable, "-m", "centernet.cli", "train", *overrides, f"project={tmp_path}", "name=ddp1", f"train.device={device}"]
    return subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_one_process_ddp_training_on_gloo(tmp_path, monkeypatch):
    from torch.nn.parallel import DistributedDataParallel

    from centernet.engine.trainer import Trainer
    from tests.test_train_engine import tiny_config

    for name, value in one_process_group_env(free_port()).items():
        monkeypatch.setenv(name, value)
    trainer = Trainer(tiny_config(tmp_path, "ddp1", "train.epochs=1", "train.device=cpu"))
    try:
        assert trainer.ctx.enabled and isinstance(trainer.network, DistributedDataParallel)
        trainer.fit()
    finally:
        trainer.ctx.close()
    assert not torch.distributed.is_initialized()
    assert (tmp_path / "ddp1" / "last.pt").is_file() and (tmp_path / "ddp1" / "results.csv").is_file()



@pytest.mark.parametrize("verb", [["val"], ["predict", "--source", "images/"]])
def test_compile_flag_of_val_and_predict_sets_test_compile(verb):
    from centernet.cli import _test_overrides, build_parser

    args = build_parser().parse_args([*verb, "--weights", "model.pt", "--compile"])
    assert "test.compile=true" in _test_overrides(args)
    assert "test.compile=true" not in _test_overrides(build_parser().parse_args([*verb, "--weights", "model.pt"]))
