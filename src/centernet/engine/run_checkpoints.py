"""A training run's checkpoint writes: a failed one ends the run with what to do next.

``save_checkpoint`` writes atomically, so a write that fails (a full disk, a file-size limit, a
folder turned read-only) leaves the previous ``last.pt`` intact. Training then stops with one
``CheckpointWriteError`` (an ``OSError``: the CLI prints it as one ``error:`` line, exit 2) naming
the file and the system's reason, the last good checkpoint (its epoch and iteration) and the exact
command that continues from it.
"""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from centernet.models.checkpoint import CheckpointError, CheckpointWriteError, load_checkpoint, save_checkpoint


def resume_command(folder: str | Path) -> str:
    """The command that continues the run in ``folder`` from its ``last.pt``."""
    return f"centernet train --resume {shlex.quote(str(folder))}"


def last_good_checkpoint(folder: str | Path) -> str:
    """Where the run in ``folder`` can continue from, in words (with the resume command), or that it cannot."""
    last = Path(folder) / "last.pt"
    if not last.is_file():
        return f"no checkpoint was written before ({last} does not exist), so there is nothing to resume"
    try:
        payload = load_checkpoint(last)
        where = f"epoch {int(payload['epoch'])}, iteration {int(payload['iteration'])}"
    except (CheckpointError, KeyError, TypeError, ValueError, OSError):
        where = "its position unreadable"
    return f"the last good checkpoint is {last} (it continues at {where}); continue with: {resume_command(folder)}"


def save_run_checkpoint(folder: str | Path, path: str | Path, payload: dict[str, Any]) -> None:
    """``save_checkpoint(path, payload)`` for the run in ``folder``; a failed write raises the error
    naming the file, the reason, the last good checkpoint and the resume command."""
    try:
        save_checkpoint(path, payload)
    except CheckpointWriteError as err:
        failure = CheckpointWriteError(
            err.errno or 0,
            f"{err.strerror}; training stopped, {path} was left as it was; {last_good_checkpoint(folder)}",
        )
        failure.filename = err.filename
        raise failure from err
