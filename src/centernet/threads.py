"""How many intra-op threads a run uses: the cores it really has, not the cores the machine has.

PyTorch starts one OpenMP thread per core. Every parallel operation then ends at a barrier where
each thread waits for the others; when another process holds one of those cores, the thread on it
is descheduled and the rest wait for it at every barrier (measured on 2 cores with one busy process:
a training step 3.9x slower with 2 threads than with 1). So the choice counts what else wants the
cores, at the moment it is made:

* the cores this process may run on (``os.sched_getaffinity``), capped by its cgroup's CPU quota
  (``docker --cpus``, a Kubernetes CPU limit);
* the other runnable tasks on the machine: the kernel's count of runnable threads
  (``/proc/loadavg``, 4th field) less the running threads of this process and of its DataLoader
  workers (counted below instead), sampled a few times;
* the DataLoader worker processes the caller is about to start, each counted as ``WORKER_SHARE``
  of a core (they render and augment between steps, mostly waiting).

``threads = cores - busy`` (the others' share of the CPUs the process may run on, where its
affinity holds it to some of the machine's) rounded down with a half-core margin (a thread that shares its core
costs more than it gains), at least 1. ``train.threads`` / ``test.threads`` set the count instead
(``0`` or ``"auto"``: choose). ``ThreadChoice.reason`` is the line the run log prints.

``busy_cores()`` is the cheap, rate-limited probe the deformable convolution asks before running
many small parallel operations (``models.dcn``).
"""
from __future__ import annotations

import contextlib
import logging
import os
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["WORKER_SHARE", "ThreadChoice", "ThreadTuner", "apply_threads", "available_cores", "busy_cores", "choose_threads", "parse_threads", "single_threaded"]

# OMP_NUM_THREADS as this process had it when torch (imported above) started its thread pool: the
# setting torch obeys. A library imported later that sets it for itself (Ultralytics sets 1 at import
# when it is unset) does not choose this run's threads.
ENVIRONMENT_THREADS = os.environ.get("OMP_NUM_THREADS", "").strip()
# Each DataLoader worker's expected share of a core while training (they prefetch and then sleep).
WORKER_SHARE = 0.25
# A core counts as ours only when less than this much of it is wanted by others.
MARGIN = 0.5


@dataclass(frozen=True)
class ThreadChoice:
    """The intra-op thread count chosen and why (one log line)."""

    threads: int
    reason: str


def _affinity_cores() -> int:
    """The CPUs this process may be scheduled on (its affinity; ``os.cpu_count()`` where there is none)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _machine_cores() -> int:
    """The machine's online CPUs: those the runnable count of ``/proc/loadavg`` is spread over."""
    return max(1, os.cpu_count() or 1)


def _cgroup_path(cgroup_file: Path, controller: str | None) -> str:
    """This process's cgroup from ``/proc/self/cgroup``: the v2 line (``controller`` None) or the v1
    line listing ``controller``; ``"/"`` where it is not found."""
    try:
        lines = cgroup_file.read_text().splitlines()
    except OSError:
        return "/"
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3 and ((controller is None and parts[0] == "0") or controller in parts[1].split(",")):
            return parts[2] or "/"
    return "/"


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup"), cgroup_file: Path = Path("/proc/self/cgroup")) -> float | None:
    """The CPUs this process's cgroup may use (its CFS quota / period: ``docker --cpus``, a Kubernetes
    CPU limit), or None where there is no limit or none can be read. cgroup v2 (``cpu.max``) first,
    then v1 (``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``); the process's own cgroup, then the root."""
    path = _cgroup_path(cgroup_file, None).lstrip("/")
    for folder in dict.fromkeys([root / path, root]):
        try:
            quota, period = (folder / "cpu.max").read_text().split()[:2]
        except (OSError, ValueError):
            continue
        return None if quota == "max" else int(quota) / int(period)
    path = _cgroup_path(cgroup_file, "cpu").lstrip("/")
    for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        for folder in dict.fromkeys([root / name / path, root / name]):
            try:
                quota = int((folder / "cpu.cfs_quota_us").read_text())
                period = int((folder / "cpu.cfs_period_us").read_text())
            except (OSError, ValueError):
                continue
            return None if quota <= 0 or period <= 0 else quota / period
    return None


def available_cores() -> int:
    """The cores this process really has: its CPU affinity, capped by its cgroup's CPU quota (a
    container given 2 CPUs of a 64-core host has 2), at least 1."""
    cores = _affinity_cores()
    limit = cgroup_cpu_limit()
    return max(1, min(cores, int(limit))) if limit else cores


# The name PyTorch gives a DataLoader worker process (``torch.utils.data._utils.worker``).
WORKER_PROCESS_NAME = b"pt_data_worker"


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError:
        return None


def _process_name(pid: str) -> bytes:
    """The name (``comm``) of process ``pid``, from ``/proc/<pid>/stat``; empty when it is gone."""
    stat = _read(f"/proc/{pid}/stat") or b"()"
    return stat.split(b"(", 1)[-1].rsplit(b")", 1)[0]


def _tasks(pid: str) -> list[str]:
    try:
        return os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []


def _run_processes(max_processes: int = 64) -> list[str]:
    """This process (``"self"``) and the DataLoader workers among the processes it started, at any
    depth (``/proc/<pid>/task/<tid>/children``). Any other process it started is other work."""
    own, pending, seen = ["self"], ["self"], 0
    while pending and seen < max_processes:
        pid = pending.pop()
        seen += 1
        for task in _tasks(pid):
            for child in (_read(f"/proc/{pid}/task/{task}/children") or b"").split():
                child = child.decode()
                pending.append(child)
                if _process_name(child) == WORKER_PROCESS_NAME:
                    own.append(child)
    return own


def _running_threads(pid: str) -> int:
    """Threads of process ``pid`` in state R (running or runnable)."""
    count = 0
    for task in _tasks(pid):
        stat = _read(f"/proc/{pid}/task/{task}/stat")
        # "pid (comm) S ...": the state follows the last ')' (comm may hold spaces or parens).
        count += bool(stat) and stat.rsplit(b")", 1)[-1].split()[:1] == [b"R"]
    return count


def _own_running_threads() -> int:
    """The run's threads in state R: this process's and its DataLoader workers' (the choice counts
    the workers on their own, as ``WORKER_SHARE`` each). At least 1 (the caller runs)."""
    return max(1, sum(_running_threads(pid) for pid in _run_processes()))


def _runnable_now() -> int | None:
    """The machine's runnable threads (``/proc/loadavg``'s ``R/total``); None where there is no such file."""
    try:
        with open("/proc/loadavg") as loadavg:
            return int(loadavg.read().split()[3].split("/")[0])
    except (OSError, IndexError, ValueError):
        return None


def other_runnable(samples: int = 5, interval: float = 0.002) -> float | None:
    """Runnable threads of other processes right now: the median of ``samples`` readings of the
    kernel's runnable count less the running threads of this process and its DataLoader workers.
    None where ``/proc`` is absent."""
    readings = []
    for i in range(samples):
        if i:
            time.sleep(interval)
        total = _runnable_now()
        if total is None:
            return None
        readings.append(max(0, total - _own_running_threads()))
    return float(statistics.median(readings))


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _free_cores(others: float, pool: int, machine: int) -> float:
    """The CPUs of ``pool`` (those this process may run on) left by ``others`` runnable threads of the
    whole machine (``machine`` CPUs): where the affinity holds the process to some of them, the others
    are taken as spread evenly."""
    return pool - (others * pool / machine if machine > pool else others)


def parse_threads(value: int | str | None, field: str) -> int:
    """A ``threads`` setting as a count; 0 means choose (``"auto"``, ``None`` and ``0``).

    Raises:
        ValueError: a negative number or a string other than ``auto``.
    """
    if value is None or value == "auto":
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{field}: {value!r} is not a thread count (a positive integer, or 0 / auto to choose from the free cores)")
    return value


def choose_threads(setting: int | str | None = "auto", workers: int = 0, field: str = "threads") -> ThreadChoice:
    """The intra-op thread count for a run on the CPU (see the module doc).

    Args:
        setting: a positive count to use as given, or ``0`` / ``"auto"`` / ``None`` to choose.
        workers: DataLoader worker processes that will run beside the intra-op threads.
        field: the config field named in the reason (``train.threads``).
    """
    requested = parse_threads(setting, field)
    cores = available_cores()
    if requested:
        return ThreadChoice(requested, f"{requested} intra-op thread(s), as {field}={requested} sets ({cores} core(s) available)")
    environment = ENVIRONMENT_THREADS
    if environment.isdigit() and int(environment) > 0:  # torchrun sets 1 per process; a user's own choice
        return ThreadChoice(int(environment), f"{environment} intra-op thread(s), as OMP_NUM_THREADS={environment} in the environment sets")
    others = other_runnable()
    load = _load_average()
    load_text = f", 1-min load average {load:.2f}" if load is not None else ""
    if others is None:
        others = 0.0
        seen = "no /proc/loadavg to count other work"
    else:
        seen = f"{others:g} other runnable thread(s){load_text}"
    # The runnable count is the whole machine's; on a process held to some of its CPUs (affinity) the
    # others are taken as spread evenly, and the cores left free are the CPUs it may run on less
    # theirs. A CPU quota caps the count, not the free cores: a container with 2 CPUs of an idle
    # 64-core host has its 2 cores free.
    pool, machine = _affinity_cores(), _machine_cores()
    free = _free_cores(others, pool, machine) - WORKER_SHARE * max(0, workers)
    threads = max(1, min(cores, int(free + MARGIN)))
    worker_text = f", {workers} DataLoader worker(s) counted as {WORKER_SHARE:g} core each" if workers else ""
    where = f" (may run on {pool} of the machine's {machine})" if machine > pool or cores < pool else ""
    return ThreadChoice(
        threads,
        f"{threads} intra-op thread(s) of {cores} core(s){where}: {seen}{worker_text}; {field}=N sets the count",
    )


def apply_threads(choice: ThreadChoice) -> ThreadChoice:
    """``torch.set_num_threads`` of the choice (when it differs from the current count); returns it."""
    if torch.get_num_threads() != choice.threads:
        torch.set_num_threads(choice.threads)
    return choice


_probe = {"time": -1.0, "busy": 0.0}
PROBE_INTERVAL = 0.25


def busy_cores(max_age: float = PROBE_INTERVAL) -> float:
    """How many of this process's intra-op threads would wait for a core now: its thread count less
    the cores other processes leave free (``0`` on a quiet machine; on 2 cores with 2 threads, the
    other runnable threads). Re-read at most every ``max_age`` seconds and cached in between: cheap
    enough to ask before every layer."""
    now = time.monotonic()
    if now - _probe["time"] > max_age:
        others = other_runnable(samples=1)
        short = 0.0 if others is None else max(0.0, torch.get_num_threads() - _free_cores(others, _affinity_cores(), _machine_cores()))
        # A reading is one instant: the estimate halves per reading rather than dropping to a quiet
        # instant's 0 (missing contention costs far more than a layer run on one thread).
        _probe["busy"] = max(short, 0.5 * _probe["busy"])
        _probe["time"] = now
    return _probe["busy"]


@contextlib.contextmanager
def single_threaded(enabled: bool = True) -> Iterator[None]:
    """Run the block on one intra-op thread (restored after); a no-op when not ``enabled``."""
    previous = torch.get_num_threads()
    if not enabled or previous == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# Seconds between two choices of an "auto" setting while a run goes on.
RETUNE_SECONDS = 5.0
logger = logging.getLogger("centernet.threads")


class ThreadTuner:
    """A run's ``threads`` setting, applied: a fixed count, or ``auto`` re-chosen every
    ``interval`` seconds as the machine's load changes. ``update()`` is called before each step
    (cheap between choices); it also restores the run's count after code that set another (the
    validation pass of training). Each new choice is logged with its reason.

    Args:
        setting: ``train.threads`` / ``test.threads`` (a count, ``0`` or ``"auto"``).
        field: the setting's name, for the reason and for a bad value's error.
        workers: DataLoader worker processes running beside the intra-op threads.
        log: where the choice is told (default: the ``centernet.threads`` logger at INFO).
        enabled: ``False`` (not on the CPU) leaves the threads alone.
    """

    def __init__(self, setting: int | str | None, field: str, workers: int = 0, log=None, enabled: bool = True,
                 interval: float = RETUNE_SECONDS) -> None:
        self.requested = parse_threads(setting, field)
        self.field, self.workers, self.enabled, self.interval = field, workers, enabled, interval
        self.log = log if log is not None else logger.info
        self.choice: ThreadChoice | None = None
        self._chosen_at = -float("inf")

    def update(self) -> ThreadChoice | None:
        """Apply the setting (choosing again when ``auto`` and ``interval`` has passed); the choice in force."""
        if not self.enabled:
            return None
        now = time.monotonic()
        if self.choice is None or (not self.requested and now - self._chosen_at >= self.interval):
            choice = choose_threads(self.requested, self.workers, self.field)
            self._chosen_at = now
            if self.choice is None or choice.threads != self.choice.threads:
                self.log(f"threads: {choice.reason}")
            self.choice = choice
        return apply_threads(self.choice)
