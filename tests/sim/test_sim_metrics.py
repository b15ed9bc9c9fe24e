"""Figures from run records: fail-over and restore times, series, the table's cells."""

from __future__ import annotations

import pytest

from sim.engine import RunRecord
from sim.metrics import ShiftTimes, Summary, series, shift_times, summarize
from sim.report import failover_cell, restore_cell
from sim.scenario import Incident

NODE = "primary"
INCIDENT = Incident(node=NODE, start=100, end=200)


def record(first_node_at: dict[str, tuple[float, float]]) -> RunRecord:
    """Ten requests a second for 400 s; first attempts go to NODE inside the given windows."""
    arrivals = [i / 10 for i in range(4000)]
    nodes: list[str | None] = []
    for t in arrivals:
        on = any(start <= t < end for start, end in first_node_at.values())
        nodes.append(NODE if on else "backup")
    count = len(arrivals)
    return RunRecord(
        policy="p",
        arrivals=arrivals,
        first_node=nodes,
        first_ok=[True] * count,
        success=[True] * count,
        latency_ms=[100.0] * count,
        cost=[0.01] * count,
    )


def test_fail_over_and_restore_times() -> None:
    # On the primary until 112 s, back on it from 260 s.
    run = record({"a": (0.0, 112.0), "b": (260.0, 400.0)})

    shifts = shift_times(run, [INCIDENT], 400.0)

    # The first 5 s window with under half the usual share starts at 110 s (2 of 5 s left).
    assert shifts.failover == (10.0,)
    # The first window with at least half the usual share starts at 258 s (3 of 5 s on it).
    assert shifts.restore == (58.0,)


def test_never_failed_over_and_never_used() -> None:
    stays = shift_times(record({"a": (0.0, 400.0)}), [INCIDENT], 400.0)
    unused = shift_times(record({}), [INCIDENT], 400.0)
    not_back = shift_times(record({"a": (0.0, 100.0)}), [INCIDENT], 400.0)

    assert stays == ShiftTimes(failover=(None,), restore=())
    assert unused == ShiftTimes()
    assert not_back == ShiftTimes(failover=(0.0,), restore=(None,))


def test_summary_and_cells() -> None:
    run = record({"a": (0.0, 105.0), "b": (230.0, 400.0)})
    run.success[0] = False
    run.latency_ms[1] = 900.0

    summary = summarize(run, [INCIDENT], 400.0)

    assert summary.requests == 4000 and summary.failed == 1
    assert summary.success_rate == pytest.approx(99.975)
    assert summary.cost_per_success == pytest.approx(40.0 / 3999)
    assert summary.p50_ms == 100.0
    assert failover_cell(summary) == "3 s"
    assert restore_cell(summary) == "28 s"
    partial = Summary("p", 1, 1, 1, 0.0, None, None, ShiftTimes((4.0, None), (None,)), 0.0)
    assert failover_cell(partial) == "4 s (1/2)"
    assert restore_cell(partial) == "never"


def test_series_buckets_by_arrival() -> None:
    run = record({})
    for index in range(100):  # the first 10 s: every request failed, nothing spent
        run.success[index] = False
        run.cost[index] = 0.0

    got = series(run, 400.0, 10.0)

    assert len(got.times) == 40 and got.times[1] == 10.0
    assert got.success_rate[0] == 0.0 and got.cost_per_success[0] is None
    assert got.success_rate[1] == 100.0
    assert got.cost_per_success[1] == pytest.approx(0.01)
