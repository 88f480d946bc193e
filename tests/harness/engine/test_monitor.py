"""The stall limit under load (harness.engine.monitor): seconds of quiet count by the machine's load, so a
machine too busy to schedule the ranks is no stall; an idle one stops a hang at the limit."""

from __future__ import annotations

import json
import os

import pytest

from harness.engine.monitor import MAX_LOAD_FACTOR, AttemptMonitor, LoadGauge, is_stall
from harness.trace_schema import rank_trace_file


class FixedLoad:
    """A LoadGauge stand-in: the machine is ``factor`` times over loaded."""

    def __init__(self, factor: float):
        self.f, self.load, self.cpus = factor, 2.0 * factor, 2

    def factor(self) -> float:
        return self.f


def quiet_monitor(tmp_path, factor: float, stall_s: float = 2.0):
    """A monitor whose rank 0 wrote one row at time T (the file's mtime), and a clock set by the test."""
    path = tmp_path / rank_trace_file(0)
    clock = {"now": 0.0}
    monitor = AttemptMonitor(str(tmp_path), 1, 0, stall_s=stall_s, gauge=FixedLoad(factor), clock=lambda: clock["now"])
    path.write_text(json.dumps({"kind": "step", "attempt": 0, "rank": 0, "step": 3}) + "\n")
    t = os.stat(path).st_mtime
    clock["now"] = t
    assert monitor.watch(0.5) is None  # the row: a quiet spell starts at T
    return monitor, clock, t


def test_a_hang_on_an_idle_machine_stops_at_the_limit(tmp_path):
    monitor, clock, t = quiet_monitor(tmp_path, factor=1.0)
    clock["now"] = t + 1.5
    assert monitor.watch(2.0) is None
    clock["now"] = t + 2.5
    reason = monitor.watch(3.0)
    assert reason.startswith("stalled: no rank recorded anything for 2.5 s (stall limit 2 s, --stall to change)")
    assert "rank 0: step 3" in reason and "stretched" not in reason


def test_a_loaded_machine_stretches_the_limit_by_its_load(tmp_path):
    """Four times over loaded: 3 s of quiet are 0.75 s of a fair share, no stall; 9 s are 2.25 s, a stall."""
    monitor, clock, t = quiet_monitor(tmp_path, factor=4.0)
    for dt in (1.0, 3.0, 6.0, 7.5):
        clock["now"] = t + dt
        assert monitor.watch(dt) is None, dt
    clock["now"] = t + 9.0
    reason = monitor.watch(9.0)
    assert reason is not None and "stall limit 2 s, stretched to 9 s by the machine's load (load 8.0 on 2 CPU(s), " \
                                  "up to 4.0x)" in reason


def test_the_load_is_re_read_at_each_check(tmp_path):
    """Loaded for 4 s (counted as 1 s), then idle: the stall comes 1 s (and a bit) later, not at once."""
    monitor, clock, t = quiet_monitor(tmp_path, factor=4.0)
    clock["now"] = t + 4.0
    assert monitor.watch(4.0) is None
    monitor.gauge.f = 1.0
    clock["now"] = t + 4.8
    assert monitor.watch(4.8) is None
    clock["now"] = t + 5.2
    assert monitor.watch(5.2) is not None


def test_a_new_row_starts_the_quiet_spell_again(tmp_path):
    monitor, clock, t = quiet_monitor(tmp_path, factor=1.0)
    clock["now"] = t + 1.9
    assert monitor.watch(1.9) is None
    path = tmp_path / rank_trace_file(0)
    with open(path, "a") as f:
        f.write(json.dumps({"kind": "step", "attempt": 0, "rank": 0, "step": 4}) + "\n")
    t2 = os.stat(path).st_mtime
    clock["now"] = t2 + 1.9
    assert monitor.watch(2.0) is None


@pytest.mark.parametrize("load1, running, cpus, factor", [
    (0.4, 3, 2, 1.0),  # idle: never below 1
    (12.0, 3, 2, 6.0),  # the load average
    (1.0, 13, 2, 6.0),  # a burst the load average has not caught up with: runnable now, but this process
    (500.0, 3, 2, MAX_LOAD_FACTOR),  # capped: --timeout is the bound beyond
])
def test_load_factor(load1, running, cpus, factor):
    assert LoadGauge(cpus=cpus, read=lambda: (load1, running)).factor() == pytest.approx(factor)


def test_runnable_processes_are_averaged_over_seconds():
    readings = iter([(0.0, 13), (0.0, 1), (0.0, 1)])
    clock = iter([0.0, 0.5, 30.0])
    gauge = LoadGauge(cpus=2, read=lambda: next(readings), clock=lambda: next(clock))
    assert gauge.factor() == 6.0
    assert 5.0 < gauge.factor() < 6.0  # one quiet reading half a second later: still loaded
    assert gauge.factor() == pytest.approx(1.0)  # quiet for half a minute


@pytest.mark.parametrize("verdict, outcome, stall", [
    ("error", "stall", True), ("error", "timeout", True), ("fail", "timeout", False), ("fail", "divergence", False),
    ("fail", "rng_only", False), ("error", "fault_not_fired", False), ("pass", "bit_exact", False),
])
def test_is_stall(verdict, outcome, stall):
    assert is_stall(verdict, outcome) is stall
