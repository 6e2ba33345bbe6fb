"""The run folder ``runs/<name>/``: resolved config, ``results.csv``, PNG plots, checkpoints, images.

Runs never mix. A run holds an exclusive lock on its folder (``.lock``: an ``flock`` on a file that
names the holder's pid and host) for its whole life, so a second run of the same name is refused
while the first lives; the kernel drops the lock when the holder dies, however it dies, so a stale
lock file is recognised and taken over. A folder holding anything from an earlier run (checkpoints,
``config.yaml``, ``results.csv``...) is an existing run: ``--resume`` continues it, otherwise
``on_existing_run`` decides: ``"error"`` (the default: refuse, saying the choices; the same command
never writes somewhere else or over something silently), ``"increment"`` (the first free
``<name>-2``, ``<name>-3``..., as Ultralytics) or ``"overwrite"`` (empty the folder first).
"""
from __future__ import annotations

import csv
import dataclasses
import errno
import fcntl
import json
import os
import shutil
import socket
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the non-interactive backend)
from matplotlib.ticker import MaxNLocator  # noqa: E402

from centernet.config import RESUME_SAFE_FIELDS, Config, ConfigError, load_config, with_overrides  # noqa: E402
from centernet.engine.command import command_line  # noqa: E402

ON_EXISTING_RUN = ("error", "increment", "overwrite")
LOCK_NAME = ".lock"
#: Every command that started or resumed the run, one per line.
COMMAND_NAME = "command.txt"


class RunLockedError(FileExistsError):
    """Another live process holds the run folder."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


class RunLock:
    """An exclusive lock on a run folder for the life of a run (released by ``release`` or by death)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_NAME
        # A file object, not a bare descriptor: if the run object is dropped without ``release``
        # (an exception in a caller), closing on garbage collection still drops the flock.
        self._file = None

    def holder(self) -> dict:
        """What the lock file says about its holder (empty when unreadable)."""
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def _flock(self, stream) -> bool:
        """Tries the exclusive lock on an open lock file: whether it was free (stale or unused)."""
        try:
            fcntl.flock(stream.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError as error:  # a file system without flock: fall back to the pid check
            if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            holder = self.holder()
            return not (holder.get("host") == socket.gethostname() and _pid_alive(int(holder.get("pid", -1))))
        return True

    def ensure_free(self) -> None:
        """Raises ``RunLockedError`` when a live run holds the folder (takes nothing)."""
        try:
            stream = open(self.path, "rb")  # noqa: SIM115
        except FileNotFoundError:
            return
        with stream:
            if not self._flock(stream):
                raise RunLockedError(self._held_message())

    def acquire(self) -> None:
        """Takes the lock, or raises ``RunLockedError`` naming the live holder."""
        while True:
            stream = open(self.path, "a+b")  # noqa: SIM115  (held open for the life of the run)
            try:
                free = self._flock(stream)
            except OSError:
                stream.close()
                raise
            if not free:
                stream.close()
                raise RunLockedError(self._held_message())
            try:
                same_file = os.stat(self.path).st_ino == os.fstat(stream.fileno()).st_ino
            except FileNotFoundError:  # the holder released (unlinked) it between our open and flock
                same_file = False
            if same_file:
                break
            stream.close()
        holder = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
        stream.truncate(0)
        stream.write(holder.encode())
        stream.flush()
        os.fsync(stream.fileno())
        self._file = stream

    def _held_message(self) -> str:
        holder = self.holder()
        who = f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"
        return (
            f"run folder {self.path.parent} is in use by a live run ({who}, lock {self.path}); "
            "wait for it to end, stop it, or choose another name="
        )

    def release(self) -> None:
        if self._file is None:
            return
        self.path.unlink(missing_ok=True)
        self._file.close()  # closing drops the flock
        self._file = None

    @property
    def held(self) -> bool:
        return self._file is not None

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # noqa: BLE001  (interpreter shutdown: the kernel drops the flock anyway)
            pass


def _fields(cfg: Config) -> dict[str, object]:
    """Every field of ``cfg`` by its dotted name (``train.epochs``), dict-valued fields whole."""
    sections = {f.name for f in dataclasses.fields(cfg) if dataclasses.is_dataclass(getattr(cfg, f.name))}
    flat: dict[str, object] = {}
    for key, value in cfg.to_dict().items():
        if key in sections:
            flat.update({f"{key}.{field}": inner for field, inner in value.items()})
        else:
            flat[key] = value
    return flat


def resume_config(folder: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The experiment of the run in ``folder``: its own ``config.yaml`` (else ``last.pt``'s), with overrides.

    The folder wherever it now is names the run (``project`` and ``name`` are set from it). An
    override may change only ``RESUME_SAFE_FIELDS``; one that repeats the stored value is accepted.

    Raises:
        FileNotFoundError: ``folder`` holds no run (no ``config.yaml`` and no ``last.pt``).
        ConfigError: An override would change another field; the message names each and the safe ones.
    """
    folder = Path(folder)
    if (folder / "config.yaml").is_file():
        stored = load_config(folder / "config.yaml")
    elif (folder / "last.pt").is_file():
        from centernet.models.checkpoint import load_checkpoint

        checkpoint = load_checkpoint(folder / "last.pt")
        if "config" not in checkpoint:
            raise ConfigError(
                f"--resume {folder}: {folder / 'last.pt'} holds no experiment ('config') and the folder no "
                "config.yaml, so the run cannot be continued as it was; start a new run from its weights "
                f"(model.weights={folder / 'last.pt'} with its recipe)"
            )
        stored = Config.from_dict(checkpoint["config"], str(folder / "last.pt"))
    else:
        where = "it holds no config.yaml and no last.pt" if folder.is_dir() else "the folder does not exist"
        raise FileNotFoundError(f"--resume {folder}: no run to continue there ({where})")
    stored.project, stored.name = str(folder.parent), folder.name
    resumed = with_overrides(stored, overrides)
    before, after = _fields(stored), _fields(resumed)
    changed = [key for key in after if after[key] != before[key] and key not in RESUME_SAFE_FIELDS]
    if changed:
        raise ConfigError(
            f"--resume {folder}: {', '.join(f'{key} ({before[key]!r} -> {after[key]!r})' for key in changed)} "
            f"cannot change in a resumed run (it continues last.pt exactly, with {folder / 'config.yaml'}); "
            f"fields a resume may change: {', '.join(RESUME_SAFE_FIELDS)}; for another experiment start a new name="
        )
    return resumed


def _holds_a_run(folder: Path) -> bool:
    """Whether ``folder`` holds anything but a lock file (checkpoints, config.yaml, results.csv...)."""
    return folder.is_dir() and any(entry.name != LOCK_NAME for entry in folder.iterdir())


class RunFolder:
    """Everything one training run writes; only the main process writes.

    Creating it checks the folder (refusing a live run's, or an earlier run's unless resumed or
    ``on_existing_run`` says otherwise) and writes nothing; ``begin``, when training starts, takes
    the folder's lock (see the module docstring), empties it for ``"overwrite"`` and writes the
    resolved ``config.yaml``; ``close`` releases the lock. A run refused while it is set up (bad
    data, a missing checkpoint) so leaves nothing behind that a retry would take for a run. With
    ``on_existing_run="increment"`` the chosen name is written back to ``cfg.name``, so the saved
    ``config.yaml`` and the checkpoints name the folder the run is really in.

    Raises:
        RunLockedError: Another live run holds the folder.
        FileExistsError: The folder holds an earlier run and ``on_existing_run`` is ``"error"``.
        ConfigError: ``on_existing_run`` is not one of ``ON_EXISTING_RUN``.
    """

    def __init__(self, cfg: Config, resume: bool = False) -> None:
        if cfg.on_existing_run not in ON_EXISTING_RUN:
            raise ConfigError(f"on_existing_run: {cfg.on_existing_run!r} is not one of {', '.join(ON_EXISTING_RUN)}")
        base = self.path_of(cfg)
        if not resume and cfg.on_existing_run == "increment":
            number = 2
            while not self._is_free(self.path_of(cfg)):
                cfg.name = f"{base.name}-{number}"
                number += 1
        self.root = self.path_of(cfg)
        self.resume = resume
        self.on_existing_run = cfg.on_existing_run
        self.lock = RunLock(self.root)
        self._check()

    @staticmethod
    def _is_free(folder: Path) -> bool:
        try:
            RunLock(folder).ensure_free()
        except RunLockedError:
            return False
        return not _holds_a_run(folder)

    def _check(self) -> None:
        if not self.lock.held:
            self.lock.ensure_free()
        if not self.resume and _holds_a_run(self.root) and self.on_existing_run != "overwrite":
            raise FileExistsError(
                f"run folder {self.root} already holds a run ({', '.join(sorted(self._contents()))}); "
                "pass --resume to continue it, on_existing_run=overwrite to replace it, "
                "on_existing_run=increment for a new name, or choose another name="
            )

    def begin(self, cfg: Config) -> None:
        """Takes the lock for the life of the run, checks the folder again, writes ``config.yaml``."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.lock.acquire()
        try:
            self._check()  # again, under the lock: another run may have started since
            if not self.resume and self.on_existing_run == "overwrite":
                for entry in self.root.iterdir():
                    if entry.name != LOCK_NAME:
                        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
            (self.root / "images").mkdir(parents=True, exist_ok=True)
            cfg.save(self.root / "config.yaml")
            with (self.root / COMMAND_NAME).open("a") as record:
                record.write(command_line() + "\n")
        except BaseException:
            self.close()
            raise

    def _contents(self) -> list[str]:
        return [entry.name for entry in self.root.iterdir() if entry.name != LOCK_NAME][:6]

    def close(self) -> None:
        """Releases the folder's lock (the run is over); a folder left empty is removed."""
        self.lock.release()
        try:
            self.root.rmdir()  # only succeeds when empty
        except OSError:
            pass

    @staticmethod
    def path_of(cfg: Config) -> Path:
        return Path(cfg.project) / cfg.name

    @property
    def last(self) -> Path:
        return self.root / "last.pt"

    @property
    def best(self) -> Path:
        return self.root / "best.pt"

    @property
    def results_csv(self) -> Path:
        return self.root / "results.csv"

    def rows(self) -> list[dict[str, str]]:
        if not self.results_csv.exists():
            return []
        with self.results_csv.open(newline="") as f:
            return list(csv.DictReader(f))

    def append(self, row: dict[str, float | int | str]) -> None:
        """Add one epoch's row (rewrites the file so that new columns, such as AP, can appear)."""
        rows = [r for r in self.rows() if int(r["epoch"]) < int(row["epoch"])]  # a resumed epoch replaces its row
        self.replace_rows([*rows, row])

    def replace_rows(self, rows: list[dict]) -> None:
        """Rewrite ``results.csv`` with exactly ``rows`` (atomically; a resume restores the checkpoint's history)."""
        rows = [{k: str(v) for k, v in r.items()} for r in rows]
        if not rows:
            self.results_csv.unlink(missing_ok=True)
            return
        columns: list[str] = []
        for r in rows:
            columns += [k for k in r if k not in columns]
        tmp = self.results_csv.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(self.results_csv)
        self.plot(rows, columns)

    def plot(self, rows: list[dict[str, str]], columns: list[str]) -> None:
        """``losses.png`` (every loss column) and ``metrics.png`` (AP columns) from the rows."""
        self._plot(rows, [k for k in columns if k.endswith("loss")], "training loss", "losses.png", log=True)
        metric_keys = [k for k in columns if k in ("AP", "AP50", "AP75", "mAP_voc07") or k.endswith("moderate/ap11")]
        metric_keys = [k for k in metric_keys if any(r.get(k) for r in rows)]
        if metric_keys:
            self._plot(rows, metric_keys, "validation metric", "metrics.png", log=False)

    def _plot(self, rows: list[dict[str, str]], keys: list[str], ylabel: str, name: str, log: bool) -> None:
        """One PNG with a line per column against the epoch (epochs where the column is empty are skipped)."""
        fig, ax = plt.subplots(figsize=(7, 4))
        for key in keys:
            points = [(int(r["epoch"]), float(r[key])) for r in rows if r.get(key)]
            ax.plot(*zip(*points), marker="o", ms=3, label=key)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole: no 0.5 ticks on short runs
        ax.set_ylabel(ylabel)
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(self.root / name, dpi=100)
        plt.close(fig)
