"""Timing tools of the benchmarks: interleaved runs, medians, the load average of every run, peak RSS.

On a shared machine the load changes from one second to the next. Timing variant A for a minute
and then variant B for a minute compares two different machines; running A, B, C, A, B, C, ...
(``interleaved``) lets every variant see the same load, so their ratios hold even when the absolute
times do not. Each sample keeps the 1-minute load average read when it finished, so a report can say
how loaded the machine was while that variant ran.
"""
from __future__ import annotations

import contextlib
import os
import random
import resource
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

LOADED = 2.0  # a 1-minute load average above this marks figures as "loaded machine" (2 cores here)


@dataclass
class Sample:
    """One timed run: its wall time and the 1-minute load average when it ended."""

    seconds: float
    load: float


@dataclass
class Measurement:
    """Every timed run of one task, and the peak memory of its first (warm-up) run."""

    samples: list[Sample] = field(default_factory=list)
    peak_mib: float = float("nan")
    failure: str = ""

    @property
    def median(self) -> float:
        return statistics.median(s.seconds for s in self.samples) if self.samples else float("nan")

    @property
    def median_load(self) -> float:
        return statistics.median(s.load for s in self.samples) if self.samples else float("nan")

    @property
    def load_range(self) -> tuple[float, float]:
        loads = [s.load for s in self.samples]
        return (min(loads), max(loads)) if loads else (float("nan"), float("nan"))


def load_average() -> float:
    """The 1-minute load average (NaN where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


class PeakMemory:
    """Peak memory of the code run since ``reset``, in MiB.

    CPU: the process RSS high-water mark (Linux ``/proc/self/clear_refs`` resets it to the current
    RSS; elsewhere the process maximum), so it includes the interpreter and every model loaded.
    CUDA: ``torch.cuda.max_memory_allocated``.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")

    def peak_mib(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        with contextlib.suppress(OSError):
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synchronizer(device: torch.device) -> Callable[[], None]:
    """What makes a device's queued work finish before the clock is read."""
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def failure_note(name: str, exc: BaseException) -> str:
    """Print why a task failed (``BENCH_TRACEBACK=1``: with its traceback); the short note for the table."""
    first_line = str(exc).splitlines()[0] if str(exc) else ""
    print(f"[{name}] failed: {type(exc).__name__}: {first_line}", file=sys.stderr)
    if os.environ.get("BENCH_TRACEBACK"):
        traceback.print_exc()
    return f"failed: {type(exc).__name__}"


def time_once(run: Callable[[], Any], sync: Callable[[], None]) -> float:
    sync()
    start = time.perf_counter()
    run()
    sync()
    return time.perf_counter() - start


def interleaved(
    tasks: dict[str, Callable[[], Any]],
    repeats: int,
    warmup: int = 1,
    sync: Callable[[], None] = lambda: None,
    memory: PeakMemory | None = None,
    progress: bool = True,
) -> dict[str, Measurement]:
    """Time every task ``repeats`` times, one run of each task per round.

    Each task first runs ``warmup`` times (the first of them under ``memory``, whose peak is the
    task's). A task that raises is reported and dropped from the rounds; its ``Measurement`` keeps
    the failure note. Each round runs the tasks in a new random order (seeded: the same sequence
    every run), so that no task always follows the same neighbour, whose cache or allocator state
    would otherwise always land on it.
    """
    results = {name: Measurement() for name in tasks}
    alive = []
    for name, run in tasks.items():
        try:
            if memory is not None:
                memory.reset()
            for i in range(max(1, warmup)):
                time_once(run, sync)
                if i == 0 and memory is not None:
                    results[name].peak_mib = memory.peak_mib()
            alive.append(name)
        except Exception as exc:  # compile / export back-ends fail in many ways: report, go on
            results[name].failure = failure_note(name, exc)
    order = random.Random(0)
    for round_index in range(repeats):
        for name in order.sample(alive, len(alive)):
            if results[name].failure:
                continue
            try:
                seconds = time_once(tasks[name], sync)
            except Exception as exc:
                results[name].failure = failure_note(name, exc)
                continue
            results[name].samples.append(Sample(seconds, load_average()))
        if progress:
            print(f"  round {round_index + 1}/{repeats} done, load {load_average():.1f}", file=sys.stderr, flush=True)
    return results


@contextlib.contextmanager
def contention(processes: int):
    """``processes`` busy Python processes (each a spinning loop on one core) for the block; stopped
    after, by their own ids. ``contention(0)`` runs the block alone. Waits a moment so they run
    before the block starts."""
    import subprocess

    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(max(0, processes))]
    try:
        if busy:
            time.sleep(1.0)
        yield busy
    finally:
        for process in busy:
            process.terminate()
        for process in busy:
            process.wait()
