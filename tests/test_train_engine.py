"""Training engine: run folder contents, exact resume after a kill, DDP on two CPU processes."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
import torchvision

from centernet.config import load_config
from centernet.engine.dataset import EpochSampler
from centernet.engine.trainer import Trainer, train
from centernet.engine.hooks import TrainerHook
from centernet.models import build_model
from centernet.models.checkpoint import CheckpointError, load_checkpoint
from centernet.models.pretrained import load_pretrained_backbone

# A tiny synthetic experiment: 16 images of 64x64, batches of 4, no workers.
TINY = [
    "data.source=synthetic",
    "data.synthetic_images={train: 16, val: 4}",
    "data.synthetic_image_size=64",
    "data.input_size=[64,64]",
    "data.num_workers=0",
    "model.arch=res_18",
    "model.head_conv=16",
    "train.batch_size=4",
    "train.lr=1e-3",
    "train.schedule_epochs=null",
    "train.lr_steps=[2]",
    "train.val_interval=2",
    "train.save_images=1",
]


def tiny_config(tmp_path: Path, name: str, *extra: str):
    return load_config(None, [f"project={tmp_path}", f"name={name}", *TINY, *extra])


def test_sampler_is_a_function_of_seed_and_epoch():
    a = EpochSampler(10, 3, seed=5)
    b = EpochSampler(10, 3, seed=5)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b) and len(a) == 3
    b.set_epoch(2, skip_batches=1)
    assert list(b) == list(a)[1:]
    a.set_epoch(3)
    assert list(a) != list(b)
    shards = [list(EpochSampler(10, 2, seed=5, rank=r, world_size=2)) for r in (0, 1)]
    flat = [i for rank in shards for batch in rank for _, i in batch]
    assert len(flat) == len(set(flat)) == 8


def test_run_folder_holds_everything(tmp_path):
    summary = train(tiny_config(tmp_path, "run", "train.epochs=2", "train.lr_steps=[1]"))
    run = tmp_path / "run"
    for name in ("config.yaml", "results.csv", "losses.png", "metrics.png", "last.pt", "best.pt"):
        assert (run / name).is_file(), name
    assert list((run / "images").glob("val_*.jpg"))
    rows = list(csv.DictReader((run / "results.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {"lr", "loss", "hm_loss", "wh_loss", "off_loss", "AP", "AP50", "AP75", "time"} <= set(rows[0])
    assert rows[0]["AP"] == "" and rows[1]["AP"] != ""
    # As the original's --lr_step: the drop follows the end of the listed epoch.
    assert float(rows[0]["lr"]) == pytest.approx(1e-3) and float(rows[1]["lr"]) == pytest.approx(1e-4)
    assert "AP" in summary and summary["run_folder"] == str(run)
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["arch"] == "res_18" and ckpt["class_names"] and ckpt["epoch"] == 3
    assert ckpt["mean"] and ckpt["std"] and ckpt["channel_order"] == "bgr"
    assert {"optimizer", "scheduler", "scaler", "rng"} <= set(ckpt)
    # best.pt, as the original's model_best.pth: weights and description, no training state.
    best = load_checkpoint(run / "best.pt")
    assert not {"optimizer", "scheduler", "scaler", "rng"} & set(best)
    assert best["class_names"] == ckpt["class_names"] and best["state_dict"].keys() == ckpt["state_dict"].keys()
    assert (run / "best.pt").stat().st_size < 0.5 * (run / "last.pt").stat().st_size
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny_config(tmp_path, "run", "train.epochs=2"))


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from centernet.config import load_config
    from centernet.engine.hooks import TrainerHook
    from centernet.engine.trainer import train

    kill_at = int(sys.argv[1])

    class Crash(TrainerHook):
        def on_step_end(self, trainer, losses):
            if trainer.state.epoch == 2 and trainer.state.iteration == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    train(load_config(None, sys.argv[2:]), hooks=(Crash(),))
    """
)


@pytest.mark.slow
def test_killed_run_resumes_to_identical_weights(tmp_path):
    # Killed inside the lr warm-up (iteration 6 of 8), so the resumed run must also re-derive the warm-up.
    common = [*TINY, "train.epochs=3", "train.checkpoint_interval=1", "train.val_interval=10", "train.warmup_iters=8", f"project={tmp_path}"]
    reference = train(load_config(None, [*common, "name=straight"]))
    assert reference is not None
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    killed = subprocess.run([sys.executable, "-c", KILLER, "2", *common, "name=resumed"], env=env, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    stopped = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert (stopped["epoch"], stopped["iteration"]) == (2, 2)  # killed mid-epoch, saved every iteration
    train(load_config(None, [*common, "name=resumed"]), resume=True)
    # The csv of the resumed run matches the straight run's: no row lost, the killed epoch averaged whole.
    straight_rows = list(csv.DictReader((tmp_path / "straight" / "results.csv").open()))
    resumed_rows = list(csv.DictReader((tmp_path / "resumed" / "results.csv").open()))
    assert [r["epoch"] for r in resumed_rows] == [r["epoch"] for r in straight_rows] == ["1", "2", "3"]
    for got, want in zip(resumed_rows, straight_rows):
        assert {k: v for k, v in got.items() if k.endswith("loss")} == {k: v for k, v in want.items() if k.endswith("loss")}
    a = load_checkpoint(tmp_path / "straight" / "last.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "resumed" / "last.pt")["state_dict"]
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="last.pt"):
        train(tiny_config(tmp_path, "none", "train.epochs=1"), resume=True)


def test_two_process_ddp_on_gloo(tmp_path):
    """torchrun with two CPU processes: sharded batches, gathered metrics, rank 0 writes."""
    overrides = [*TINY, "train.epochs=2", f"project={tmp_path}", "name=ddp", "train.batch_size=8"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "centernet.cli", "train", *overrides]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "ddp" / "results.csv").open()))
    assert len(rows) == 2 and rows[-1]["AP"] != ""
    ckpt = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert not any(k.startswith("module.") for k in ckpt["state_dict"])


def test_cpu_bf16_and_channels_last_training(tmp_path):
    from centernet.engine.trainer import Trainer, _autocast_dtype

    assert _autocast_dtype(tiny_config(tmp_path, "a"), torch.device("cpu")) is None
    assert _autocast_dtype(tiny_config(tmp_path, "a", "train.cpu_bf16=true"), torch.device("cpu")) is torch.bfloat16
    assert _autocast_dtype(tiny_config(tmp_path, "a"), torch.device("cuda")) is torch.float16
    assert _autocast_dtype(tiny_config(tmp_path, "a", "train.amp=false"), torch.device("cuda")) is None

    trainer = Trainer(tiny_config(tmp_path, "bf16", "train.epochs=1", "train.cpu_bf16=true", "train.channels_last=true"))
    seen = []
    trainer.model.register_forward_hook(lambda module, args, out: seen.append(out["hm"].dtype) if module.training else None)
    trainer.fit()
    assert seen and set(seen) == {torch.bfloat16}
    rows = list(csv.DictReader((tmp_path / "bf16" / "results.csv").open()))
    assert all(torch.isfinite(torch.tensor(float(rows[0][k]))) for k in ("hm_loss", "wh_loss", "off_loss"))
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # master weights stay float32
    assert trainer.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)

    # The checkpoint of an NHWC run predicts like the trained network (evaluated in float32).
    from centernet.models.detector import CenterNet

    detector = CenterNet.from_checkpoint(tmp_path / "bf16" / "last.pt").eval()
    image = torch.rand(3, 64, 64)
    inputs, _ = detector.preprocess([image])
    trainer.model.eval()
    with torch.no_grad():
        expected, got = trainer.model(inputs), detector.network(inputs)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name])


def test_warmup_ramps_the_lr_per_iteration_and_leaves_the_schedule_alone(tmp_path):
    used = []

    class RecordLr(TrainerHook):
        def on_step_end(self, trainer, losses):
            used.append(trainer.optimizer.param_groups[0]["lr"])

    cfg = tiny_config(tmp_path, "warm", "train.epochs=2", "train.lr_steps=[1]", "train.warmup_iters=6")
    train(cfg, hooks=(RecordLr(),))
    # 4 iterations per epoch; the drop after epoch 1 applies to the epoch's lr, the ramp on top of it.
    expected = [1e-3 * k / 6 for k in (1, 2, 3, 4)] + [1e-4 * 5 / 6, 1e-4, 1e-4, 1e-4]
    assert used == pytest.approx(expected)
    rows = list(csv.DictReader((tmp_path / "warm" / "results.csv").open()))
    assert [float(r["lr"]) for r in rows] == pytest.approx([1e-3, 1e-4])


def test_pretrained_imagenet_backbone_reaches_the_network(tmp_path):
    imagenet = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(imagenet, tmp_path / "resnet18.pth")
    trainer = Trainer(tiny_config(tmp_path, "pre", f"model.pretrained={tmp_path / 'resnet18.pth'}"))
    own = trainer.model.state_dict()
    assert all(torch.equal(own[k], imagenet[k]) for k in imagenet if not k.startswith("fc."))
    with pytest.raises(ValueError, match="hourglass has no ImageNet backbone.*model.weights"):
        load_pretrained_backbone(torch.nn.Identity(), "hourglass", tmp_path / "resnet18.pth")


@pytest.mark.parametrize("arch", ["res_18", "dla_34"])
def test_fine_tuning_from_an_original_coco_checkpoint_keeps_the_heads_of_another_class_count(tmp_path, arch):
    """As the original's --load_model: same-shaped tensors load, the 80-class heat-map head does not."""
    coco = build_model(arch, {"hm": 80, "wh": 2, "reg": 2}, head_conv=16)
    weights = {f"module.{k}": v for k, v in coco.state_dict().items()}  # saved from DataParallel
    if arch == "dla_34":  # released DLA files keep the ImageNet classifier
        weights |= {"module.base.fc.weight": torch.zeros(1000, 512, 1, 1), "module.base.fc.bias": torch.zeros(1000)}
    torch.save({"epoch": 140, "state_dict": weights}, tmp_path / "ctdet_coco.pth")
    final = "hm.2"  # the heat-map head's last conv
    expected = rf"kept the initialisation of 2 \({final}.weight: file \[80, 16, 1, 1\], network \[3, 16, 1, 1\]"
    with pytest.warns(UserWarning, match=expected) as caught:
        trainer = Trainer(tiny_config(tmp_path, "ft", f"model.arch={arch}", f"model.weights={tmp_path / 'ctdet_coco.pth'}"))
    assert ("base.fc.weight" in str(caught[0].message)) == (arch == "dla_34")
    own, file = trainer.model.state_dict(), coco.state_dict()
    assert own[f"{final}.weight"].shape == (3, 16, 1, 1)
    assert all(torch.equal(own[k], file[k]) for k in own if not k.startswith(f"{final}."))


def test_fine_tuning_from_our_best_pt_loads_everything_and_refuses_another_architecture(tmp_path):
    train(tiny_config(tmp_path, "first", "train.epochs=2"))
    best = tmp_path / "first" / "best.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trainer = Trainer(tiny_config(tmp_path, "second", f"model.weights={best}"))
    saved = load_checkpoint(best)["state_dict"]
    assert all(torch.equal(value, saved[key]) for key, value in trainer.model.state_dict().items())

    other = tmp_path / "res34.pth"
    torch.save(build_model("res_34", {"hm": 3, "wh": 2, "reg": 2}, head_conv=16).state_dict(), other)
    with pytest.raises(CheckpointError, match=r"res34.pth: not weights for this network's backbone .*layer1.2"):
        Trainer(tiny_config(tmp_path, "third", f"model.weights={other}"))


class Recorder(TrainerHook):
    """Records what the loop reports; stops at (epoch, iteration) ``stop_at`` when given."""

    def __init__(self, stop_at=None) -> None:
        self.steps, self.epochs, self.validations, self.stop_at = [], [], [], stop_at

    def on_step_end(self, trainer, losses) -> None:
        self.steps.append((trainer.state.epoch, trainer.state.iteration, losses["loss"]))
        self.grad_norm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in trainer.model.parameters() if p.grad is not None])))
        if self.stop_at == (trainer.state.epoch, trainer.state.iteration):
            trainer.request_stop()

    def on_epoch_end(self, trainer, row) -> None:
        self.epochs.append(dict(row))

    def on_validation_end(self, trainer, metrics) -> None:
        self.validations.append(metrics.primary)


# Fewer images for the hook / logging tests: 2 steps per epoch.
SHORT = ["data.synthetic_images={train: 8, val: 2}", "train.val_interval=10"]


def test_hooks_stop_early_and_resume_rebuilds_a_durable_csv(tmp_path):
    """Step, epoch-end and validation-end hooks; an early stop leaves a partial row; a resume
    restores the rows the checkpoint knows (even if the csv lost them), completes the epoch
    averaged over all its steps, and deletes temporaries a kill left behind; TensorBoard events."""
    hook = Recorder(stop_at=(2, 1))
    train(tiny_config(tmp_path, "hooks", *SHORT, "train.epochs=2"), hooks=[hook])
    run = tmp_path / "hooks"
    assert [(e, i) for e, i, _ in hook.steps] == [(1, 1), (1, 2), (2, 1)]
    assert [row["epoch"] for row in hook.epochs] == [1, 2] and hook.validations == []
    assert hook.epochs[0]["loss"] == pytest.approx(sum(loss for e, _, loss in hook.steps if e == 1) / 2, abs=1e-5)
    rows = list(csv.DictReader((run / "results.csv").open()))
    assert [(r["epoch"], r["steps"], r["partial"]) for r in rows] == [("1", "2", "0"), ("2", "1", "1")]
    ckpt = load_checkpoint(run / "last.pt")
    assert (ckpt["epoch"], ckpt["iteration"]) == (2, 1) and [r["epoch"] for r in ckpt["history"]] == [1, 2]
    events = list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0

    # A kill between the checkpoint and the csv write loses a row; a kill mid-save leaves temporaries.
    lines = (run / "results.csv").read_text().splitlines()
    (run / "results.csv").write_text(lines[0] + "\n")
    (run / ".last.pt.abc123.tmp").write_bytes(b"x" * 100)
    (run / "results.csv.tmp").write_text("")
    rest = Recorder()
    train(tiny_config(tmp_path, "hooks", *SHORT, "train.epochs=2"), resume=True, hooks=[rest])
    assert [(e, i) for e, i, _ in rest.steps] == [(2, 2)] and len(rest.validations) == 1
    rows = list(csv.DictReader((run / "results.csv").open()))
    assert [(r["epoch"], r["steps"], r["partial"]) for r in rows] == [("1", "2", "0"), ("2", "2", "0")]
    assert rows[0]["loss"] == lines[1].split(",")[lines[0].split(",").index("loss")]
    epoch2 = [loss for e, _, loss in hook.steps + rest.steps if e == 2]
    assert float(rows[1]["loss"]) == pytest.approx(sum(epoch2) / 2, abs=1e-5) and rows[1]["AP"] != ""
    assert not list(run.glob("*.tmp"))


def test_grad_clip_and_the_grad_scaler_path(tmp_path, monkeypatch):
    """``grad_clip`` bounds every step's gradient norm; the loss-scaling path (scale, unscale for
    clipping, step, update) run on CPU with a power-of-two scale trains as the unscaled one, and
    the scaler's state is checkpointed."""
    norms = []
    clip = torch.nn.utils.clip_grad_norm_

    def recording_clip(parameters, max_norm, *args, **kwargs):
        norms.append(float(clip(parameters, max_norm, *args, **kwargs)))
        return norms[-1]

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording_clip)
    weights = {}
    for name, enabled in (("plain", False), ("scaled", True)):
        hook = Recorder()
        trainer = Trainer(tiny_config(tmp_path, name, *SHORT, "train.epochs=1", "train.grad_clip=0.01"), hooks=[hook])
        trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12, growth_interval=1, enabled=enabled)
        trainer.fit()
        assert hook.grad_norm <= 0.01 * (1 + 1e-4)  # after clipping
        ckpt = load_checkpoint(tmp_path / name / "last.pt")
        weights[name] = ckpt["state_dict"]
        if enabled:
            assert ckpt["scaler"]["scale"] == 2.0**14  # 2 finite steps, growth after each
    assert len(norms) == 4 and min(norms) > 0.01  # the unclipped norms were larger than the bound
    assert norms[0] == pytest.approx(norms[2], rel=1e-5)  # unscaled before clipping: the same gradient
    for key, value in weights["plain"].items():
        torch.testing.assert_close(weights["scaled"][key], value, rtol=1e-5, atol=1e-6, msg=key)


class Crash(Exception):
    pass


def test_a_crash_after_the_last_step_resumes_to_a_full_row(tmp_path):
    """Killed after the epoch's last step was checkpointed but before its row was written: the
    resumed run has no step left, yet writes the row with the losses of all the epoch's steps."""
    hook = Recorder()

    class CrashAtTheEnd(TrainerHook):
        def on_step_end(self, trainer, losses):
            if trainer.state.iteration == trainer.sampler.steps_per_epoch:
                raise Crash

    cfg = tiny_config(tmp_path, "last", *SHORT, "train.epochs=1", "train.checkpoint_interval=1")
    with pytest.raises(Crash):
        train(cfg, hooks=[hook, CrashAtTheEnd()])
    assert not (tmp_path / "last" / "results.csv").exists()
    train(cfg, resume=True)
    rows = list(csv.DictReader((tmp_path / "last" / "results.csv").open()))
    assert [(r["epoch"], r["steps"], r["partial"]) for r in rows] == [("1", "2", "0")]
    mean = sum(loss for _, _, loss in hook.steps) / 2
    assert all(rows[0][k] != "" for k in ("loss", "hm_loss", "wh_loss", "off_loss"))
    assert float(rows[0]["loss"]) == pytest.approx(mean, abs=1e-5)


def test_training_threads_are_applied_logged_and_validated(tmp_path, caplog):
    before = torch.get_num_threads()
    try:
        used: list[int] = []

        class Threads(TrainerHook):
            def on_step_end(self, trainer, losses):
                used.append(torch.get_num_threads())

        with caplog.at_level("INFO", logger="centernet.train"):
            config = tiny_config(tmp_path, "threads", "train.epochs=1", "train.val_interval=5", "train.threads=1")
            Trainer(config, hooks=[Threads()]).fit()
        assert used == [1] * 4  # every step (the validation pass after them runs with test.threads)
        assert any("threads: 1 intra-op thread(s), as train.threads=1 sets" in r.getMessage() for r in caplog.records)
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="train.threads: -2 is not a thread count"):
        Trainer(tiny_config(tmp_path, "bad-threads", "train.threads=-2"))
