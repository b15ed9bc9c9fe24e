"""The fault tests' load generator: it remembers every request and every answer.

Each logical request is a `Call` with its identity (a request id or Idempotency-Key), its body
and every attempt made. A call is *accepted* when one attempt got a 2xx answer; the invariant
checks then demand that every accepted call is in the store exactly once.

Requests leave at a fixed rate whatever the server does (open loop), so a fault meets the
load it would meet in production. Requests that carry an Idempotency-Key (outcome batches,
backend-agent errors, emergency starts) are retried with the same key until accepted, as a
careful client does; an execute-coordination is a new decision each time, so it is never
retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from api.routes.emergency import WORKER_WAIT_SECONDS

BASE = "/api/v1/enhanced-traffic-coordination"
COORDINATE = f"{BASE}/execute-coordination"
OUTCOMES = f"{BASE}/outcomes"
ERRORS = f"{BASE}/backend-agent-error"
EMERGENCY = f"{BASE}/emergency-override"
# Attempts that give up after this long count as "no answer" (the server may still act). Longer
# than the API's own wait for a worker, after which it answers 504 itself: a caller that gave
# up sooner would retry an emergency the worker is about to start, and be told it is running.
REQUEST_TIMEOUT = WORKER_WAIT_SECONDS + 10.0
RETRY_PAUSE = 0.25
# A retried call gives up after this long; the checks then count it as not accepted.
RETRY_FOR = 60.0

# Healthy nodes of the default catalog per service, and the one a backend error names failed.
NODES = {
    "stripe": ["stripe_primary_us_east", "stripe_secondary_us_west"],
    "samsara": ["samsara_primary", "samsara_backup"],
    "twilio": ["twilio_primary_us_east", "twilio_secondary_us_west"],
    "maps": ["mapbox_primary", "google_maps", "here_maps"],
    "sendgrid": ["sendgrid_primary"],
}
FAILED = {
    "stripe": "stripe_primary_us_east",
    "samsara": "samsara_primary",
    "twilio": "twilio_primary_us_east",
    "maps": "mapbox_primary",
}
CATALOG_LATENCY_MS = 150.0


@dataclass
class Attempt:
    """One HTTP exchange: status (None when no answer came) and the error code if any."""

    sent: float
    took: float
    status: int | None
    code: str | None = None
    retry_after: str | None = None
    message: str = ""


@dataclass
class Call:
    """One logical request and what became of it."""

    kind: str
    key: str
    body: dict[str, Any]
    attempts: list[Attempt] = field(default_factory=list)
    data: dict[str, Any] | None = None
    replayed: bool = False  # the accepted answer was an idempotent replay

    @property
    def accepted(self) -> bool:
        """Whether some attempt got a 2xx answer."""
        return self.data is not None


@dataclass
class LoadLog:
    """Every call of a test run, for the invariant checks and the figures."""

    calls: list[Call] = field(default_factory=list)

    def add(self, kind: str, key: str, body: dict[str, Any]) -> Call:
        """Record a new logical request."""
        call = Call(kind, key, body)
        self.calls.append(call)
        return call

    def of(self, kind: str) -> list[Call]:
        """Every call of one kind."""
        return [c for c in self.calls if c.kind == kind]

    def accepted(self, kind: str) -> list[Call]:
        """The calls of one kind that got a success answer."""
        return [c for c in self.calls if c.kind == kind and c.accepted]

    def answers(self) -> Counter[str]:
        """Attempts by answer: the status, or 'no answer'."""
        return Counter(
            "no answer" if a.status is None else str(a.status)
            for c in self.calls
            for a in c.attempts
        )

    def error_codes(self) -> Counter[str]:
        """Attempts by error code (non-2xx answers only)."""
        return Counter(a.code or "?" for c in self.calls for a in c.attempts if a.code)

    def attempts_between(
        self, start: float, end: float, kinds: tuple[str, ...] | None = None
    ) -> list[Attempt]:
        """Attempts (of `kinds`, default all) sent in [start, end) (monotonic)."""
        return [
            a
            for c in self.calls
            if kinds is None or c.kind in kinds
            for a in c.attempts
            if start <= a.sent < end
        ]

    def first_success_after(self, moment: float, kinds: tuple[str, ...]) -> float | None:
        """Seconds from `moment` to the first 2xx answer (to any request) that came after it."""
        found = [
            a.sent + a.took - moment
            for c in self.calls
            if c.kind in kinds
            for a in c.attempts
            if a.sent + a.took >= moment and a.status is not None and 200 <= a.status < 300
        ]
        return min(found) if found else None

    def figures(self) -> dict[str, Any]:
        """Requests per kind, attempts, answers by status (overall and per kind), error codes."""
        kinds = sorted({c.kind for c in self.calls})
        return {
            "requests": {k: len(self.of(k)) for k in kinds},
            "accepted": {k: len(self.accepted(k)) for k in kinds},
            "attempts": sum(len(c.attempts) for c in self.calls),
            "answers": dict(sorted(self.answers().items())),
            "answers_by_kind": {
                k: dict(sorted(LoadLog(self.of(k)).answers().items())) for k in kinds
            },
            "error_codes": dict(sorted(self.error_codes().items())),
        }


class LoadClient:
    """Posts calls to one or more API processes, round robin, and records each attempt."""

    def __init__(self, urls: list[str], headers: dict[str, str]) -> None:
        self.urls = urls
        self._next = itertools.cycle(range(len(urls)))
        self.http = httpx.AsyncClient(
            headers=headers,
            timeout=REQUEST_TIMEOUT,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        )

    async def close(self) -> None:
        """Close the connection pool."""
        await self.http.aclose()

    async def attempt(
        self, call: Call, path: str, headers: dict[str, str] | None = None, url: str | None = None
    ) -> Attempt:
        """POST the call's body once; record the answer (a 2xx sets the call's data)."""
        base = url or self.urls[next(self._next)]
        sent = time.monotonic()
        try:
            response = await self.http.post(base + path, json=call.body, headers=headers)
        except httpx.HTTPError as exc:
            attempt = Attempt(sent, time.monotonic() - sent, None, message=type(exc).__name__)
            call.attempts.append(attempt)
            return attempt
        attempt = Attempt(sent, time.monotonic() - sent, response.status_code)
        try:
            document = response.json()
        except ValueError:
            document = None
        if 200 <= response.status_code < 300 and isinstance(document, dict):
            call.data = document.get("data") or {}
            call.replayed = response.headers.get("Idempotent-Replayed") == "true"
        elif isinstance(document, dict) and isinstance(document.get("error"), dict):
            attempt.code = document["error"].get("code")
            attempt.message = str(document["error"].get("message", ""))
        attempt.retry_after = response.headers.get("Retry-After")
        call.attempts.append(attempt)
        return attempt

    async def until_accepted(
        self, call: Call, path: str, headers: dict[str, str] | None = None
    ) -> None:
        """Retry with the same body and headers until a 2xx answer, a 4xx, or RETRY_FOR."""
        deadline = time.monotonic() + RETRY_FOR
        while True:
            attempt = await self.attempt(call, path, headers)
            if call.accepted or _refused(attempt.status) or time.monotonic() > deadline:
                return
            await asyncio.sleep(RETRY_PAUSE)


def _refused(status: int | None) -> bool:
    """A 4xx other than 429: retrying the same request cannot succeed."""
    return status is not None and 400 <= status < 500 and status != 429


def coordination_body(number: int, run: str) -> dict[str, Any]:
    """An execute-coordination request; services rotate, every third syncs an error stream."""
    service = list(NODES)[number % len(NODES)]
    body: dict[str, Any] = {
        "serviceName": service,
        "operation": "fault_load",
        "routingContext": {
            "requestMetadata": {
                "requestId": f"{run}-c{number}",
                "priority": "HIGH",
                "businessCriticality": "REVENUE_BLOCKING",
            },
            "budgetConstraints": {"remainingBudget": 1000},
            "performanceContext": {"currentLatency": 400, "targetLatency": 300},
        },
    }
    if number % 3 == 0:
        body["backendAgentContext"] = {
            "errorStreamId": f"{run}_sync_{service}",
            "requireBackendAgentSync": True,
        }
    return body


def outcome_batch(number: int, run: str, size: int) -> dict[str, Any]:
    """A batch of successful, on-SLO outcomes; item i names coordination `{run}-o{n}-{i}`."""
    nodes = [node for nodes in NODES.values() for node in nodes]
    return {
        "outcomes": [
            {
                "coordinationId": f"{run}-o{number}-{i}",
                "nodeId": nodes[(number * size + i) % len(nodes)],
                "success": True,
                "latencyMs": CATALOG_LATENCY_MS,
                "cost": 0.01,
            }
            for i in range(size)
        ]
    }


def error_report(service: str, stream: str) -> dict[str, Any]:
    """A backend-agent-error naming the service's primary failed."""
    return {
        "errorType": "service_unavailable",
        "serviceName": service,
        "operation": "fault_load",
        "severity": "high",
        "errorMessage": f"{FAILED[service]} answered 503",
        "errorDetails": {"failedProviders": [FAILED[service]], "retryAttempts": 1},
        "businessImpact": {"revenueAtRisk": 100, "timeToResolution": 30},
        "streamId": stream,
    }


async def open_loop(
    rate: float, stop: asyncio.Event, send: Callable[[int], Coroutine[Any, Any, None]]
) -> int:
    """Call `send(n)` at `rate` per second until `stop`, without waiting for answers.

    Returns the number of requests started, after every one of them has finished.
    """
    pending: set[asyncio.Task[None]] = set()
    started = time.monotonic()
    number = 0
    while not stop.is_set():
        task = asyncio.get_running_loop().create_task(send(number))
        pending.add(task)
        task.add_done_callback(pending.discard)
        number += 1
        delay = started + number / rate - time.monotonic()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
    if pending:
        await asyncio.gather(*pending)
    return number


@dataclass
class Mix:
    """Rates of the load kinds, per second (0 leaves a kind out)."""

    coordinations: float = 0.0
    outcome_batches: float = 0.0
    batch_size: int = 10
    errors: float = 0.0
    error_services: tuple[str, ...] = ("samsara", "maps")
    streams_per_service: int = 2


class Load:
    """Runs a Mix against the APIs in the background until stopped."""

    def __init__(self, client: LoadClient, log: LoadLog, mix: Mix) -> None:
        self.client = client
        self.log = log
        self.mix = mix
        self.run = f"f{uuid.uuid4().hex[:6]}"
        self.stop = asyncio.Event()
        self._tasks: list[asyncio.Task[int]] = []
        self._streams = self._stream_cycle()

    def _stream_cycle(self) -> Iterator[tuple[str, str]]:
        pairs = [
            (service, f"{self.run}_{service}_{n}")
            for service in self.mix.error_services
            for n in range(self.mix.streams_per_service)
        ]
        return itertools.cycle(pairs)

    def start(self) -> None:
        """Start every kind with a non-zero rate."""
        loop = asyncio.get_running_loop()
        mix = self.mix
        for rate, send in (
            (mix.coordinations, self._coordinate),
            (mix.outcome_batches, self._report_outcomes),
            (mix.errors, self._report_error),
        ):
            if rate > 0:
                self._tasks.append(loop.create_task(open_loop(rate, self.stop, send)))

    async def finish(self) -> None:
        """Stop sending and wait for every request (and its retries) to finish."""
        self.stop.set()
        await asyncio.gather(*self._tasks)

    async def _coordinate(self, number: int) -> None:
        call = self.log.add(
            "coordination", f"{self.run}-c{number}", coordination_body(number, self.run)
        )
        await self.client.attempt(call, COORDINATE)

    async def _report_outcomes(self, number: int) -> None:
        key = f"{self.run}-o{number}"
        call = self.log.add("outcomes", key, outcome_batch(number, self.run, self.mix.batch_size))
        await self.client.until_accepted(call, OUTCOMES, {"Idempotency-Key": key})

    async def _report_error(self, number: int) -> None:
        service, stream = next(self._streams)
        key = f"{self.run}-e{number}"
        call = self.log.add("error", key, error_report(service, stream))
        await self.client.until_accepted(call, ERRORS, {"Idempotency-Key": key})


async def start_emergency(
    client: LoadClient, log: LoadLog, service: str, minutes: int = 30
) -> Call:
    """POST emergency-override for `service` (retried with its key until accepted or refused)."""
    body = {
        "serviceName": service,
        "operation": "fault_load",
        "emergencyReason": f"fault test: {service} outage",
        "maxBudgetOverride": 500.0,
        "durationMinutes": minutes,
        "businessJustification": "keep revenue flowing while the fault is injected",
    }
    call = log.add("emergency", f"emergency-{service}-{uuid.uuid4().hex[:6]}", body)
    # Keyed: a retry after a 504 finds the emergency its first attempt started.
    await client.until_accepted(call, EMERGENCY, {"Idempotency-Key": call.key})
    return call


async def cancel_emergency(client: LoadClient, log: LoadLog, service: str) -> Call:
    """POST emergency-override/{service}/cancel (retried until accepted or refused)."""
    call = log.add("emergency_cancel", f"cancel-{service}", {"reason": "fault test done"})
    await client.until_accepted(call, f"{EMERGENCY}/{service}/cancel")
    return call
