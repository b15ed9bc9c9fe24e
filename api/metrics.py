"""Prometheus metrics at GET /metrics: events counted as they happen, state read at scrape.

What requests do (decisions, their latency and cost, outcomes ingested, HTTP requests) moves
a counter or a histogram: a label lookup and an add, nothing else on the hot path. What is
state rather than an event (breaker state per node, budget spend, node health, recoveries
and emergencies by phase, WebSocket clients) is read when Prometheus scrapes: from the
routing snapshot the process already holds, plus one aggregate query.

Each API process counts only what it served and serves its own /metrics: scrape every
replica and sum. The scrape-time figures read from the store are the same on every replica.
/metrics needs no token unless `SWITCHYARD_METRICS_REQUIRE_TOKEN` is set (docs/OPERATIONS.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import AuthError, Permission
from api.errors import error_response
from routing.types import BreakerState
from store.status import PhaseCounts
from store.status import phase_counts as store_phase_counts
from switchyard.logs import bind, log_context
from switchyard.settings import Settings

if TYPE_CHECKING:  # the runtime holds the decision writer, which reports here
    from api.runtime import ApiRuntime

log = logging.getLogger("switchyard.api")

METRICS_PATH = "/metrics"
# Decisions take milliseconds; the top buckets catch a store or lock stall.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# Process-wide and registered nowhere else: several apps in one process (tests) share them.
REGISTRY = CollectorRegistry()
for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_collector)

DECISIONS = Counter(
    "switchyard_decisions",
    "Routing decisions answered by execute-coordination.",
    ["service", "strategy", "node"],
    registry=REGISTRY,
)
DECISION_SECONDS = Histogram(
    "switchyard_decision_seconds",
    "Time to decide and record one coordination (its totalCoordinationTime).",
    ["service"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
DECISION_COST = Counter(
    "switchyard_decision_cost",
    "Estimated cost of the decisions answered, in the catalog's currency.",
    ["service"],
    registry=REGISTRY,
)
DECISION_BATCH_SECONDS = Histogram(
    "switchyard_decision_batch_seconds",
    "Time to record one group-committed batch of decisions, by how it was written.",
    ["path"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
DECISION_BATCH_SIZE = Histogram(
    "switchyard_decision_batch_size",
    "Decisions per group-committed batch.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
    registry=REGISTRY,
)
OUTCOMES = Counter(
    "switchyard_outcomes_ingested",
    "Call outcomes recorded through POST outcomes, by what the call did.",
    ["result"],
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "switchyard_http_requests",
    "HTTP requests answered, by route template and status.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_SECONDS = Histogram(
    "switchyard_http_request_seconds",
    "HTTP request duration inside the application, by route template.",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "switchyard_rate_limited",
    "Requests refused with 429 because their principal spent its limit, by route class.",
    ["route_class"],
    registry=REGISTRY,
)
INCIDENT_REFUSED = Counter(
    "switchyard_incident_refused",
    "Decisions refused by an open incident's cascade protection, by service and reason.",
    ["service", "reason"],
    registry=REGISTRY,
)
IN_FLIGHT = Gauge(
    "switchyard_http_requests_in_flight",
    "HTTP requests being served now (drains to 0 during a graceful shutdown).",
    registry=REGISTRY,
)


def observe_decision(service: str, data: Mapping[str, Any]) -> None:
    """Count one answered decision (its wire-form `data`) and tag the request's log lines."""
    decision = data["routingDecision"]
    DECISIONS.labels(service, decision["routingStrategy"], decision["selectedNode"]["nodeId"]).inc()
    DECISION_SECONDS.labels(service).observe(
        data["performanceMetrics"]["totalCoordinationTime"] / 1000
    )
    DECISION_COST.labels(service).inc(decision["estimatedCost"])
    bind(coordination_id=data["coordinationId"])


def decision_batch(path: str, size: int, seconds: float) -> None:
    """Count one recorded batch: `two_round_trips` or `step_by_step`, its size and time."""
    DECISION_BATCH_SECONDS.labels(path).observe(seconds)
    DECISION_BATCH_SIZE.observe(size)


def rate_limited(route_class: str) -> None:
    """Count one request refused by its principal's rate limit."""
    RATE_LIMITED.labels(route_class).inc()


def incident_refused(service: str, reason: str) -> None:
    """Count one decision refused by an incident's protection (retry_budget_exhausted or
    shed_for_incident)."""
    INCIDENT_REFUSED.labels(service, reason).inc()


def outcomes_ingested(accepted: int, failed: int) -> None:
    """Count a recorded batch of outcomes: `failed` of the `accepted` calls failed."""
    OUTCOMES.labels("success").inc(accepted - failed)
    OUTCOMES.labels("failure").inc(failed)


def _route_label(scope: Scope) -> str:
    """The matched route's template; one label for every unmatched path (no cardinality leak)."""
    route = scope.get("route")
    return str(getattr(route, "path", None) or "unmatched")


class RequestTelemetry:
    """Counts and times every HTTP request and gives it a log context with its ids.

    Installed inside the security middleware, so the request id it reads is the one the
    answer carries; the context also sees the principal once authentication sets it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        with log_context(state=state, request_id=state.get("request_id", "")):
            if scope["type"] == "websocket":
                await self.app(scope, receive, send)
                return
            await self._timed(scope, receive, send)

    async def _timed(self, scope: Scope, receive: Receive, send: Send) -> None:
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send_status)
        finally:
            IN_FLIGHT.dec()
            route = _route_label(scope)
            HTTP_REQUESTS.labels(scope["method"], route, str(status)).inc()
            HTTP_SECONDS.labels(scope["method"], route).observe(time.perf_counter() - started)


def phase_counts(runtime: ApiRuntime) -> PhaseCounts:
    """Count recoveries (error streams with a workflow) and emergencies by phase."""
    with runtime.sessions() as session:
        return store_phase_counts(session=session)


class StateCollector(Collector):
    """Scrape-time figures: the routing snapshot, the phase counts and the events hub."""

    def __init__(self, app: FastAPI, phases: PhaseCounts | None) -> None:
        self.app = app
        self.phases = phases

    def collect(self) -> Iterator[Any]:
        """Every family, built fresh from what the process holds right now."""
        runtime: ApiRuntime | None = getattr(self.app.state, "runtime", None)
        if runtime is not None:
            yield from _snapshot_families(runtime)
        store_up = GaugeMetricFamily(
            "switchyard_store_up", "1 when this scrape's aggregate query reached the store."
        )
        store_up.add_metric([], 0.0 if self.phases is None else 1.0)
        yield store_up
        if self.phases is not None:
            yield from _phase_families(self.phases)
        yield from _hub_families(getattr(self.app.state, "events_hub", None))


def _snapshot_families(runtime: ApiRuntime) -> Iterator[Any]:
    snapshot = runtime.snapshot.current
    breaker = GaugeMetricFamily(
        "switchyard_breaker_state",
        "1 for the circuit breaker state each node is in, 0 for the others.",
        labels=["service", "node", "state"],
    )
    score = GaugeMetricFamily(
        "switchyard_node_health_score", "Live health score (0-100).", labels=["service", "node"]
    )
    failure = GaugeMetricFamily(
        "switchyard_node_failure_probability",
        "Predicted probability (0-1) that the node breaches its SLO within the horizon.",
        labels=["service", "node"],
    )
    for service, nodes in snapshot.nodes.items():
        for node in nodes:
            health = snapshot.health.get(node.node_id)
            state = health.breaker_state if health else BreakerState.CLOSED
            for candidate in BreakerState:
                breaker.add_metric(
                    [service, node.node_id, candidate.value], 1.0 if candidate is state else 0.0
                )
            score.add_metric(
                [service, node.node_id], health.health_score if health else node.health_score
            )
            failure.add_metric([service, node.node_id], health.failure_probability if health else 0)
    spent = GaugeMetricFamily(
        "switchyard_budget_spent",
        "Budget spent by the service in the current period, as of the last snapshot.",
        labels=["service", "period"],
    )
    limit = GaugeMetricFamily(
        "switchyard_budget_limit", "The service's budget per period.", labels=["service", "period"]
    )
    for service, budget in snapshot.budgets.items():
        spent.add_metric([service, budget.period.value], budget.spent)
        limit.add_metric([service, budget.period.value], budget.limit)
    emergency_spent = GaugeMetricFamily(
        "switchyard_emergency_budget_spent",
        "Spent under the service's active emergency override.",
        labels=["service"],
    )
    emergency_cap = GaugeMetricFamily(
        "switchyard_emergency_budget_cap",
        "The active emergency override's budget cap.",
        labels=["service"],
    )
    for service, emergency in snapshot.emergencies.items():
        emergency_spent.add_metric([service], emergency.spent)
        emergency_cap.add_metric([service], emergency.max_budget_override)
    age = GaugeMetricFamily(
        "switchyard_snapshot_age_seconds",
        "Seconds since this process last reloaded its routing snapshot.",
    )
    age.add_metric([], max(0.0, time.monotonic() - runtime.snapshot.loaded_at))
    yield from (breaker, score, failure, spent, limit, emergency_spent, emergency_cap, age)


def _phase_families(phases: PhaseCounts) -> Iterator[Any]:
    recoveries = GaugeMetricFamily(
        "switchyard_recoveries",
        "Recoveries by service and phase (recovering, escalated, resolved, unresolved, cancelled).",
        labels=["service", "phase"],
    )
    for service, phase, count in phases.recoveries:
        recoveries.add_metric([service, phase], count)
    emergencies = GaugeMetricFamily(
        "switchyard_emergencies",
        "Emergency overrides by service and phase (active, ended) and why they ended.",
        labels=["service", "phase", "end_reason"],
    )
    for service, phase, reason, count in phases.emergencies:
        emergencies.add_metric([service, phase, reason], count)
    yield from (recoveries, emergencies)


def _hub_families(hub: object) -> Iterator[Any]:
    """The WebSocket hub's figures, when this process runs one."""
    clients = getattr(hub, "clients", None)
    if isinstance(clients, int):
        gauge = GaugeMetricFamily(
            "switchyard_websocket_clients", "WebSocket clients connected to this process."
        )
        gauge.add_metric([], clients)
        yield gauge
    delivered = getattr(hub, "delivered", None)
    if isinstance(delivered, int):
        counter = CounterMetricFamily(
            "switchyard_events_delivered",
            "Events fanned out to WebSocket clients by this process (one per client).",
        )
        counter.add_metric([], delivered)
        yield counter


def _refusal(request: Request, settings: Settings) -> Response | None:
    """401/403 when /metrics requires a viewer token and the request lacks one."""
    if not settings.metrics_require_token:
        return None
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return error_response(
            401, "unauthorized", "missing bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
    try:
        principal = request.app.state.security.verifier.verify(token)
    except AuthError as exc:
        return error_response(401, "unauthorized", str(exc))
    request.state.principal = principal
    if not principal.can(Permission.read):
        return error_response(403, "forbidden", "/metrics needs the 'read' permission")
    return None


def _phases_or_none(runtime: ApiRuntime | None) -> PhaseCounts | None:
    if runtime is None:
        return None
    try:
        return phase_counts(runtime)
    except Exception as exc:  # the store is down: serve the rest, with switchyard_store_up 0
        log.warning("metrics: phase counts unavailable: %s", exc.__class__.__name__)
        return None


def install_metrics(app: FastAPI, settings: Settings) -> None:
    """Add the request telemetry middleware and GET /metrics (not in the OpenAPI document)."""

    async def metrics(request: Request) -> Response:
        refusal = _refusal(request, settings)
        if refusal is not None:
            return refusal
        runtime = getattr(app.state, "runtime", None)
        phases = await asyncio.to_thread(_phases_or_none, runtime)
        scrape = CollectorRegistry(auto_describe=False)
        scrape.register(StateCollector(app, phases))
        # Two expositions back to back: their metric names never overlap.
        body = generate_latest(REGISTRY) + generate_latest(scrape)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(RequestTelemetry)
    app.add_route(METRICS_PATH, metrics, methods=["GET"], include_in_schema=False)
