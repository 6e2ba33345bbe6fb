"""The command line this process runs, for the records in run folders (``command.txt``, ``args.yaml``)."""
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

_command: list[str] | None = None


def set_command(argv: list[str]) -> None:
    """The command line this process runs (the CLI's ``centernet VERB ...``)."""
    global _command
    _command = list(argv)


def command_line() -> str:
    """The command that is running, as a shell would take it (``centernet predict ...``); the
    Python script and its arguments when no CLI set it. Undecodable bytes of a name are shown ``\\xNN``."""
    argv = _command if _command is not None else [Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:]]
    return shlex.join(os.fsencode(a).decode("utf-8", "backslashreplace") for a in argv)
