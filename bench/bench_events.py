"""Live events on PostgreSQL: commit-to-client latency, and how many clients one API serves.

Creates a fresh database, starts one API process (`switchyard api`), and for each client count
(`--clients 1,100,500`): connects that many WebSocket clients to `/events` (from client
processes of this script), then a writer thread here commits one event per transaction at
`--rate` events/s for `--duration` seconds. Latency runs from the writer calling COMMIT to a
client having the parsed event (wall clock: writer and clients share the machine), so it
includes the commit itself, the NOTIFY, the API's read and fan-out, and the client's parse.

A level is "served" when every client received every event, in order, none was closed as
too slow, and the p95 latency stays under `--served-p95-ms`. The load generator (client
processes and writer) runs on the same machine as the API and PostgreSQL, so its CPU is part
of the budget; the table says how the CPU was split.

    .venv/bin/python -m bench.bench_events                         # 1, 100, 250, 500, 1000 clients
    .venv/bin/python -m bench.bench_events --clients 1 --duration 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import secrets
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from api.auth import Role, issue_token
from bench.bench_http import (
    drop_database,
    free_port,
    fresh_database,
    postgres_cpu_seconds,
    tree_cpu_seconds,
    wait_for_health,
)
from bench.stats import nearest_rank
from store.db import make_engine, make_session_factory
from store.events import latest_event_id, publish
from switchyard.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DATABASE = "switchyard_bench_events"
PATH = "/api/v1/enhanced-traffic-coordination/events"
SUBPROTOCOL = "switchyard.events.v1"
SAMPLED_PER_PROCESS = 50  # clients per process that record every receive time
CONNECT_BATCH = 50


@dataclass
class ClientReport:
    """What one client process saw."""

    connected: int = 0
    complete: int = 0  # clients that received every event, in order
    too_slow: int = 0  # closed by the server with 4008
    failed: int = 0  # other closes, errors, timeouts, gaps
    received: int = 0
    samples: list[tuple[int, float]] = field(default_factory=list)  # (event id, wall time)
    cpu_seconds: float = 0.0


@dataclass
class LevelResult:
    """One client count's figures."""

    clients: int
    events: int
    seconds: float
    report: ClientReport
    latencies_ms: list[float]
    api_cpu: float
    postgres_cpu: float
    writer_cpu: float

    def percentile(self, p: float) -> float:
        """Latency percentile in milliseconds (nearest rank)."""
        return nearest_rank(self.latencies_ms, p)


# ---- clients (in their own processes) -------------------------------------------------


def client_process(
    uri: str,
    token: str,
    count: int,
    first: int,
    last: int,
    options: tuple[bool, float],
    ready: Queue[int],
    go: Any,
    results: Queue[ClientReport],
) -> None:
    """Connect `count` clients, wait for `go`, receive events first..last, report.

    `options`: whether to offer compression, and how long to wait for the events at most.
    """
    report = asyncio.run(_clients(uri, token, count, first, last, options, ready, go))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    report.cpu_seconds = usage.ru_utime + usage.ru_stime
    results.put(report)


async def _clients(
    uri: str,
    token: str,
    count: int,
    first: int,
    last: int,
    options: tuple[bool, float],
    ready: Queue[int],
    go: Any,
) -> ClientReport:
    compression, timeout = options
    report = ClientReport()
    sockets = []
    for start in range(0, count, CONNECT_BATCH):
        batch = range(start, min(count, start + CONNECT_BATCH))
        sockets += await asyncio.gather(
            *(
                connect(
                    uri,
                    subprotocols=[SUBPROTOCOL, f"bearer.{token}"],  # type: ignore[list-item]
                    compression="deflate" if compression else None,
                    max_queue=None,
                    open_timeout=60,
                    ping_interval=None,
                )
                for _ in batch
            )
        )
    report.connected = len(sockets)
    ready.put(report.connected)
    await asyncio.to_thread(go.wait)
    deadline = time.monotonic() + timeout
    await asyncio.gather(
        *(
            _receive(ws, first, last, report, index < SAMPLED_PER_PROCESS, deadline)
            for index, ws in enumerate(sockets)
        )
    )
    return report


async def _receive(
    ws: Any, first: int, last: int, report: ClientReport, sampled: bool, deadline: float
) -> None:
    expected = first
    try:
        async with asyncio.timeout(deadline - time.monotonic()):
            async for message in ws:
                event_id = json.loads(message)["id"]
                if sampled:
                    report.samples.append((event_id, time.time()))
                report.received += 1
                if event_id != expected:
                    report.failed += 1
                    return
                if event_id == last:
                    report.complete += 1
                    return
                expected += 1
    except ConnectionClosed as closed:
        if closed.rcvd is not None and closed.rcvd.code == 4008:
            report.too_slow += 1
        else:
            report.failed += 1
        return
    except TimeoutError:
        report.failed += 1
        return
    finally:
        await ws.close()
    report.failed += 1  # the server closed without a close frame


# ---- writer -------------------------------------------------------------------------------


def write_events(
    sessions: sessionmaker[Session], rate: float, total: int, commits: dict[int, float]
) -> None:
    """Commit one event per transaction, open loop at `rate`; record when COMMIT was called."""
    started = time.monotonic()
    for n in range(total):
        due = started + n / rate
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        with sessions() as session:
            session.begin()
            draft = publish(
                session,
                "enhanced_coordination_completed",
                {
                    "coordinationId": f"coordination_bench_{n}",
                    "serviceName": "stripe",
                    "selectedProvider": "Stripe Primary (US East)",
                    "coordinationTime": 45,
                    "confidenceScore": 95,
                    "backendIntegrated": True,
                    "costSavings": 0.071,
                    "performanceGain": 81.25,
                },
                service="stripe",
            )
            called = time.time()
            session.commit()
        assert draft.id is not None
        commits[draft.id] = called


# ---- one level ------------------------------------------------------------------------


def run_level(
    args: argparse.Namespace,
    uri: str,
    token: str,
    sessions: sessionmaker[Session],
    api_pid: int,
    clients: int,
) -> LevelResult:
    """Connect `clients`, write the events, collect what the clients saw."""
    total = int(args.rate * args.duration)
    with sessions() as session:
        first = latest_event_id(session) + 1
    last = first + total - 1
    # Spawned, not forked: a forked child would share this process's database connections.
    context = multiprocessing.get_context("spawn")
    ready: Queue[int] = context.Queue()
    results: Queue[ClientReport] = context.Queue()
    go = context.Event()
    options = (args.compression, args.duration + 120.0)  # a stuck run still ends
    processes = min(args.client_processes, clients)
    shares = [
        clients // processes + (1 if i < clients % processes else 0) for i in range(processes)
    ]
    workers = [
        context.Process(
            target=client_process,
            args=(uri, token, share, first, last, options, ready, go, results),
            daemon=True,
        )
        for share in shares
    ]
    for worker in workers:
        worker.start()
    connected = sum(ready.get(timeout=300) for _ in workers)
    if connected != clients:
        raise RuntimeError(f"only {connected} of {clients} clients connected")
    time.sleep(1.0)  # let the handshakes' work settle before measuring
    commits: dict[int, float] = {}
    api_before, pg_before = tree_cpu_seconds(api_pid), postgres_cpu_seconds()
    writer_before = _own_cpu()
    go.set()
    started = time.monotonic()
    writer = threading.Thread(
        target=lambda: write_events(sessions, args.rate, total, commits), name="writer"
    )
    writer.start()
    writer.join()
    reports = [results.get(timeout=600) for _ in workers]
    elapsed = time.monotonic() - started
    for worker in workers:
        worker.join(timeout=30)
    merged = ClientReport()
    for part in reports:
        merged.connected += part.connected
        merged.complete += part.complete
        merged.too_slow += part.too_slow
        merged.failed += part.failed
        merged.received += part.received
        merged.samples += part.samples
        merged.cpu_seconds += part.cpu_seconds
    latencies = [(seen - commits[i]) * 1000 for i, seen in merged.samples if i in commits]
    return LevelResult(
        clients=clients,
        events=total,
        seconds=elapsed,
        report=merged,
        latencies_ms=latencies,
        api_cpu=tree_cpu_seconds(api_pid) - api_before,
        postgres_cpu=postgres_cpu_seconds() - pg_before,
        writer_cpu=_own_cpu() - writer_before,
    )


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def served(result: LevelResult, bound_ms: float) -> bool:
    """Every client got every event, none dropped, p95 under the bound."""
    report = result.report
    return (
        report.complete == result.clients
        and report.too_slow == 0
        and report.failed == 0
        and result.percentile(95) <= bound_ms
    )


def markdown(results: list[LevelResult], args: argparse.Namespace) -> str:
    """The levels as a markdown table."""
    lines = [
        f"{args.rate:g} events/s for {args.duration:g} s per level, one API process "
        f"(`switchyard api`), {args.client_processes} client process(es), "
        f"compression {'on' if args.compression else 'off'}; served = every client got every "
        f"event in order, none closed as too slow, p95 <= {args.served_p95_ms:g} ms.",
        "",
        "| clients | events | deliveries/s | p50 ms | p95 ms | p99 ms | max ms "
        "| complete | too slow | failed | API CPU % | API CPU µs/delivery | PG CPU % "
        "| clients CPU % | writer CPU % | served |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        rep, seconds = r.report, r.seconds
        lines.append(
            f"| {r.clients} | {r.events} | {rep.received / seconds:,.0f} "
            f"| {r.percentile(50):.1f} | {r.percentile(95):.1f} | {r.percentile(99):.1f} "
            f"| {max(r.latencies_ms, default=float('nan')):.1f} "
            f"| {rep.complete} | {rep.too_slow} | {rep.failed} "
            f"| {100 * r.api_cpu / seconds:.0f} | {1e6 * r.api_cpu / max(rep.received, 1):.0f} "
            f"| {100 * r.postgres_cpu / seconds:.0f} "
            f"| {100 * rep.cpu_seconds / seconds:.0f} | {100 * r.writer_cpu / seconds:.0f} "
            f"| {'yes' if served(r, args.served_p95_ms) else 'no'} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description="Live event latency and WebSocket fan-out.")
    parser.add_argument(
        "--clients",
        default="1,100,250,500,1000",
        help="comma-separated client counts, one level each",
    )
    parser.add_argument("--rate", type=float, default=100.0, help="events committed per second")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of events per level")
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument(
        "--compression",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="offer permessage-deflate as browsers do",
    )
    parser.add_argument("--served-p95-ms", type=float, default=250.0)
    parser.add_argument(
        "--admin-url",
        default=os.environ.get("BENCH_ADMIN_URL", DEFAULT_ADMIN_URL),
        help="a PostgreSQL URL allowed to create databases",
    )
    parser.add_argument("--keep-db", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run every level and print the table."""
    args = parse_args(argv)
    command_line = " ".join(
        [".venv/bin/python -m bench.bench_events", *map(shlex.quote, sys.argv[1:])]
    )
    levels = [int(part) for part in args.clients.split(",") if part.strip()]
    database_url = fresh_database(args.admin_url, DATABASE)
    home = Path(tempfile.mkdtemp(prefix="switchyard-bench-events-"))
    secret = secrets.token_urlsafe(48)
    settings = Settings(
        home=home,
        database_url=database_url,
        jwt_secret=secret,
        catalog_path=ROOT / "providers.yaml",
    )
    from store.prepare import prepare_store

    prepare_store(settings)
    port = free_port()
    env = {
        **os.environ,
        "SWITCHYARD_DATABASE_URL": database_url,
        "SWITCHYARD_HOME": str(home),
        "SWITCHYARD_JWT_SECRET": secret,
        "SWITCHYARD_ENCRYPTION_KEYS": settings.encryption_keys,
        "SWITCHYARD_CATALOG_PATH": str(ROOT / "providers.yaml"),
        "SWITCHYARD_TEMPORAL_ADDRESS": "127.0.0.1:1",
        # Every client connects as one principal: keep the limiter out of the way.
        "SWITCHYARD_RATE_LIMIT_READ": "10000000/minute",
        "SWITCHYARD_RATE_LIMIT_DECIDE": "10000000/minute",
        "SWITCHYARD_RATE_LIMIT_CONTROL": "10000000/minute",
    }
    engine = make_engine(database_url, pool_size=2)
    sessions = make_session_factory(engine)
    log_path = home / "api.log"
    python = str(ROOT / ".venv" / "bin" / "python")
    results: list[LevelResult] = []
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [python, "-m", "switchyard", "api", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for_health(f"http://127.0.0.1:{port}", process)
            token = issue_token(settings, subject="bench", roles=[Role.viewer], ttl=7200)
            uri = f"ws://127.0.0.1:{port}{PATH}"
            for clients in levels:
                result = run_level(args, uri, token, sessions, process.pid, clients)
                results.append(result)
                print(
                    f"{clients} clients: p95 {result.percentile(95):.1f} ms, "
                    f"{result.report.complete}/{clients} complete",
                    file=sys.stderr,
                )
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            engine.dispose()
            if not args.keep_db:
                drop_database(args.admin_url, DATABASE)
    print(markdown(results, args))
    if results:
        median = statistics.median(r.percentile(95) for r in results)
        print(f"\nMedian p95 over the levels: {median:.1f} ms")
    print(f"\nCommand: `{command_line}`")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
