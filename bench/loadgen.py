"""Open-loop HTTP load: requests leave at a fixed arrival rate whatever the server does.

Request i is due at t0 + i/rate. Its latency is measured from that due time, not from when a
connection became free, so a server that falls behind is charged for the queue it builds
(no coordinated omission). Two clients:

- ``raw``: HTTP/1.1 over asyncio streams with keep-alive connections, a few microseconds of
  client work per request, so the generator stays out of the figures on a small machine;
- ``httpx``: httpx.AsyncClient with a connection pool, for comparison.

Run alone against a running API:

    .venv/bin/python -m bench.loadgen --url http://127.0.0.1:3000 --token "$TOKEN" --rate 500
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import math
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import count
from typing import Any
from urllib.parse import urlsplit

from bench.stats import nearest_rank

PATH = "/api/v1/enhanced-traffic-coordination/execute-coordination"
DRAIN_SECONDS = 60.0

SEED_BODY: dict[str, Any] = {
    "serviceName": "stripe",
    "operation": "payment_processing",
    "routingContext": {
        "requestMetadata": {
            "requestId": "payment_req_12345",
            "priority": "CRITICAL",
            "businessCriticality": "REVENUE_BLOCKING",
        },
        "budgetConstraints": {
            "remainingBudget": 1000,
            "costPerRequestLimit": 0.1,
            "budgetPeriod": "daily",
        },
        "performanceContext": {
            "currentLatency": 800,
            "targetLatency": 300,
            "currentThroughput": 50,
            "targetThroughput": 200,
        },
    },
    "backendAgentContext": {
        "errorStreamId": "error_stream_stripe_001",
        "requireBackendAgentSync": True,
        "requireRealTimeMonitoring": True,
    },
    "businessContext": {
        "revenueImpact": 5000,
        "customerImpact": "moderate",
        "operationalPriority": "high",
        "timeSensitivity": "urgent",
    },
    "coordinationRequirements": {
        "requireBackendAgentSync": True,
        "requireRealTimeMonitoring": True,
        "requirePredictiveAnalytics": False,
        "requireEmergencyOverride": False,
    },
}

MIXED_SERVICES = ("stripe", "samsara", "twilio", "maps", "sendgrid")


def request_bodies(kind: str) -> Iterator[bytes]:
    """Encoded execute-coordination bodies, endlessly.

    ``seed``: the contract's example every time (one error stream, one monitoring session).
    ``plain``: the example without backend-agent sync or monitoring (budget charge only).
    ``mixed``: services, request ids and streams rotate; every other request syncs a stream.
    """
    if kind == "seed":
        encoded = json.dumps(SEED_BODY).encode()
        while True:
            yield encoded
    if kind == "plain":
        body = copy.deepcopy(SEED_BODY)
        body.pop("backendAgentContext")
        body.pop("coordinationRequirements")
        encoded = json.dumps(body).encode()
        while True:
            yield encoded
    if kind != "mixed":
        raise ValueError(f"unknown body kind {kind!r}")
    for i in count():
        body = copy.deepcopy(SEED_BODY)
        service = MIXED_SERVICES[i % len(MIXED_SERVICES)]
        body["serviceName"] = service
        body["routingContext"]["requestMetadata"]["requestId"] = f"req_{i}"
        body["routingContext"]["budgetConstraints"].pop("costPerRequestLimit")
        if i % 2:
            body.pop("backendAgentContext")
            body.pop("coordinationRequirements")
        else:
            body["backendAgentContext"]["errorStreamId"] = f"error_stream_{service}_{i % 16}"
        yield json.dumps(body).encode()


@dataclass
class LoadResult:
    """What one run measured; latencies in milliseconds from each request's due time."""

    rate: float
    duration: float
    warmup: float
    sent: int = 0
    completed: int = 0
    non_2xx: int = 0
    transport_errors: int = 0
    unfinished: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    due_s: list[float] = field(default_factory=list)  # each latency's due time, run-relative
    dispatch_lag_ms: list[float] = field(default_factory=list)
    first_due: float = 0.0
    last_done: float = 0.0
    max_connections_used: int = 0
    client_cpu_seconds: float = 0.0
    sample_error: str = ""

    @property
    def achieved_rate(self) -> float:
        """Measured requests completed per second of the measured window."""
        window = self.last_done - self.first_due
        return self.completed / window if window > 0 else 0.0

    def worst_second(self) -> tuple[float, float]:
        """(start s, p99 ms) of the measured second whose p99 is highest: a stall shows here."""
        seconds: dict[int, list[float]] = {}
        for due, latency in zip(self.due_s, self.latencies_ms, strict=True):
            seconds.setdefault(int(due), []).append(latency)
        worst = (0.0, 0.0)
        for second, values in seconds.items():
            values.sort()
            p99 = values[min(len(values) - 1, math.ceil(0.99 * len(values)) - 1)]
            worst = max(worst, (p99, float(second)))
        return worst[1], worst[0]

    def percentile(self, p: float) -> float:
        """Nearest-rank percentile of the measured latencies (ms)."""
        return nearest_rank(self.latencies_ms, p)

    def dispatch_lag_p99(self) -> float:
        """99th percentile of how late the generator itself started requests (ms)."""
        if not self.dispatch_lag_ms:
            return math.nan
        ordered = sorted(self.dispatch_lag_ms)
        return ordered[max(1, math.ceil(0.99 * len(ordered))) - 1]

    def summary(self) -> dict[str, float | int]:
        """The headline figures."""
        return {
            "target_rate": self.rate,
            "achieved_rate": round(self.achieved_rate, 1),
            "measured_requests": self.completed,
            "non_2xx": self.non_2xx,
            "transport_errors": self.transport_errors,
            "unfinished": self.unfinished,
            "p50_ms": round(self.percentile(50), 2),
            "p95_ms": round(self.percentile(95), 2),
            "p99_ms": round(self.percentile(99), 2),
            "p999_ms": round(self.percentile(99.9), 2),
            "max_ms": round(max(self.latencies_ms, default=math.nan), 2),
            "connections": self.max_connections_used,
            "client_cpu_s": round(self.client_cpu_seconds, 2),
            "dispatch_lag_p99_ms": round(self.dispatch_lag_p99(), 2),
        }


class RawConnection:
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, head: bytes, body: bytes) -> tuple[int, bytes]:
        """Send one request, return (status, body)."""
        self.writer.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
        header = await self.reader.readuntil(b"\r\n\r\n")
        status = int(header[9:12])
        length = 0
        chunked = False
        for line in header.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if chunked:
            return status, await self._read_chunked()
        return status, await self.reader.readexactly(length)

    async def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)

    def close(self) -> None:
        """Close the socket."""
        self.writer.close()


class RawClient:
    """A pool of RawConnections that grows up to `max_connections`."""

    def __init__(self, url: str, token: str, max_connections: int) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.max_connections = max_connections
        self.idle: asyncio.Queue[RawConnection] = asyncio.Queue()
        self.opened = 0
        self.head = (
            f"POST {PATH} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            "Content-Length: "
        ).encode()

    async def _connection(self) -> RawConnection:
        try:
            return self.idle.get_nowait()
        except asyncio.QueueEmpty:
            pass
        if self.opened < self.max_connections:
            self.opened += 1
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except BaseException:
                self.opened -= 1
                raise
            return RawConnection(reader, writer)
        return await self.idle.get()

    async def post(self, body: bytes) -> tuple[int, bytes]:
        """POST execute-coordination on a pooled connection."""
        connection = await self._connection()
        try:
            result = await connection.send(self.head, body)
        except BaseException:
            connection.close()
            self.opened -= 1
            raise
        self.idle.put_nowait(connection)
        return result

    async def close(self) -> None:
        """Close every idle connection."""
        while not self.idle.empty():
            self.idle.get_nowait().close()


class HttpxClient:
    """httpx.AsyncClient with a bounded connection pool."""

    def __init__(self, url: str, token: str, max_connections: int) -> None:
        import httpx

        self.client = httpx.AsyncClient(
            base_url=url,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            timeout=30.0,
        )
        self.opened = max_connections

    async def post(self, body: bytes) -> tuple[int, bytes]:
        """POST execute-coordination."""
        response = await self.client.post(PATH, content=body)
        return response.status_code, response.content

    async def close(self) -> None:
        """Close the pool."""
        await self.client.aclose()


async def run_load(
    url: str,
    token: str,
    *,
    rate: float,
    duration: float,
    warmup: float = 0.0,
    client: str = "raw",
    max_connections: int = 64,
    bodies: str = "seed",
    progress: Callable[[str], None] | None = None,
) -> LoadResult:
    """Send at `rate` per second for warmup + duration seconds; measure after the warm-up."""
    pool: RawClient | HttpxClient = (
        RawClient(url, token, max_connections)
        if client == "raw"
        else HttpxClient(url, token, max_connections)
    )
    result = LoadResult(rate=rate, duration=duration, warmup=warmup)
    source = request_bodies(bodies)
    loop = asyncio.get_running_loop()
    total = int((warmup + duration) * rate)
    interval = 1.0 / rate
    pending: set[asyncio.Task[None]] = set()
    cpu_start = _cpu_seconds()
    # uvloop's loop.time() ticks in whole milliseconds; perf_counter resolves microseconds.
    clock = time.perf_counter
    t0 = clock() + 0.05
    measure_from = t0 + warmup

    async def one(due: float, body: bytes) -> None:
        if due >= measure_from:
            result.dispatch_lag_ms.append((clock() - due) * 1000.0)
        try:
            status, payload = await pool.post(body)
        except Exception as exc:
            if due >= measure_from:
                result.transport_errors += 1
                result.sample_error = result.sample_error or repr(exc)
            return
        done = clock()
        if due < measure_from:
            return
        result.completed += 1
        result.statuses[status] = result.statuses.get(status, 0) + 1
        if not 200 <= status < 300:
            result.non_2xx += 1
            if not result.sample_error:
                result.sample_error = f"{status}: {payload[:300]!r}"
        result.latencies_ms.append((done - due) * 1000.0)
        result.due_s.append(due - measure_from)
        result.last_done = max(result.last_done, done)

    last_report = t0
    for i in range(total):
        due = t0 + i * interval
        delay = due - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        task = loop.create_task(one(due, next(source)))
        pending.add(task)
        task.add_done_callback(pending.discard)
        if due >= measure_from:
            result.sent += 1
        if progress is not None and due - last_report >= 5.0:
            last_report = due
            progress(f"t={due - t0:5.1f}s in flight={len(pending)} conns={pool.opened}")
        result.max_connections_used = max(result.max_connections_used, pool.opened)
    result.first_due = measure_from
    if pending:
        await asyncio.wait(pending, timeout=DRAIN_SECONDS)
    # Requests still open after the drain are failures too (a server that never answers
    # must not look fast); they have no latency to report.
    result.unfinished = len(pending)
    for task in list(pending):
        task.cancel()
    result.client_cpu_seconds = _cpu_seconds() - cpu_start
    await pool.close()
    return result


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def install_fast_loop() -> str:
    """Use uvloop when it is installed; returns the loop's name."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def main() -> None:
    """Command line: load a running API and print the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--token", required=True, help="an operator JWT")
    parser.add_argument("--rate", type=float, default=500.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--bodies", choices=["seed", "plain", "mixed"], default="seed")
    args = parser.parse_args()
    install_fast_loop()
    result = asyncio.run(
        run_load(
            args.url,
            args.token,
            rate=args.rate,
            duration=args.duration,
            warmup=args.warmup,
            client=args.client,
            max_connections=args.connections,
            bodies=args.bodies,
            progress=print,
        )
    )
    print(
        json.dumps(
            {**result.summary(), "statuses": result.statuses, "sample_error": result.sample_error},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
