"""The accelerated paths of the one inference path and of training, checked where a CPU can check them.

``tests/test_cuda.py`` repeats them on a GPU; here: the compiled network gives the eager network's
detections, uint8 upload + on-device normalisation is bit-equal to the CPU pre-processing, a
GradScaler skips a step whose gradients are not finite, and a one-process group (gloo) trains.
"""
from __future__ import annotations

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


def _scaler_device() -> str:
    try:
        torch.amp.GradScaler("cpu", init_scale=2.0**8)
    except (RuntimeError, ValueError, TypeError) as exc:  # older torch: GradScaler is CUDA only
        pytest.skip(f"torch {torch.__version__} has no CPU GradScaler: {exc}")
    return "cpu"


def test_grad_scaler_skips_a_step_with_inf_gradients_and_lowers_its_scale():
    device = _scaler_device()
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler(device, init_scale=2.0**8)
    before = [p.detach().clone() for p in model.parameters()]

    loss = model(torch.full((2, 4), float("inf"))).sum()
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    assert scaler.get_scale() == 2.0**7  # backed off by the default factor 0.5
    for p, q in zip(model.parameters(), before):
        assert torch.equal(p, q), "a step with inf gradients changed the weights"

    optimizer.zero_grad()
    scaler.scale(model(torch.ones(2, 4)).sum()).backward()
    scaler.step(optimizer)
    scaler.update()
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), before)), "a finite step was skipped"


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
