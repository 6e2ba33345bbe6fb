"""One voice per job, logs that never repeat, writes that fail loudly (issue 22, items 3 and 1).

* Under ``torchrun --nproc_per_node=2`` (gloo on the CPU) rank 0 alone prints the JSON summary and
  the epoch lines, and the log names the backend, the world size and each rank's device.
* After a Ctrl-C and ``--resume`` the TensorBoard event files hold every step once.
* ``train.device=cuda`` without a GPU is one ``error:`` line, as for ``val`` and ``predict``.
* A checkpoint that cannot be written (a file-size limit, a full disk) ends training with one line
  naming the file and the reason, the last good checkpoint and the command that resumes; the
  previous checkpoint is left intact and no temporary file remains.
"""
from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from centernet.cli import main
from centernet.config import load_config
from centernet.engine.hooks import TrainerHook
from centernet.engine.trainer import Trainer, train
from centernet.models import checkpoint as checkpoint_module
from centernet.models.checkpoint import CheckpointWriteError, load_checkpoint, save_checkpoint
from tests.helpers import tiny_synthetic_run

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(not (BIN / "torchrun").exists(), reason="torchrun is not installed beside this Python")
def test_under_torchrun_rank_0_alone_speaks(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            str(BIN / "torchrun"), "--nproc_per_node=2", f"--master_port={_free_port()}", "-m", "centernet.cli", "train",
            f"project={tmp_path}", "name=ddp", *tiny_synthetic_run(), "train.epochs=1", "train.tensorboard=false",
        ],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count('"run_folder"') == 1, done.stdout  # one JSON summary
    summary = json.loads(done.stdout)
    assert summary["run_folder"] == str(tmp_path / "ddp")
    log = done.stderr
    assert log.count("centernet.train: epoch 1:") == 1, log[-3000:]
    assert log.count("epoch 1 validation:") == 1 and log.count("train data:") == 1, log[-3000:]
    assert "backend gloo, world size 2, devices rank 0 cpu, rank 1 cpu" in log
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir() if p.suffix == ".pt") == ["best.pt", "last.pt"]


def _raw_steps(log_dir: Path) -> dict[str, list[int]]:
    """Every (tag, step) in the event files as written (TensorBoard's file loader, no purging)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    steps: dict[str, list[int]] = {}
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                steps.setdefault(value.tag, []).append(int(event.step))
    return steps


@pytest.mark.slow
def test_tensorboard_steps_continue_after_ctrl_c_and_resume_without_repeats(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    overrides = [f"project={tmp_path}", "name=tb", *tiny_synthetic_run(), "train.epochs=2", "train.val_interval=2"]

    class CtrlC(TrainerHook):  # runs before the TensorBoard hook: the step it stops in is not logged
        def on_step_end(self, trainer: Trainer, losses: dict) -> None:
            if trainer.global_step == 4:  # step 3 logged after the epoch-1 checkpoint (step 2)
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(load_config(None, overrides), hooks=[CtrlC()])
    folder = tmp_path / "tb"
    before = _raw_steps(folder / "tensorboard")
    assert before["train_step/loss"] == [1, 2, 3]  # what the Ctrl-C left, past the checkpoint
    train(load_config(None, overrides), resume=True)
    after = _raw_steps(folder / "tensorboard")
    assert after["train_step/loss"] == [1, 2, 3, 4]
    assert after["epoch/loss"] == [1, 2]
    for tag, steps in after.items():
        assert len(steps) == len(set(steps)), f"{tag}: {steps}"
    accumulator = EventAccumulator(str(folder / "tensorboard"), size_guidance={"scalars": 0})
    accumulator.Reload()
    assert [e.step for e in accumulator.Scalars("train_step/loss")] == [1, 2, 3, 4]


def test_train_on_cuda_without_a_gpu_is_one_line(tmp_path: Path, capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code = main(["train", f"project={tmp_path}", "name=gpu", *tiny_synthetic_run(), "train.device=cuda"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: train.device: device 'cuda': no CUDA GPU is available") and "train.device=cpu" in err[0]
    assert not (tmp_path / "gpu").exists()  # refused before the run folder was made


# ----------------------------------------------------------------------------------------- failing writes
def test_a_failed_write_names_the_file_and_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "last.pt"
    save_checkpoint(target, {"epoch": 1, "state_dict": {"w": torch.ones(3)}})

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint_module.os, "fsync", full_disk)
    with pytest.raises(CheckpointWriteError) as caught:
        save_checkpoint(target, {"epoch": 2, "state_dict": {"w": torch.zeros(3)}})
    monkeypatch.undo()
    assert str(caught.value) == f"{target}: cannot write the checkpoint (No space left on device)"
    assert caught.value.errno == errno.ENOSPC and isinstance(caught.value, OSError)
    assert load_checkpoint(target)["epoch"] == 1  # the previous file, intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary left


def test_a_file_size_limit_mid_torch_save_names_the_system_reason(tmp_path: Path) -> None:
    """torch.save reports a failed write as 'unexpected pos'; the error says what the system said."""
    script = (
        "import resource, sys, torch\n"
        "from centernet.models.checkpoint import save_checkpoint\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))\n"
        "try:\n"
        "    save_checkpoint(sys.argv[1], {'state_dict': {'w': torch.zeros(1_000_000)}})\n"
        "except OSError as err:\n"
        "    print(err)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "big.pt")], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == f"{tmp_path / 'big.pt'}: cannot write the checkpoint (File too large)", done.stderr
    assert list(tmp_path.iterdir()) == []


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (2_000_000, 2_000_000))


@pytest.mark.slow
def test_training_that_cannot_write_its_checkpoint_says_how_to_resume(tmp_path: Path) -> None:
    overrides = [f"project={tmp_path}", "name=full", *tiny_synthetic_run(), "train.tensorboard=false"]
    train(load_config(None, [*overrides, "train.epochs=1"]))
    folder = tmp_path / "full"
    before = (folder / "last.pt").read_bytes()
    done = subprocess.run(
        [sys.executable, "-m", "centernet.cli", "train", "--resume", str(folder), "train.epochs=2"],
        capture_output=True, text=True, timeout=300, preexec_fn=_limit_file_size, cwd=tmp_path,
    )
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and len(errors) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    line = errors[0]
    assert "cannot write the checkpoint (File too large)" in line and str(folder) in line
    assert f"the last good checkpoint is {folder / 'last.pt'} (it continues at epoch 2, iteration 0)" in line
    assert line.endswith(f"continue with: centernet train --resume {folder}")
    assert (folder / "last.pt").read_bytes() == before  # the good checkpoint, untouched
    assert not list(folder.glob(".*.tmp")) and not list(folder.glob("*.tmp"))
    shutil.rmtree(folder)
