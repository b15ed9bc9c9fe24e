"""Outcome reports: a bounded queue, batches with an Idempotency-Key, and what an answer means.

Sans I/O: the clients' background loops ask `Reporter.due()` for the batch to send, send it
to `POST /outcomes` and hand the answer to `Reporter.settle()`. Callers only ever `put()`, an
append under a lock, so reporting never blocks a request.
"""

from __future__ import annotations

import json
import math
import random
import re
import threading
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from switchyard_client.observe import Counters, Hooks, fire, logger

# Switchyard takes 1-1000 outcomes per request (api/schemas/outcomes.py, MAX_BATCH).
MAX_BATCH = 1000
# A batch that did not get through is sent again after this back-off (doubling, capped).
RETRY_BASE_SECONDS = 0.5
RETRY_MAX_SECONDS = 10.0
_ITEM_FIELD = re.compile(r"^outcomes\.(\d+)\.")


@dataclass(frozen=True)
class OutcomeReport:
    """One provider call, as POST /outcomes takes it."""

    node_id: str
    success: bool
    latency_ms: float
    observed_at: float  # epoch seconds, when the call completed
    error_code: str | None = None
    coordination_id: str | None = None
    cost: float | None = None

    def wire(self) -> dict[str, Any]:
        """The outcome in the wire's names."""
        item: dict[str, Any] = {
            "nodeId": self.node_id,
            "success": self.success,
            "latencyMs": self.latency_ms,
            "observedAt": datetime.fromtimestamp(self.observed_at, timezone.utc).isoformat(),
        }
        if self.error_code is not None:
            item["errorCode"] = self.error_code
        if self.coordination_id is not None:
            item["coordinationId"] = self.coordination_id
        if self.cost is not None:
            item["cost"] = self.cost
        return item


@dataclass
class Batch:
    """Reports sent together; a resend keeps the key, so Switchyard counts them once."""

    reports: list[OutcomeReport]
    key: str = field(default_factory=lambda: uuid.uuid4().hex)
    tries: int = 0

    def body(self) -> bytes:
        """The JSON body of POST /outcomes."""
        return json.dumps({"outcomes": [r.wire() for r in self.reports]}).encode()


class Reporter:
    """The queue of reports waiting to be sent, and the batch in flight."""

    def __init__(
        self,
        *,
        batch_size: int,
        interval: float,
        capacity: int,
        counters: Counters,
        hooks: Hooks,
        now: float,
    ) -> None:
        if not 1 <= batch_size <= MAX_BATCH:
            raise ValueError(f"report_batch_size must be within 1..{MAX_BATCH}")
        if capacity < batch_size:
            raise ValueError("max_queued_reports must hold at least one batch")
        self.batch_size = batch_size
        self.interval = interval
        self.capacity = capacity
        self._counters = counters
        self._hooks = hooks
        self._queue: deque[OutcomeReport] = deque()
        self._lock = threading.Lock()
        # Touched by the one sender only (a background thread or task).
        self._pending: Batch | None = None
        self._retry_at = 0.0
        self._failures = 0
        self._last_sent = now

    def put(self, report: OutcomeReport) -> bool:
        """Queue a report (dropping the oldest when full); True when the sender should look:
        the queue was empty (its interval starts) or a batch is ready."""
        with self._lock:
            dropped = len(self._queue) >= self.capacity
            if dropped:
                self._queue.popleft()
            self._queue.append(report)
            size = len(self._queue)
            ready = size == 1 or size >= self.batch_size
        self._counters.add("reports_queued")
        if dropped:
            self._counters.add("reports_dropped")
            fire(self._hooks.on_reports_dropped, 1)
        return ready

    def queued(self) -> int:
        """Reports not yet acknowledged: queued and in flight."""
        pending = len(self._pending.reports) if self._pending is not None else 0
        return len(self._queue) + pending

    def idle(self) -> bool:
        """Whether every report was sent (or given up on)."""
        return self._pending is None and not self._queue

    def due(self, now: float, flushing: bool = False) -> Batch | None:
        """The batch to send now, if any: a resend whose back-off is over, a full batch, or
        what is queued once `interval` passed since the last send (or when flushing)."""
        if self._pending is not None:
            return self._pending if now >= self._retry_at else None
        with self._lock:
            size = len(self._queue)
            if size == 0:
                return None
            if size < self.batch_size and not flushing and now - self._last_sent < self.interval:
                return None
            reports = [self._queue.popleft() for _ in range(min(size, self.batch_size))]
        self._pending = Batch(reports)
        return self._pending

    def wait(self, now: float, flushing: bool = False) -> float:
        """Seconds until `due` may have something (infinite: until a report arrives)."""
        if self._pending is not None:
            return max(0.0, self._retry_at - now)
        size = len(self._queue)
        if size == 0:
            return math.inf
        if size >= self.batch_size or flushing:
            return 0.0
        return max(0.0, self._last_sent + self.interval - now)

    def settle(
        self,
        batch: Batch,
        status: int | None,
        answer: Any,
        now: float,
        retry_after: float | None = None,
    ) -> list[Mapping[str, Any]]:
        """Take in how sending `batch` went (status None: no answer); the node figures of a
        successful answer, for the catalog copy."""
        batch.tries += 1
        if status is not None and 200 <= status < 300:
            self._pending, self._failures, self._last_sent = None, 0, now
            self._counters.add("reports_sent", len(batch.reports))
            fire(self._hooks.on_reports_sent, len(batch.reports))
            nodes = _data(answer).get("nodes")
            return nodes if isinstance(nodes, list) else []
        if status == 422:
            self._pending = self._pruned(batch, answer)
        elif status == 409:
            # Our key names another body: keys are random per batch, so this one never
            # counted under it. Send it again under a new key.
            self._pending = Batch(batch.reports)
        elif status is None or status >= 500 or status in (401, 403, 408, 429):
            self._retry_later(batch, status, answer, now, retry_after)
        else:
            self._pending = None
            self._reject(batch.reports, status, answer)
        return []

    def _retry_later(
        self, batch: Batch, status: int | None, answer: Any, now: float, retry_after: float | None
    ) -> None:
        self._failures += 1
        backoff = min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2 ** (self._failures - 1))
        wait = retry_after if retry_after is not None else backoff * random.uniform(0.8, 1.2)
        self._retry_at = now + wait
        log = logger.error if status in (401, 403) else logger.warning
        if self._failures == 1 or status in (401, 403):
            log(
                "switchyard_client: %d outcome reports not delivered (%s); retrying in %.1f s",
                len(batch.reports),
                _describe(status, answer),
                wait,
            )

    def _pruned(self, batch: Batch, answer: Any) -> Batch | None:
        """Nothing of a 422 batch was written: the batch without the items it names."""
        details = _error(answer).get("details")
        bad: set[int] = set()
        for item in details if isinstance(details, list) else []:
            field_name = item.get("field", "") if isinstance(item, dict) else ""
            match = _ITEM_FIELD.match(str(field_name))
            if match:
                bad.add(int(match.group(1)))
        if not bad:
            self._reject(batch.reports, 422, answer)
            return None
        self._reject([r for i, r in enumerate(batch.reports) if i in bad], 422, answer)
        keep = [r for i, r in enumerate(batch.reports) if i not in bad]
        return Batch(keep) if keep else None

    def _reject(self, reports: list[OutcomeReport], status: int, answer: Any) -> None:
        self._counters.add("reports_rejected", len(reports))
        logger.error(
            "switchyard_client: Switchyard refused %d outcome reports (%s); they are dropped",
            len(reports),
            _describe(status, answer),
        )


def _data(answer: Any) -> Mapping[str, Any]:
    data = answer.get("data") if isinstance(answer, Mapping) else None
    return data if isinstance(data, Mapping) else {}


def _error(answer: Any) -> Mapping[str, Any]:
    error = answer.get("error") if isinstance(answer, Mapping) else None
    return error if isinstance(error, Mapping) else {}


def _describe(status: int | None, answer: Any) -> str:
    if status is None:
        return str(answer) if answer else "no answer"
    error = _error(answer)
    return f"{status} {error.get('code', '')}: {error.get('message', '')}".strip()
