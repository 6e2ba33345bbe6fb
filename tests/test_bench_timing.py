"""The benchmark's timing tools (``benchmarks/timing.py``): interleaved rounds, load per run, failures."""
from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import timing  # noqa: E402  (a script folder, not a package)


def test_interleaved_runs_every_task_once_per_round_and_records_the_load():
    calls: list[str] = []
    tasks = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    measured = timing.interleaved(tasks, repeats=10, warmup=2, progress=False)
    assert calls[:6] == ["a", "a", "b", "b", "c", "c"]  # warm-up, task by task
    rounds = [calls[6 + 3 * i: 9 + 3 * i] for i in range(10)]
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds)
    assert len({tuple(r) for r in rounds}) > 1, "every round ran in the same order"
    for m in measured.values():
        assert len(m.samples) == 10 and not m.failure
        assert all(s.seconds >= 0 and (math.isnan(s.load) or s.load >= 0) for s in m.samples)
        assert m.median == statistics.median(s.seconds for s in m.samples)


def test_a_failing_task_is_reported_and_the_others_still_run(capsys):
    state = {"runs": 0}

    def flaky() -> None:
        state["runs"] += 1
        if state["runs"] > 1:
            raise RuntimeError("back-end gave up")

    measured = timing.interleaved({"ok": lambda: None, "flaky": flaky, "broken": lambda: 1 / 0}, repeats=10, warmup=1, progress=False)
    assert len(measured["ok"].samples) == 10
    assert measured["broken"].failure == "failed: ZeroDivisionError" and not measured["broken"].samples
    assert measured["flaky"].failure == "failed: RuntimeError" and math.isnan(measured["flaky"].median)
    assert "back-end gave up" in capsys.readouterr().err


def test_a_measurement_summarises_its_samples():
    m = timing.Measurement([timing.Sample(s, load) for s, load in ((3.0, 1.0), (1.0, 5.0), (2.0, 2.0))])
    assert m.median == 2.0 and m.median_load == 2.0 and m.load_range == (1.0, 5.0)
    assert math.isnan(timing.Measurement().median)


def test_the_benchmark_refuses_fewer_than_ten_runs(capsys):
    import bench_inference

    with pytest.raises(SystemExit) as stop:
        bench_inference.parse_args(["--repeats", "5"])
    assert stop.value.code == 2 and "at least 10" in capsys.readouterr().err
    quick = bench_inference.parse_args(["--quick"])
    assert quick.repeats >= 10 and {"res_18", "dla_34", "dlav0_34"} <= set(quick.archs)
