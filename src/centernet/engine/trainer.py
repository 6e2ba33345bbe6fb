"""Training: Adam with the paper's learning rate and step drops, AMP on CUDA, exact resume, DDP.

Determinism: the order of samples in an epoch and every random augmentation draw are functions
of ``(seed, epoch, sample index)`` alone, so a run resumed from ``last.pt`` (saved at epoch ends and,
with ``train.checkpoint_interval``, every N iterations) continues exactly as if never stopped.

Durable logs: every checkpoint carries the run's history (the rows of ``results.csv``) and the
running loss sums of the epoch in progress, so a resume rewrites ``results.csv`` from the
checkpoint (no row lost, whatever moment a kill hit) and a resumed epoch's losses are averaged over
the whole epoch. A row whose epoch stopped early (a hook's ``request_stop``) says so: ``steps``
counts the iterations averaged and ``partial`` is 1.

Extending: ``TrainerHook`` subclasses get ``on_step_end``, ``on_epoch_end`` (with the epoch's row)
and ``on_validation_end`` (with the metrics); any of them may call ``trainer.request_stop()``.
Progress goes to the ``centernet.train`` logger, and, when ``tensorboard`` is installed and
``train.tensorboard`` is on, to TensorBoard event files in the run folder.
"""
from __future__ import annotations

import logging
import math
import random
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from centernet.config import Config, ConfigError
from centernet.data.check import prepare_training_data
from centernet.engine.dataset import EpochSampler, TrainingDataset, collate
from centernet.engine.distributed import DistributedContext
from centernet.engine.evaluate import evaluate_network
from centernet.engine.hooks import TensorBoardHook, TrainerHook, tensorboard_available
from centernet.engine.run_checkpoints import save_run_checkpoint
from centernet.engine.run_folder import RunFolder
from centernet.models.checkpoint_fields import load_resume_checkpoint
from centernet.models.detector import CenterNet
from centernet.models.heads import HEAD_INITS, reinit_regression_heads
from centernet.models.pretrained import load_matching_weights, load_pretrained_backbone
from centernet.threads import ThreadTuner

logger = logging.getLogger("centernet.train")


@dataclass
class TrainState:
    """Where training stands: the next epoch to run and how many of its iterations are done.

    ``loss_sums`` / ``loss_steps``: the running sums of the named losses over the ``iteration``
    steps done in that epoch (so that an epoch resumed in the middle is averaged as a whole).
    """

    epoch: int = 1
    iteration: int = 0
    best_metric: float = -math.inf
    loss_sums: dict[str, float] = field(default_factory=dict)
    loss_steps: int = 0


class Trainer:
    """Trains one config.

    Args:
        cfg: the experiment.
        resume: continue ``runs/<name>/last.pt``.
        hooks: ``TrainerHook`` objects (step, epoch-end and validation-end hooks).
    """

    def __init__(
        self,
        cfg: Config,
        resume: bool = False,
        hooks: Sequence[TrainerHook] = (),
    ) -> None:
        if cfg.model.head_init not in HEAD_INITS:
            raise ConfigError(f"model.head_init: {cfg.model.head_init!r} is not one of {', '.join(HEAD_INITS)}")
        self.cfg = cfg
        self.hooks: list[TrainerHook] = list(hooks)
        self.history: list[dict[str, Any]] = []
        self.stop_requested = False
        self.ctx = DistributedContext.from_env(cfg.train.device)
        self.run = RunFolder(cfg, resume=resume) if self.ctx.is_main else None
        self.ctx.barrier()
        _seed_everything(cfg.train.seed)

        self.train_set = TrainingDataset.from_config(cfg, "train")
        self.val_set = TrainingDataset.from_config(cfg, "val")
        for which, split in (("train", self.train_set), ("val", self.val_set)):  # before any step: nothing fails mid-epoch
            split.task.require_annotations(split.data)
            summary = prepare_training_data(split.data, cfg.data.on_bad_image)
            if self.ctx.is_main:
                logger.info("%s data: %s", which, summary)
        self.class_names = self.train_set.class_names
        self.task = self.train_set.task
        # The detector users get: training goes through its forward (losses), validation through its
        # predictor, and its metadata is the checkpoint's. Its test-time options stay the defaults.
        self.detector = CenterNet(
            cfg.model.arch,
            class_names=self.class_names,
            category_ids=self.train_set.category_ids,
            task=self.task,
            input_size=tuple(cfg.data.input_size),
            keep_res=cfg.data.keep_res,
            mean=cfg.data.mean,
            std=cfg.data.std,
            channel_order=cfg.data.channel_order,
            head_conv=cfg.model.head_conv,
        )
        self.model = self.detector.network
        if cfg.model.head_init == "pytorch":
            reinit_regression_heads(self.model, self.task.heads)
        if cfg.model.pretrained:
            load_pretrained_backbone(self.model, cfg.model.arch, cfg.model.pretrained)
        if cfg.model.weights:
            report = load_matching_weights(self.model, cfg.model.weights, self.task.heads)
            if self.ctx.is_main and (report.kept or report.dropped):
                warnings.warn(f"model.weights {cfg.model.weights}: {report.summary()}", stacklevel=2)
        # Intra-op threads on the CPU from the free cores (the DataLoader workers count), re-chosen
        # during the run as the load changes (train.threads=N fixes the count).
        self.threads = ThreadTuner(cfg.train.threads, "train.threads", workers=cfg.data.num_workers,
                                   log=logger.info if self.ctx.is_main else lambda line: None, enabled=self.ctx.device.type == "cpu")
        self.memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
        self.model.to(self.ctx.device, memory_format=self.memory_format)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.base_lr())
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, cfg.lr_milestones(), gamma=cfg.train.lr_drop)
        self.use_amp = cfg.train.amp and self.ctx.device.type == "cuda"
        self.scaler = torch.amp.GradScaler(self.ctx.device.type, enabled=self.use_amp)
        self.autocast_dtype = _autocast_dtype(cfg, self.ctx.device)
        self.state = TrainState()
        if resume:
            self._resume()
        self.network = (
            DistributedDataParallel(self.detector, device_ids=[self.ctx.device.index] if self.ctx.device.type == "cuda" else None)
            if self.ctx.enabled
            else self.detector
        )
        per_rank_batch = max(1, cfg.train.batch_size // self.ctx.world_size)
        self.sampler = EpochSampler(len(self.train_set), per_rank_batch, cfg.train.seed, self.ctx.rank, self.ctx.world_size)
        self.loader = DataLoader(
            self.train_set,
            batch_sampler=self.sampler,
            num_workers=cfg.data.num_workers,
            collate_fn=collate,
            pin_memory=self.ctx.device.type == "cuda",
            persistent_workers=cfg.data.num_workers > 0,
        )
        if self.run and cfg.train.tensorboard and tensorboard_available():
            self.hooks.append(TensorBoardHook(self.run.root / "tensorboard", (self.global_step, self.state.epoch) if resume else None))

    @property
    def global_step(self) -> int:
        """Optimisation steps done since the start of the run (this process)."""
        return (self.state.epoch - 1) * self.sampler.steps_per_epoch + self.state.iteration

    def request_stop(self) -> None:
        """Stop after the current step (from a hook or callback); ``last.pt`` can resume it."""
        self.stop_requested = True

    # ------------------------------------------------------------------ checkpoints
    def _payload(self, training_state: bool) -> dict:
        """The self-describing checkpoint; with ``training_state`` also what ``--resume`` needs."""
        cfg = self.cfg
        payload = {
            **self.detector.metadata(),
            "config": cfg.to_dict(),
            "state_dict": self.model.state_dict(),
            "epoch": self.state.epoch,
            "iteration": self.state.iteration,
            "best_metric": self.state.best_metric,
            "history": [dict(row) for row in self.history],
        }
        if training_state:
            payload.update(
                optimizer=self.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict(),
                scaler=self.scaler.state_dict(),
                rng=_rng_state(),
                epoch_losses={"sums": dict(self.state.loss_sums), "steps": self.state.loss_steps},
            )
        return payload

    def _save_last(self) -> None:
        if self.run:  # the main process's alone
            save_run_checkpoint(self.run.root, self.run.last, self._payload(training_state=True))

    def _save_best(self) -> None:
        """``best.pt`` is for prediction and fine-tuning: weights and description, no optimiser (a third the size)."""
        if self.run:
            save_run_checkpoint(self.run.root, self.run.best, self._payload(training_state=False))

    def _resume(self) -> None:
        path = RunFolder.path_of(self.cfg) / "last.pt"
        if not path.exists():
            raise FileNotFoundError(f"--resume: no {path} to continue from")
        ckpt = load_resume_checkpoint(path)  # every field checked: one line naming a bad one
        if ckpt["arch"] != self.cfg.model.arch or ckpt["heads"] != self.task.heads:
            raise ValueError(f"{path}: was trained as {ckpt['arch']} {ckpt['heads']}, not {self.cfg.model.arch} {self.task.heads}")
        for field, target in (("state_dict", self.model), ("optimizer", self.optimizer),
                              ("scheduler", self.scheduler), ("scaler", self.scaler)):
            try:
                target.load_state_dict(ckpt[field])
            except (KeyError, TypeError, ValueError, RuntimeError) as error:
                reason = " ".join(str(error).split())  # one line: torch's messages span several
                raise ValueError(f"{path}: its {field!r} does not fit this run ({reason})") from None
        running = ckpt.get("epoch_losses", {"sums": {}, "steps": 0})
        self.state = TrainState(
            int(ckpt["epoch"]),
            int(ckpt["iteration"]),
            float(ckpt["best_metric"]),
            {k: float(v) for k, v in running["sums"].items()},
            int(running["steps"]),
        )
        _set_rng_state(ckpt["rng"])
        # The checkpoint's history is the truth: rows written after it (a kill before the next
        # save) belong to steps about to be redone, rows missing (a kill before the csv write) return.
        self.history = [dict(row) for row in ckpt.get("history", [])]
        if self.run:
            self.run.replace_rows(self.history)
        logger.info("resumed %s at epoch %d, iteration %d", path, self.state.epoch, self.state.iteration)

    # ------------------------------------------------------------------ loop
    def fit(self) -> dict:
        cfg = self.cfg
        summary: dict = {}
        if self.run:
            self.run.begin(cfg)  # the folder is ours alone from here on
            _remove_stale_temporaries(self.run.root)
            logger.info(lr_schedule_description(cfg, sorted(self.scheduler.milestones.elements())))
        try:
            while self.state.epoch <= cfg.train.epochs and not self.stop_requested:
                summary = self._run_epoch() or summary
        finally:
            for hook in self.hooks:
                if isinstance(hook, TensorBoardHook):
                    hook.close()
        self.ctx.barrier()
        if self.run:
            summary["run_folder"] = str(self.run.root)
            self.run.close()  # the folder's lock: the run is over
        self.ctx.close()
        return summary

    def _run_epoch(self) -> dict | None:
        """Train (and maybe validate) the epoch in ``state``; returns the validation summary if any."""
        cfg = self.cfg
        epoch = self.state.epoch
        started = time.time()
        losses, steps = self._train_epoch(epoch)
        complete = steps == self.sampler.steps_per_epoch
        row: dict = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"], **losses, "steps": steps, "partial": int(not complete)}
        summary = None
        if complete:
            with warnings.catch_warnings():
                # A resume at an epoch's last step makes no optimiser step before the epoch's lr drop.
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
                self.scheduler.step()
            self.state = TrainState(epoch + 1, 0, self.state.best_metric)
            if epoch % cfg.train.val_interval == 0 or epoch == cfg.train.epochs:
                metrics = evaluate_network(self.detector, self.val_set, cfg, self.ctx, save_images_to=self.run and self.run.root / "images")
                row.update(metrics.stats_for_csv())
                if metrics.primary > self.state.best_metric:
                    self.state.best_metric = metrics.primary
                    self._save_best()
                summary = {"epoch": epoch, **metrics.stats_for_csv()}
                logger.info("epoch %d validation: %s", epoch, _format(metrics.stats_for_csv()))
                for hook in self.hooks:
                    hook.on_validation_end(self, metrics)
        row["time"] = round(time.time() - started, 2)
        for hook in self.hooks:
            hook.on_epoch_end(self, row)
        self.history = [r for r in self.history if int(r["epoch"]) < epoch] + [row]
        self._save_last()  # the history travels with the checkpoint, written before the csv
        if self.run:
            self.run.append(row)
        logger.info("epoch %d%s: %s", epoch, "" if complete else f" stopped after {steps} steps", _format(losses))
        return summary

    def _train_epoch(self, epoch: int) -> tuple[dict[str, float], int]:
        """The epoch's remaining steps; returns the losses averaged over all its steps and their count."""
        cfg = self.cfg
        self.network.train()
        self.sampler.set_epoch(epoch, skip_batches=self.state.iteration)
        bar = tqdm(self.loader, desc=f"epoch {epoch}/{cfg.train.epochs}", disable=not self.ctx.is_main, dynamic_ncols=True)
        for batch in bar:
            self._warm_up(self.global_step)
            step_losses = self.train_step(batch)
            self.state.iteration += 1
            self.state.loss_steps += 1
            for key, value in step_losses.items():
                self.state.loss_sums[key] = self.state.loss_sums.get(key, 0.0) + value
            bar.set_postfix({k: f"{v / self.state.loss_steps:.3f}" for k, v in self.state.loss_sums.items()})
            if cfg.train.checkpoint_interval and self.state.iteration % cfg.train.checkpoint_interval == 0:
                self._save_last()
            for hook in self.hooks:
                hook.on_step_end(self, step_losses)
            if self.stop_requested:
                break
        self._warm_up(None)
        steps = self.state.loss_steps
        return {k: round(v / max(steps, 1), 5) for k, v in self.state.loss_sums.items()}, steps

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One optimisation step on a collated batch (threads re-chosen first when due); its named losses."""
        self.threads.update()
        batch = {k: v.to(self.ctx.device, non_blocking=True) for k, v in batch.items()}
        batch["input"] = batch["input"].contiguous(memory_format=self.memory_format)
        with torch.autocast(self.ctx.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            weighted = self.network(batch["input"], batch)
        total = sum(weighted.values())
        named = {"loss": total, **_unweighted(weighted, self.task.loss_weights)}
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.cfg.train.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {key: float(self.ctx.all_reduce_mean(value.detach())) for key, value in named.items()}

    def _warm_up(self, step: int | None) -> None:
        """Scale the epoch's lr by ``(step + 1) / warmup_iters`` during the warm-up; ``None`` restores it."""
        warmup = self.cfg.train.warmup_iters
        if warmup <= 0:
            return
        factor = 1.0 if step is None else min(1.0, (step + 1) / warmup)
        for group, lr in zip(self.optimizer.param_groups, self.scheduler.get_last_lr()):
            group["lr"] = lr * factor


def train(cfg: Config, resume: bool = False, hooks: Sequence[TrainerHook] = ()) -> dict:
    """Train ``cfg`` to the end (continuing ``runs/<name>/last.pt`` with ``resume``); returns the last metrics."""
    trainer = Trainer(cfg, resume=resume, hooks=hooks)
    try:
        return trainer.fit()
    finally:
        if trainer.run:  # the folder's lock, however the run ended
            trainer.run.close()


def lr_schedule_description(cfg: Config, milestones: Sequence[int]) -> str:
    """The learning rates a run will use and the epochs of each, and why the drops are where they are.

    ``milestones``: the epochs after which the lr drops (the scheduler's; a resumed run keeps the
    ones it started with). Says when ``train.schedule_epochs`` moved the recipe's ``lr_steps``.
    """
    t = cfg.train
    lr, start, spans = cfg.base_lr(), 1, []
    for drop in [m for m in milestones if m < t.epochs] + [t.epochs]:
        if drop >= start:
            spans.append(f"{lr:.3g} for epoch{'s' if drop > start else ''} {start}{f'-{drop}' if drop > start else ''}")
        lr, start = lr * t.lr_drop, drop + 1
    line = "lr schedule: " + ", ".join(spans)
    if list(milestones) != cfg.lr_milestones():
        line += " (the drops this run started with, restored from last.pt)"
    elif list(milestones) != list(t.lr_steps):
        line += (
            f" (train.lr_steps {list(t.lr_steps)} were written for train.schedule_epochs={t.schedule_epochs}, "
            f"moved to {list(milestones)} for train.epochs={t.epochs}; train.schedule_epochs=null keeps them as written)"
        )
    return line


def _format(values: dict) -> str:
    return " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())


def _remove_stale_temporaries(root) -> None:
    """Delete half-written files (``*.tmp``) a killed run left in its folder (the run folder is ours alone)."""
    for stale in root.glob("*.tmp"):
        if stale.is_file():
            logger.info("removing stale temporary file %s", stale)
            stale.unlink()


def _autocast_dtype(cfg: Config, device: torch.device) -> torch.dtype | None:
    """The training forward's autocast type: float16 on CUDA (``amp``), bfloat16 on CPU (``cpu_bf16``), else none."""
    if device.type == "cuda":
        return torch.float16 if cfg.train.amp else None
    if device.type == "cpu" and cfg.train.cpu_bf16:
        if not torch.cpu._is_avx512_bf16_supported() and not torch.cpu._is_amx_tile_supported():
            warnings.warn("train.cpu_bf16: this CPU has no native bfloat16 (AVX512-BF16 / AMX); steps will be slower", stacklevel=3)
        return torch.bfloat16
    return None


def _unweighted(weighted: dict[str, torch.Tensor], weights: dict[str, float]) -> dict[str, torch.Tensor]:
    """Each loss term without its weight, as ``results.csv`` logs them (a term weighted 0 logs 0)."""
    return {name: value / weights[name] if weights[name] else value.detach() * 0 for name, value in weighted.items()}


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    return {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(np.frombuffer(np.random.get_state()[1].tobytes(), dtype=np.uint8).copy()),
        "numpy_pos": int(np.random.get_state()[2]),
        "python": torch.tensor(random.getstate()[1], dtype=torch.int64),
    }


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    keys = np.frombuffer(state["numpy"].numpy().tobytes(), dtype=np.uint32)
    np.random.set_state(("MT19937", keys, int(state["numpy_pos"]), 0, 0.0))
    random.setstate((3, tuple(int(v) for v in state["python"].tolist()), None))
