"""The training loop's one extension mechanism: ``TrainerHook``, and the TensorBoard hook built on it.

A hook gets ``on_step_end`` (with the step's losses), ``on_epoch_end`` (with the epoch's
``results.csv`` row) and ``on_validation_end`` (with the metrics); any of them may call
``trainer.request_stop()``.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from centernet.engine.tensorboard_log import trim_event_files
from centernet.extras import MissingExtraError, require

if TYPE_CHECKING:
    from centernet.engine.trainer import Trainer

logger = logging.getLogger("centernet.train")


class TrainerHook:
    """Extension points of the training loop; override the ones needed (all default to nothing).

    Every method gets the trainer (its ``state``, ``model``, ``optimizer``, ``run`` folder...); a
    hook stops training with ``trainer.request_stop()`` (honoured after the current step).
    """

    def on_step_end(self, trainer: Trainer, losses: dict[str, float]) -> None:
        """After each optimisation step, with that step's named losses (averaged over processes)."""

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        """After each (possibly partial) epoch, with its ``results.csv`` row, before it is saved."""

    def on_validation_end(self, trainer: Trainer, metrics: Any) -> None:
        """After each validation, with the ``EvaluationReport`` (``primary``, ``stats_for_csv()``)."""


class TensorBoardHook(TrainerHook):
    """Step losses, epoch rows and validation metrics as TensorBoard scalars (``<run>/tensorboard``)."""

    def __init__(self, log_dir, resumed_at: tuple[int, int] | None = None) -> None:
        self.log_dir = log_dir
        self.resumed_at = resumed_at  # (step, epoch) of the checkpoint a resumed run continues
        self._writer = None

    @property
    def writer(self):
        """The event-file writer, made on first use: nothing is written before the run folder is locked.

        A resumed run first drops the events of the steps it redoes (``tensorboard_log``): each step once.
        """
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            if self.resumed_at is not None:
                trim_event_files(self.log_dir, *self.resumed_at)
            self._writer = SummaryWriter(log_dir=str(self.log_dir))
        return self._writer

    def on_step_end(self, trainer: Trainer, losses: dict[str, float]) -> None:
        step = trainer.global_step
        for key, value in losses.items():
            self.writer.add_scalar(f"train_step/{key}", value, step)

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"epoch/{key}", value, int(row["epoch"]))
        self.writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def tensorboard_available() -> bool:
    """Whether ``torch.utils.tensorboard`` can write (the ``tensorboard`` package is installed).

    ``train.tensorboard`` is on by default and the package is an extra, so a missing one is a
    warning naming the extra (and the field that silences it), not an error: training goes on.
    """
    try:
        require("tensorboard", "tensorboard", "train.tensorboard (TensorBoard event files)")
    except MissingExtraError as err:
        logger.warning("%s; or set train.tensorboard=false. No event files are written.", err)
        return False
    return True
