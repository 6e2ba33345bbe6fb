"""Thread choice (``centernet.threads``): settings, the choice from the free cores, the tuner, the wiring."""
from __future__ import annotations

import os

import pytest
import torch

from centernet import threads
from centernet.config import load_config
from centernet.threads import ThreadTuner, choose_threads, parse_threads, single_threaded


@pytest.fixture(autouse=True)
def _restore_threads(monkeypatch):
    monkeypatch.setattr(threads, "ENVIRONMENT_THREADS", "")  # conftest sets OMP_NUM_THREADS; these tests choose
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_settings():
    assert parse_threads("auto", "f") == parse_threads(0, "f") == parse_threads(None, "f") == 0
    assert parse_threads(3, "f") == 3
    for bad in (-1, "four", True, 1.5):
        with pytest.raises(ValueError, match="train.threads"):
            parse_threads(bad, "train.threads")


def test_a_count_is_used_as_given_and_named():
    choice = choose_threads(3, field="test.threads")
    assert choice.threads == 3 and "test.threads=3" in choice.reason


def test_omp_num_threads_in_the_environment_is_a_setting(monkeypatch):
    monkeypatch.setattr(threads, "ENVIRONMENT_THREADS", "1")  # as the process started (torchrun sets it)
    choice = choose_threads("auto")
    assert choice.threads == 1 and "OMP_NUM_THREADS=1" in choice.reason


def test_a_library_setting_omp_num_threads_later_does_not_choose(monkeypatch):
    """Ultralytics sets OMP_NUM_THREADS=1 when imported; torch's pool was made before, so it is no setting."""
    monkeypatch.setattr(threads, "other_runnable", lambda *a, **k: 0.0)
    _machine(monkeypatch, 2, 2)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    choice = choose_threads("auto")
    assert choice.threads == 2 and "OMP_NUM_THREADS" not in choice.reason


def _machine(monkeypatch, affinity: int, machine: int, limit: float | None = None) -> None:
    monkeypatch.setattr(threads, "_affinity_cores", lambda: affinity)
    monkeypatch.setattr(threads, "_machine_cores", lambda: machine)
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda *a, **k: limit)


@pytest.mark.parametrize(("others", "workers", "affinity", "machine", "limit", "expected"), [
    (0.0, 0, 2, 2, None, 2), (1.0, 0, 2, 2, None, 1), (5.0, 0, 2, 2, None, 1), (0.0, 2, 2, 2, None, 2),
    (0.0, 4, 2, 2, None, 1), (0.0, 0, 8, 8, None, 8), (3.0, 2, 8, 8, None, 5),
    # a container given 2 CPUs (a quota) of a 64-core host: the host's other work leaves its 2 free
    (40.0, 0, 64, 64, 2.0, 2), (63.0, 0, 64, 64, 2.0, 1), (0.0, 0, 64, 64, 1.5, 1),
    # held to 8 of 64 CPUs (affinity): the others taken as spread evenly, 40 x 8 / 64 = 5 on ours
    (40.0, 0, 8, 64, None, 3), (0.0, 0, 8, 64, None, 8),
])
def test_auto_counts_the_other_work(monkeypatch, others, workers, affinity, machine, limit, expected):
    monkeypatch.setattr(threads, "other_runnable", lambda *a, **k: others)
    _machine(monkeypatch, affinity, machine, limit)
    choice = choose_threads("auto", workers=workers, field="train.threads")
    assert choice.threads == expected
    assert f"{others:g} other runnable" in choice.reason and "train.threads=N" in choice.reason
    assert f"of {min(affinity, int(limit)) if limit else affinity} core(s)" in choice.reason


@pytest.mark.parametrize(("files", "cgroup", "expected"), [
    ({"cpu.max": "200000 100000\n"}, "0::/\n", 2.0),
    ({"cpu.max": "max 100000\n"}, "0::/\n", None),
    ({"kubepods/pod1/cpu.max": "50000 100000\n", "cpu.max": "max 100000\n"}, "0::/kubepods/pod1\n", 0.5),
    ({"cpu,cpuacct/cpu.cfs_quota_us": "150000\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, "2:cpu,cpuacct:/\n", 1.5),
    ({"cpu/docker/abc/cpu.cfs_quota_us": "-1\n", "cpu/docker/abc/cpu.cfs_period_us": "100000\n"}, "3:cpu:/docker/abc\n", None),
    ({}, "0::/\n", None),
    ({"cpu.max": "garbage"}, "", None),
])
def test_the_cgroup_cpu_quota_is_read(tmp_path, files, cgroup, expected):
    root = tmp_path / "sys"
    root.mkdir()
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (tmp_path / "cgroup").write_text(cgroup)
    assert threads.cgroup_cpu_limit(root, tmp_path / "cgroup") == expected


@pytest.mark.parametrize(("others", "affinity", "machine", "set_threads", "expected"), [
    (0.0, 2, 2, 2, 0.0), (1.0, 2, 2, 2, 1.0), (3.0, 2, 2, 2, 3.0),
    (40.0, 64, 64, 8, 0.0), (40.0, 64, 64, 32, 8.0),  # a big machine: its others leave 24 cores free
    (32.0, 8, 64, 8, 4.0),  # held to 8 of 64 CPUs: 32 x 8 / 64 = 4 of the others on ours
])
def test_busy_cores_is_how_many_threads_would_wait(monkeypatch, others, affinity, machine, set_threads, expected):
    monkeypatch.setattr(threads, "other_runnable", lambda *a, **k: others)
    _machine(monkeypatch, affinity, machine)
    monkeypatch.setattr(threads, "_probe", {"time": -1.0, "busy": 0.0})
    monkeypatch.setattr(torch, "get_num_threads", lambda: set_threads)
    assert threads.busy_cores(max_age=0.0) == expected


def test_a_cpu_quota_caps_the_cores(monkeypatch):
    monkeypatch.setattr(threads, "_affinity_cores", lambda: 64)
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda *a, **k: 2.5)
    assert threads.available_cores() == 2
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda *a, **k: 0.3)
    assert threads.available_cores() == 1
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda *a, **k: None)
    assert threads.available_cores() == 64


def test_the_machine_is_read():
    assert 1 <= threads.available_cores() <= (os.cpu_count() or 1)
    if os.path.exists("/proc/loadavg"):
        assert threads._own_running_threads() >= 1  # this thread runs
        assert threads.other_runnable() >= 0
    assert 1 <= choose_threads("auto").threads <= threads.available_cores()


class _Busy(torch.utils.data.Dataset):
    def __len__(self):
        return 1

    def __getitem__(self, index):
        while True:  # a worker busy on its sample
            pass


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="no /proc to read")
def test_the_runs_own_dataloader_workers_are_not_other_work():
    """A DataLoader worker this run started is the run's (the choice adds the workers' share itself:
    counting them as other work too took a core away on a quiet machine); any other process it
    started is other work."""
    import subprocess
    import sys
    import time

    other = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    batches = iter(torch.utils.data.DataLoader(_Busy(), num_workers=1))  # the worker starts on its sample
    try:
        worker = str(batches._workers[0].pid)
        deadline = time.monotonic() + 60
        while threads._process_name(worker) != threads.WORKER_PROCESS_NAME and time.monotonic() < deadline:
            time.sleep(0.01)
        processes = threads._run_processes()
        assert processes[0] == "self" and worker in processes and str(other.pid) not in processes
        while threads._running_threads(worker) < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert threads._own_running_threads() >= 2  # the worker's busy thread is the run's
    finally:
        other.kill()
        other.wait()
        batches._shutdown_workers()


def test_the_tuner_applies_logs_and_restores(monkeypatch):
    monkeypatch.setattr(threads, "other_runnable", lambda *a, **k: 0.0)
    lines: list[str] = []
    tuner = ThreadTuner(1, "train.threads", log=lines.append)
    assert tuner.update().threads == 1 and torch.get_num_threads() == 1
    torch.set_num_threads(2)  # e.g. the validation pass chose another count
    tuner.update()
    assert torch.get_num_threads() == 1 and len(lines) == 1 and "train.threads=1" in lines[0]
    auto = ThreadTuner("auto", "train.threads", log=lines.append, interval=0.0)
    _machine(monkeypatch, 2, 2)
    assert auto.update().threads == 2
    monkeypatch.setattr(threads, "other_runnable", lambda *a, **k: 2.0)
    assert auto.update().threads == 1 == torch.get_num_threads()  # the load came: chosen again
    assert len(lines) == 3
    assert ThreadTuner("auto", "test.threads", enabled=False).update() is None
    with pytest.raises(ValueError, match="test.threads"):
        ThreadTuner("many", "test.threads")


def test_single_threaded_restores():
    torch.set_num_threads(2)
    with single_threaded():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with single_threaded(False):
        assert torch.get_num_threads() == 2


def test_config_fields_reach_from_overrides():
    cfg = load_config("ctdet_res18_synthetic", ["train.threads=1", "test.threads=auto", "test.channels_last=true"])
    assert (cfg.train.threads, cfg.test.threads, cfg.test.channels_last) == (1, "auto", True)
    assert load_config(None).train.threads == "auto" and load_config(None).test.channels_last == "auto"


def test_val_and_predict_flags_become_test_overrides():
    from centernet.cli import _test_overrides, build_parser

    for verb in ("val", "predict"):
        extra = ["--source", "x.jpg"] if verb == "predict" else []
        args = build_parser().parse_args([verb, "--weights", "w.pt", *extra, "--channels-last", "--threads", "1"])
        assert {"test.channels_last=true", "test.threads=1"} <= set(_test_overrides(args))
        args = build_parser().parse_args([verb, "--weights", "w.pt", *extra, "--no-channels-last"])
        overrides = _test_overrides(args)
        assert "test.channels_last=false" in overrides and not any(o.startswith("test.threads") for o in overrides)
