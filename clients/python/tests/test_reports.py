"""The outcome queue: bounded, batched, one Idempotency-Key per batch, and what answers mean."""

from __future__ import annotations

import json

from fakes import PRIMARY, error_answer

from switchyard_client import Counters, Hooks
from switchyard_client.reports import OutcomeReport, Reporter


def reporter(batch_size: int = 3, capacity: int = 5, interval: float = 1.0) -> Reporter:
    return Reporter(
        batch_size=batch_size,
        interval=interval,
        capacity=capacity,
        counters=Counters(),
        hooks=Hooks(),
        now=0.0,
    )


def report(n: int, success: bool = True) -> OutcomeReport:
    return OutcomeReport(PRIMARY, success, float(n), observed_at=1_755_340_200.0 + n)


def test_a_full_queue_drops_the_oldest_and_counts_them() -> None:
    dropped: list[int] = []
    queue = Reporter(
        batch_size=3,
        interval=1.0,
        capacity=5,
        counters=(counters := Counters()),
        hooks=Hooks(on_reports_dropped=dropped.append),
        now=0.0,
    )
    ready = [queue.put(report(n)) for n in range(7)]
    assert ready == [True, False, True, True, True, True, True]  # first: the interval starts
    assert counters.reports_dropped == 2 and dropped == [1, 1]
    batch = queue.due(0.0)
    assert batch is not None
    assert [r.latency_ms for r in batch.reports] == [2.0, 3.0, 4.0]  # 0 and 1 went


def test_a_partial_batch_waits_for_the_interval_unless_flushed() -> None:
    queue = reporter(interval=1.0)
    queue.put(report(1))
    assert queue.due(0.5) is None
    assert queue.wait(0.5) == 0.5
    assert queue.due(0.5, flushing=True) is not None


def test_a_batch_not_delivered_is_sent_again_under_the_same_key() -> None:
    queue = reporter()
    for n in range(3):
        queue.put(report(n))
    first = queue.due(0.0)
    assert first is not None
    queue.settle(first, None, "ConnectError", now=0.0)
    assert queue.due(0.0) is None  # backing off
    again = queue.due(10.0)
    assert again is first and again.key == first.key
    queue.settle(again, 503, error_answer("database_unavailable", "down"), 10.0, retry_after=5)
    assert queue.due(14.0) is None and queue.due(15.0) is first
    nodes = queue.settle(first, 202, {"data": {"nodes": [{"nodeId": PRIMARY}]}}, 15.0)
    assert nodes == [{"nodeId": PRIMARY}]
    assert queue.idle()


def test_a_422_drops_the_items_it_names_and_sends_the_rest_under_a_new_key() -> None:
    queue = reporter()
    counters = queue._counters
    for n in range(3):
        queue.put(report(n))
    batch = queue.due(0.0)
    assert batch is not None
    details = [{"field": "outcomes.1.observedAt", "message": "more than 60 s in the future"}]
    queue.settle(batch, 422, error_answer("validation_error", "invalid", details), 0.0)
    rest = queue.due(0.0)
    assert rest is not None and rest.key != batch.key
    assert [r.latency_ms for r in rest.reports] == [0.0, 2.0]
    assert counters.reports_rejected == 1
    queue.settle(rest, 400, error_answer("bad_request", "no"), 0.0)
    assert queue.idle() and counters.reports_rejected == 3


def test_the_body_is_what_post_outcomes_takes() -> None:
    queue = reporter(batch_size=1)
    queue.put(OutcomeReport(PRIMARY, False, 12.5, 0.0, "503", "coordination_1_x", 0.029))
    batch = queue.due(0.0)
    assert batch is not None
    assert json.loads(batch.body()) == {
        "outcomes": [
            {
                "nodeId": PRIMARY,
                "success": False,
                "latencyMs": 12.5,
                "observedAt": "1970-01-01T00:00:00+00:00",
                "errorCode": "503",
                "coordinationId": "coordination_1_x",
                "cost": 0.029,
            }
        ]
    }
