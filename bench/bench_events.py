"""Live events on PostgreSQL: commit-to-client latency, and how many clients one API serves.

Creates a fresh database, starts one API process (`switchyard api`) per server under test, and
for each client count (`--clients 100,250,500`) and each server in turn: connects that many
WebSocket clients to `/events` (from client processes of this script, bench/events_clients.py),
then a writer thread here commits one event per transaction at `--rate` events/s for
`--duration` seconds. Latency runs from the writer calling COMMIT to a client having read the
event (wall clock: writer and clients share the machine), so it includes the commit itself,
the NOTIFY, the API's read and fan-out, and the client.

`--before DIR` adds a second API run from another checkout (e.g. the commit before a change,
in a temporary worktree) on the same database; the two are measured alternately, level by
level, in one run, so the machine's load falls on both alike. `--compressed-too` adds this
checkout's API once more with `SWITCHYARD_EVENTS_COMPRESSION=true`.

A level is "served" when every client received every event, in order, none was closed as
too slow, and the p95 latency stays under `--served-p95-ms`. The load generator (client
processes and writer) runs on the same machine as the API and PostgreSQL, so its CPU is part
of the budget; the table says how the CPU was split.

    .venv/bin/python -m bench.bench_events                         # 100, 250, 500 clients
    .venv/bin/python -m bench.bench_events --before /tmp/before --compressed-too
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import resource
import secrets
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from api.auth import Role, issue_token
from bench.bench_http import (
    drop_database,
    free_port,
    fresh_database,
    postgres_cpu_seconds,
    tree_cpu_seconds,
    wait_for_health,
)
from bench.events_clients import ClientReport, EventsClient, open_client
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


@dataclass(frozen=True)
class ApiServer:
    """One API process under test."""

    name: str
    pid: int
    port: int


@dataclass
class LevelResult:
    """One client count's figures on one server."""

    server: str
    clients: int
    events: int
    seconds: float
    report: ClientReport
    latencies_ms: list[float]
    api_cpu: float
    postgres_cpu: float
    writer_cpu: float
    writing_seconds: float  # how long the writer took to commit the events
    transactions: int  # how many transactions they took (one each while the writer keeps up)

    def percentile(self, p: float) -> float:
        """Latency percentile in milliseconds (nearest rank)."""
        return nearest_rank(self.latencies_ms, p)


# ---- clients (in their own processes) -------------------------------------------------


def client_process(
    target: tuple[str, int, str, str],
    count: int,
    expect: tuple[int, int],
    options: tuple[bool, float],
    ready: Queue[int],
    go: Any,
    results: Queue[ClientReport],
) -> None:
    """Connect `count` clients, wait for `go`, receive events first..last, report.

    `target`: host, port, path, token. `options`: whether to offer compression, and how long
    to wait for the events at most.
    """
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    report = asyncio.run(_clients(target, count, expect, options, ready, go))
    report.cpu_seconds = _own_cpu() - report.cpu_seconds  # since `go`
    results.put(report)


async def _clients(
    target: tuple[str, int, str, str],
    count: int,
    expect: tuple[int, int],
    options: tuple[bool, float],
    ready: Queue[int],
    go: Any,
) -> ClientReport:
    host, port, path, token = target
    compression, timeout = options
    report = ClientReport()
    clients: list[EventsClient] = []
    protocols = [SUBPROTOCOL, f"bearer.{token}"]
    for start in range(0, count, CONNECT_BATCH):
        batch = range(start, min(count, start + CONNECT_BATCH))
        clients += await asyncio.gather(
            *(
                open_client(
                    host,
                    port,
                    path,
                    protocols,
                    compression,
                    expect,
                    index < SAMPLED_PER_PROCESS,
                    report,
                )
                for index in batch
            )
        )
    report.connected = len(clients)
    ready.put(report.connected)
    await asyncio.to_thread(go.wait)
    report.cpu_seconds = _own_cpu()
    done, _ = await asyncio.wait([c.finished for c in clients], timeout=timeout)
    for client in clients:
        outcome = client.finished.result() if client.finished in done else "timeout"
        if outcome == "complete":
            report.complete += 1
        elif outcome == "too_slow":
            report.too_slow += 1
        else:
            report.failed += 1
        client.close()
    await asyncio.sleep(0.5)  # let the close frames go out
    return report


# ---- writer -------------------------------------------------------------------------------


def write_events(
    sessions: sessionmaker[Session], rate: float, total: int, commits: dict[int, float]
) -> int:
    """Commit events open loop at `rate`, one per transaction while the writer keeps up; when
    a commit took longer than the gap, the events that fell due meanwhile go in the next
    transaction together, so the rate holds on a machine whose commits are slow. Records when
    COMMIT was called for each event; returns the number of transactions."""
    started = time.monotonic()
    n = 0
    transactions = 0
    while n < total:
        pause = started + n / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        due = int((time.monotonic() - started) * rate) + 1  # events due by now
        upto = min(total, max(n + 1, due))
        with sessions() as session:
            session.begin()
            drafts = [
                publish(session, "enhanced_coordination_completed", _payload(k), service="stripe")
                for k in range(n, upto)
            ]
            called = time.time()
            session.commit()
        for draft in drafts:
            assert draft.id is not None
            commits[draft.id] = called
        n = upto
        transactions += 1
    return transactions


def _payload(n: int) -> dict[str, Any]:
    """An enhanced_coordination_completed payload as execute-coordination writes it."""
    return {
        "coordinationId": f"coordination_bench_{n}",
        "serviceName": "stripe",
        "selectedProvider": "Stripe Primary (US East)",
        "coordinationTime": 45,
        "confidenceScore": 95,
        "backendIntegrated": True,
        "costSavings": 0.071,
        "performanceGain": 81.25,
    }


# ---- one level ------------------------------------------------------------------------


def run_level(
    args: argparse.Namespace,
    api: ApiServer,
    token: str,
    sessions: sessionmaker[Session],
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
            args=(
                ("127.0.0.1", api.port, PATH, token),
                share,
                (first, last),
                options,
                ready,
                go,
                results,
            ),
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
    api_before, pg_before = tree_cpu_seconds(api.pid), postgres_cpu_seconds()
    writer_before = _own_cpu()
    go.set()
    started = time.monotonic()
    transactions: list[int] = []
    writer = threading.Thread(
        target=lambda: transactions.append(write_events(sessions, args.rate, total, commits)),
        name="writer",
    )
    writer.start()
    writer.join()
    writing = time.monotonic() - started
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
        merged.in_order += part.in_order
        merged.compressed += part.compressed
        merged.samples += part.samples
        merged.cpu_seconds += part.cpu_seconds
    latencies = [(seen - commits[i]) * 1000 for i, seen in merged.samples if i in commits]
    return LevelResult(
        server=api.name,
        clients=clients,
        events=total,
        seconds=elapsed,
        report=merged,
        latencies_ms=latencies,
        api_cpu=tree_cpu_seconds(api.pid) - api_before,
        postgres_cpu=postgres_cpu_seconds() - pg_before,
        writer_cpu=_own_cpu() - writer_before,
        writing_seconds=writing,
        transactions=transactions[0] if transactions else 0,
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
        f"{args.rate:g} events/s for {args.duration:g} s per level and server, one API process "
        f"each (`switchyard api`), {args.client_processes} client process(es), clients "
        f"{'offering' if args.compression else 'not offering'} permessage-deflate; served = "
        f"every client got every event in order, none closed as too slow, "
        f"p95 <= {args.served_p95_ms:g} ms.",
        "",
        "| server | clients | events/s written | transactions | delivered | in order "
        "| complete | too slow "
        "| failed | deflate "
        "| p50 ms | p95 ms | max ms | API CPU % | API CPU µs/delivery | PG CPU % "
        "| clients CPU % | served |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        rep, seconds = r.report, r.seconds
        lines.append(
            f"| {r.server} | {r.clients} | {r.events / r.writing_seconds:.0f} | {r.transactions} "
            f"| {rep.received:,} / {r.clients * r.events:,} "
            f"| {rep.in_order:,} | {rep.complete} | {rep.too_slow} | {rep.failed} "
            f"| {rep.compressed} "
            f"| {r.percentile(50):.1f} | {r.percentile(95):.1f} "
            f"| {max(r.latencies_ms, default=float('nan')):.1f} "
            f"| {100 * r.api_cpu / seconds:.0f} | {1e6 * r.api_cpu / max(rep.received, 1):.1f} "
            f"| {100 * r.postgres_cpu / seconds:.0f} "
            f"| {100 * rep.cpu_seconds / seconds:.0f} "
            f"| {'yes' if served(r, args.served_p95_ms) else 'no'} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description="Live event latency and WebSocket fan-out.")
    parser.add_argument(
        "--clients", default="100,250,500", help="comma-separated client counts, one level each"
    )
    parser.add_argument("--rate", type=float, default=100.0, help="events committed per second")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of events per level")
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument(
        "--compression",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="clients offer permessage-deflate, as browsers do",
    )
    parser.add_argument(
        "--before",
        type=Path,
        help="a checkout to measure too (its API runs this venv's Python on its own code)",
    )
    parser.add_argument(
        "--compressed-too",
        action="store_true",
        help="also measure this checkout with SWITCHYARD_EVENTS_COMPRESSION=true",
    )
    parser.add_argument("--served-p95-ms", type=float, default=250.0)
    parser.add_argument(
        "--admin-url",
        default=os.environ.get("BENCH_ADMIN_URL", DEFAULT_ADMIN_URL),
        help="a PostgreSQL URL allowed to create databases",
    )
    parser.add_argument("--keep-db", action="store_true")
    return parser.parse_args(argv)


def start_api(
    tree: Path, env: dict[str, str], log_path: Path
) -> tuple[subprocess.Popen[bytes], int]:
    """`switchyard api` run from `tree` (its code first on the path) on a free port."""
    port = free_port()
    python = str(ROOT / ".venv" / "bin" / "python")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [python, "-m", "switchyard", "api", "--host", "127.0.0.1", "--port", str(port)],
            cwd=tree,
            env={**env, "PYTHONPATH": str(tree)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_health(f"http://127.0.0.1:{port}", process)
    except Exception:
        stop_api(process)
        raise
    return process, port


def stop_api(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the API's process group; SIGKILL it if it lingers."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def main(argv: list[str] | None = None) -> int:
    """Run every level on every server, alternating, and print the table."""
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
    env = {
        **os.environ,
        "SWITCHYARD_DATABASE_URL": database_url,
        "SWITCHYARD_HOME": str(home),
        "SWITCHYARD_JWT_SECRET": secret,
        "SWITCHYARD_ENCRYPTION_KEYS": settings.encryption_keys,
        "SWITCHYARD_CATALOG_PATH": str(ROOT / "providers.yaml"),
        "SWITCHYARD_TEMPORAL_ADDRESS": "127.0.0.1:1",
        "SWITCHYARD_ACCESS_LOG": "false",
        # Every client connects as one principal: keep the limiter out of the way.
        "SWITCHYARD_RATE_LIMIT_READ": "10000000/minute",
        "SWITCHYARD_RATE_LIMIT_DECIDE": "10000000/minute",
        "SWITCHYARD_RATE_LIMIT_CONTROL": "10000000/minute",
    }
    planned: list[tuple[str, Path, dict[str, str]]] = []
    if args.before is not None:
        planned.append(("before", args.before.resolve(), env))
    planned.append(("after", ROOT, env))
    if args.compressed_too:
        planned.append(
            ("after, compression on", ROOT, {**env, "SWITCHYARD_EVENTS_COMPRESSION": "true"})
        )
    engine = make_engine(database_url, pool_size=2)
    sessions = make_session_factory(engine)
    results: list[LevelResult] = []
    processes: list[subprocess.Popen[bytes]] = []
    try:
        servers: list[ApiServer] = []
        for index, (name, tree, server_env) in enumerate(planned):
            process, port = start_api(tree, server_env, home / f"api-{index}.log")
            processes.append(process)
            servers.append(ApiServer(name, process.pid, port))
        token = issue_token(settings, subject="bench", roles=[Role.viewer], ttl=7200)
        for number, clients in enumerate(levels):
            # Alternate which server goes first, so neither always meets a warmer machine.
            for api in servers if number % 2 == 0 else servers[::-1]:
                result = run_level(args, api, token, sessions, clients)
                results.append(result)
                print(
                    f"{api.name}, {clients} clients: p95 {result.percentile(95):.1f} ms, "
                    f"{result.report.complete}/{clients} complete",
                    file=sys.stderr,
                )
    finally:
        for process in processes:
            stop_api(process)
        engine.dispose()
        if not args.keep_db:
            drop_database(args.admin_url, DATABASE)
    order = {name: index for index, (name, _, _) in enumerate(planned)}
    results.sort(key=lambda r: (r.clients, order[r.server]))
    print(markdown(results, args))
    print(f"\nload average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"\nCommand: `{command_line}`")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
