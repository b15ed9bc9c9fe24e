"""What the sync and async clients share: options, the outage gate, the report queue, the
catalog copy and counters. No I/O here; the clients send and receive."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from switchyard_client.catalog import CatalogCopy, catalog_copy
from switchyard_client.classify import (
    REFUSAL_CODES,
    SUCCESS,
    Classification,
    Classify,
    failure,
    refusal,
)
from switchyard_client.context import RoutingRequest
from switchyard_client.decision import Decision
from switchyard_client.local import LocalEvidence, decide_locally
from switchyard_client.observe import Counters, Hooks, fire, logger
from switchyard_client.reports import Batch, OutcomeReport, Reporter

API_PREFIX = "/api/v1/enhanced-traffic-coordination"
# Of the decision deadline, kept for deciding locally, so decide() returns within it.
LOCAL_RESERVE_SECONDS = 0.005
# After a failed refresh of the catalog copy, the next try comes this soon.
REFRESH_RETRY_SECONDS = 2.0
# The background loop looks at its state at least this often.
MAX_IDLE_SECONDS = 30.0

TokenSource = str | Callable[[], str]


@dataclass(frozen=True)
class Options:
    """How a client behaves; every field is a keyword of the clients' constructors."""

    # How long a decision may wait for Switchyard before the client decides locally.
    decision_deadline: float = 0.25
    # Timeout of the background requests (reports, catalog refreshes).
    timeout: float = 5.0
    max_attempts: int = 3
    classify: Classify | None = None
    # Reports go in batches of up to this many (Switchyard takes 1-1000 per request), at most
    # one partial batch per `report_interval` seconds: one request a second per process keeps
    # far inside the ingestion rate limit, and health moves within a second of a call.
    report_batch_size: int = 500
    report_interval: float = 1.0
    # Reports kept while Switchyard is away (the oldest are dropped beyond it): ~200 bytes each.
    max_queued_reports: int = 20_000
    catalog_refresh_interval: float = 10.0
    # How long close() waits for queued reports to be sent.
    flush_timeout: float = 5.0
    hooks: Hooks = field(default_factory=Hooks)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.decision_deadline <= LOCAL_RESERVE_SECONDS:
            raise ValueError(f"decision_deadline must be above {LOCAL_RESERVE_SECONDS} s")


@dataclass(frozen=True)
class Step:
    """What the background loop does next: send a batch, refresh the copy, wait, or stop."""

    kind: Literal["send", "refresh", "wait", "stop"]
    batch: Batch | None = None
    seconds: float = 0.0


class OutageGate:
    """Whether to ask Switchyard: after a failed decision call the client decides locally for
    a hold (0.5 s doubling to 5 s, or Retry-After), then one caller probes at a time."""

    BASE_HOLD = 0.5
    MAX_HOLD = 5.0

    def __init__(self) -> None:
        self.trips = 0  # failed decision calls in a row
        self.reason = ""
        self._until = 0.0
        self._retry_after_until = 0.0  # Switchyard's own Retry-After: nothing shortens it
        self._probing = False
        self._lock = threading.Lock()

    def ask(self, now: float) -> bool:
        """True: ask Switchyard (as the probe, after an outage); False: decide locally."""
        if self.trips == 0:
            return True
        with self._lock:
            if self.trips == 0:
                return True
            if now < self._until or self._probing:
                return False
            self._probing = True
            return True

    def answered(self) -> bool:
        """Switchyard answered a decision; True when that ends an outage."""
        if self.trips == 0:
            return False
        with self._lock:
            ended = self.trips > 0
            self.trips, self._until, self._probing = 0, 0.0, False
            self._retry_after_until = 0.0
            return ended

    def failed(self, now: float, reason: str, retry_after: float | None = None) -> bool:
        """A decision call failed; True when that starts an outage."""
        with self._lock:
            self.trips += 1
            self.reason = reason
            self._probing = False
            if retry_after is not None:
                self._until = self._retry_after_until = now + retry_after
            else:
                self._until = now + min(self.MAX_HOLD, self.BASE_HOLD * 2 ** (self.trips - 1))
            return self.trips == 1

    def abandon(self) -> None:
        """The probe was interrupted (cancelled, say) before it learned anything."""
        if self._probing:
            with self._lock:
                self._probing = False

    def reachable(self) -> None:
        """A background request got through: let the next decision ask at once (unless
        Switchyard asked for a pause with Retry-After)."""
        with self._lock:
            self._until = self._retry_after_until


class ClientCore:
    """The state both clients keep, and the steps of a decision and a report without I/O."""

    def __init__(self, base_url: str, token: TokenSource, options: Options) -> None:
        self.api = base_url.rstrip("/") + API_PREFIX
        self.options = options
        self.hooks = options.hooks
        self.counters = Counters()
        self.gate = OutageGate()
        self.evidence = LocalEvidence()
        self.catalog: CatalogCopy | None = None
        self.reporter = Reporter(
            batch_size=options.report_batch_size,
            interval=options.report_interval,
            capacity=options.max_queued_reports,
            counters=self.counters,
            hooks=self.hooks,
            now=time.monotonic(),
        )
        self.refresh_at = 0.0  # the first refresh runs at once
        # Set by the client: wakes its background loop when a report needs it.
        self.wake_sender: Callable[[], None] = lambda: None
        self.deadline = httpx.Timeout(options.decision_deadline - LOCAL_RESERVE_SECONDS)
        self._token = token
        self._headers = {"Content-Type": "application/json"}
        if isinstance(token, str):
            self._headers["Authorization"] = f"Bearer {token}"

    def headers(self) -> dict[str, str]:
        """Request headers with a current token."""
        if isinstance(self._token, str):
            return self._headers
        return {**self._headers, "Authorization": f"Bearer {self._token()}"}

    @property
    def catalog_age(self) -> float | None:
        """Seconds since the catalog copy was taken; None before the first one."""
        copy = self.catalog
        return None if copy is None else time.monotonic() - copy.taken_at

    def decided(self, decision: Decision) -> Decision:
        """Count a decision and tell the hook."""
        self.counters.add("decisions")
        if decision.decided_locally:
            self.counters.add("local_decisions")
        fire(self.hooks.on_decision, decision)
        return decision

    def server_answered(self) -> None:
        """A decision call got Switchyard's answer."""
        if self.gate.answered():
            logger.info("switchyard_client: Switchyard answers again; decisions are its own")

    def fall_back(
        self,
        request: RoutingRequest,
        handlers: Sequence[str] | None,
        reason: str,
        retry_after: float | None = None,
        failed_now: bool = True,
    ) -> Decision:
        """Decide locally because Switchyard did not (`failed_now`: a call just failed)."""
        now = time.monotonic()
        if failed_now and self.gate.failed(now, reason, retry_after):
            age = self.catalog_age
            logger.warning(
                "switchyard_client: Switchyard did not decide (%s); deciding locally from %s",
                reason,
                "no catalog copy" if age is None else f"the catalog copy of {age:.1f} s ago",
            )
        fire(self.hooks.on_fallback, reason)
        local = decide_locally(self.catalog, request, handlers, self.evidence, now, reason)
        return self.decided(local)

    def record(self, decision: Decision, verdict: Classification, latency_ms: float) -> None:
        """Queue the outcome of a call to the decided node."""
        if verdict.kind != "refusal":
            self.evidence.observe(decision.node_id, verdict.succeeded, time.monotonic())
        wake = self.reporter.put(
            OutcomeReport(
                node_id=decision.node_id,
                success=verdict.succeeded,
                latency_ms=round(latency_ms, 3),
                observed_at=time.time(),
                error_code=None if verdict.succeeded else verdict.error_code,
                coordination_id=decision.coordination_id,
                cost=None if decision.decided_locally else decision.estimated_cost,
            )
        )
        if wake:
            self.wake_sender()

    def report(
        self, decision: Decision, success: bool, latency_ms: float, error_code: str | None
    ) -> None:
        """Queue an outcome the caller measured itself."""
        if success:
            verdict = SUCCESS
        elif error_code is not None and error_code.lower() in REFUSAL_CODES:
            verdict = refusal(error_code)
        else:
            verdict = failure(error_code or "error")
        self.record(decision, verdict, latency_ms)

    def take_catalog(self, providers: Any, coordinations: Any, now: float) -> None:
        """A fresh copy from the answers of GET /providers and GET /active-coordinations."""
        previous = self.catalog
        try:
            copy = catalog_copy(providers, coordinations, now)
        except (KeyError, TypeError, ValueError) as exc:
            logger.error("switchyard_client: unreadable GET /providers answer: %r", exc)
            self.refresh_failed(now)
            return
        if coordinations is None and previous is not None:
            copy = CatalogCopy(copy.services, previous.emergencies, copy.taken_at)
        self.catalog = copy
        self.evidence.forget()
        self.counters.add("catalog_refreshes")
        jitter = random.uniform(0.9, 1.1)  # replicas started together do not refresh together
        self.refresh_at = now + self.options.catalog_refresh_interval * jitter
        self.gate.reachable()

    def refresh_failed(self, now: float, retry_after: float | None = None) -> None:
        """Try the refresh again soon."""
        interval = self.options.catalog_refresh_interval
        self.refresh_at = now + (retry_after or min(interval, REFRESH_RETRY_SECONDS))

    def outcome_figures(self, nodes: list[Mapping[str, Any]]) -> None:
        """Node figures a POST /outcomes answer carried: newer than the copy's."""
        copy = self.catalog
        if copy is not None and nodes:
            self.catalog = copy.with_outcome_figures(nodes, time.monotonic())
        self.gate.reachable()

    def next_step(self, now: float, flushing: bool, close_by: float | None) -> Step:
        """The background loop's next step; `close_by` is set once the client is closing."""
        reporter = self.reporter
        closing = close_by is not None
        if close_by is not None and (reporter.idle() or now >= close_by):
            return Step("stop")
        batch = reporter.due(now, flushing or closing)
        if batch is not None:
            return Step("send", batch)
        if not closing and now >= self.refresh_at:
            return Step("refresh")
        wait = reporter.wait(now, flushing or closing)
        wait = min(wait, close_by - now if close_by is not None else self.refresh_at - now)
        return Step("wait", seconds=min(max(0.0, wait), MAX_IDLE_SECONDS))

    def needs_emergencies(self) -> bool:
        """Whether the copy has emergency-only nodes (else emergencies need not be read)."""
        copy = self.catalog
        return copy is None or copy.has_emergency_only_nodes()
