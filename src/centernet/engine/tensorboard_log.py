"""TensorBoard event files that hold each step once, across Ctrl-C and ``--resume``.

A run stopped between two checkpoints has logged steps that the resumed run redoes (from
``last.pt``). Before a resumed run writes its first event, :func:`trim_event_files` rewrites the
folder's events into one file keeping only what the checkpoint covers (training steps up to the
checkpoint's step, epoch rows of the epochs before its epoch), and removes the old files; the resumed
run then logs the redone steps once. The new file is complete before any old one is removed, and a
step found twice (a kill between the two) is kept once.
"""
from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger("centernet.train")

EVENT_GLOB = "events.out.tfevents.*"
#: Tag prefix -> which counter its step is: optimisation steps, or epochs.
STEP_TAGS, EPOCH_TAGS = "train_step/", "epoch/"


def logged_scalars(log_dir: str | Path) -> dict[str, list[tuple[float, int, float]]]:
    """Every scalar in the event files of ``log_dir``: tag -> ``[(wall_time, step, value)]`` in file order."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    found: dict[str, list[tuple[float, int, float]]] = {}
    for path in sorted(Path(log_dir).glob(EVENT_GLOB)):
        try:
            for event in EventFileLoader(str(path)).Load():
                for value in event.summary.value:
                    if value.HasField("simple_value"):
                        number = value.simple_value
                    elif value.HasField("tensor") and value.tensor.float_val:
                        number = value.tensor.float_val[0]
                    else:
                        continue
                    found.setdefault(value.tag, []).append((event.wall_time, int(event.step), float(number)))
        except Exception as err:  # a file cut short by a kill: keep what was read
            logger.warning("TensorBoard: %s could not be read to its end (%s); kept what was read", path, err)
    return found


def trim_event_files(log_dir: str | Path, last_step: int, next_epoch: int) -> int:
    """Keep only the events a resume from (``last_step``, ``next_epoch``) does not redo; returns how many were dropped.

    Training-step scalars with a step above ``last_step`` and epoch scalars of ``next_epoch`` or later
    are dropped; every (tag, step) is kept once. Nothing is rewritten when nothing needs dropping.
    """
    from torch.utils.tensorboard import SummaryWriter

    log_dir = Path(log_dir)
    old_files = sorted(log_dir.glob(EVENT_GLOB))
    if not old_files:
        return 0
    scalars = logged_scalars(log_dir)
    kept: dict[str, dict[int, tuple[float, float]]] = {}
    total = 0
    for tag, events in scalars.items():
        limit = next_epoch - 1 if tag.startswith(EPOCH_TAGS) else last_step
        for wall_time, step, value in events:
            total += 1
            if step <= limit:
                kept.setdefault(tag, {}).setdefault(step, (wall_time, value))
    dropped = total - sum(len(steps) for steps in kept.values())
    if dropped == 0 and len(old_files) == 1:
        return 0
    writer = SummaryWriter(log_dir=str(log_dir), filename_suffix=".resumed")
    ordered = sorted((wall_time, step, tag, value) for tag, steps in kept.items() for step, (wall_time, value) in steps.items())
    for wall_time, step, tag, value in ordered:  # the order they were logged in
        writer.add_scalar(tag, value, step, walltime=wall_time)
    writer.close()
    for path in old_files:
        path.unlink(missing_ok=True)
    logger.info("TensorBoard: %d events of steps the resume redoes removed from %s", dropped, log_dir)
    return dropped
