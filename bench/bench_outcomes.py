"""Outcome ingestion throughput on PostgreSQL: the store path directly, and over HTTP.

Each batch holds 100 outcomes for the nodes of one service (1 % failing, latencies around the
catalog's), so breakers stay closed and every batch does the full work: bulk insert, lock the
touched node_health rows, read their windows, re-score, write, commit. Writers are spread over
the services, as many clients reporting for different providers would be.

- store: `record_outcomes` in one transaction per batch, from P processes x T threads;
- http: POST /outcomes against the API (uvicorn, W worker processes), C keep-alive
  connections in a closed loop, bodies serialised up front.

    .venv/bin/python -m bench.bench_outcomes                     # both, 20 s each
    .venv/bin/python -m bench.bench_outcomes --mode store --processes 2 --threads 2
    .venv/bin/python -m bench.bench_outcomes --mode http --workers 2 --connections 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
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
from pathlib import Path
from typing import Any

from api.auth import Role, issue_token
from bench.bench_http import (
    drop_database,
    free_port,
    fresh_database,
    postgres_cpu_seconds,
    process_cpu_seconds,
    tree_cpu_seconds,
    wait_for_health,
)
from bench.loadgen import RawConnection
from bench.stats import nearest_rank
from store.catalog import CatalogSpec, load_catalog_file
from switchyard.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DATABASE = "switchyard_bench_outcomes"
PATH = "/api/v1/enhanced-traffic-coordination/outcomes"
BATCH = 100  # outcomes per batch unless --batch-size says otherwise


@dataclass
class Tally:
    """Batches written and their latencies (seconds)."""

    batches: int = 0
    outcomes: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    first_error: str = ""

    def add(self, other: Tally) -> None:
        """Merge another tally into this one."""
        self.batches += other.batches
        self.outcomes += other.outcomes
        self.errors += other.errors
        self.latencies.extend(other.latencies)
        self.first_error = self.first_error or other.first_error

    def percentile_ms(self, q: float) -> float:
        """The q-th percentile batch latency in milliseconds."""
        return 1000 * nearest_rank(self.latencies, q)


def backend_cpu(database: str) -> dict[int, float]:
    """CPU so far of each PostgreSQL backend serving `database` (its process title names it).

    The machine's PostgreSQL serves other databases too; only these backends are this run's.
    """
    found: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
            # "postgres: user database host(port) state"
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").split()
        except OSError:
            continue
        if database.encode() in title:
            found[int(entry.name)] = process_cpu_seconds(int(entry.name))
    return found


def backend_cpu_since(database: str, before: dict[int, float]) -> float:
    """CPU the database's backends used since `before` (backends that exited meanwhile lost)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in backend_cpu(database).items())


def service_nodes(catalog: CatalogSpec) -> list[tuple[str, list[tuple[str, float]]]]:
    """Per service, its nodes with their catalog latency."""
    return [
        (name, [(n.id, n.latency_ms) for n in spec.nodes])
        for name, spec in catalog.services.items()
    ]


def batch_items(
    nodes: list[tuple[str, float]], rng: random.Random, size: int = BATCH
) -> list[tuple[str, bool, float]]:
    """`size` (node, success, latency) for the nodes of one service: 1 % failing."""
    items = []
    for i in range(size):
        node, latency = nodes[i % len(nodes)]
        items.append((node, rng.random() >= 0.01, max(1.0, rng.gauss(latency, latency / 5))))
    return items


# ---- store path ----


def _store_writer(
    url: str,
    nodes: list[tuple[str, float]],
    seed: int,
    window: tuple[float, float, int],
    tally: Tally,
) -> None:
    from routing.health import MonitoringConfig
    from store.base import utcnow
    from store.db import make_engine, make_session_factory, transaction
    from store.outcomes import OutcomeReport, record_outcomes

    engine = make_engine(url, pool_size=2)
    sessions = make_session_factory(engine)
    config = MonitoringConfig()
    rng = random.Random(seed)
    start, stop, size = window
    try:
        while time.time() < stop:
            items = batch_items(nodes, rng, size)
            began = time.perf_counter()
            now = utcnow()
            reports = [OutcomeReport(n, ok, latency, now) for n, ok, latency in items]
            try:
                with transaction(sessions) as session:
                    record_outcomes(session, reports, now, config)
            except Exception as exc:  # counted and shown, the run goes on
                tally.errors += 1
                tally.first_error = tally.first_error or repr(exc)
                continue
            if time.time() >= start:
                tally.batches += 1
                tally.outcomes += len(reports)
                tally.latencies.append(time.perf_counter() - began)
    finally:
        engine.dispose()


def _store_process(
    url: str,
    assignments: list[list[tuple[str, float]]],
    window: tuple[float, float, int],
    queue: Any,
) -> None:
    tallies = [Tally() for _ in assignments]
    threads = [
        threading.Thread(target=_store_writer, args=(url, nodes, 1000 + i, window, tallies[i]))
        for i, nodes in enumerate(assignments)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = Tally()
    for tally in tallies:
        total.add(tally)
    cpu = os.times()
    queue.put((total, cpu.user + cpu.system))


def run_store(url: str, catalog: CatalogSpec, args: argparse.Namespace) -> dict[str, Any]:
    """P processes x T threads calling record_outcomes; figures over the measured window."""
    services = service_nodes(catalog)
    writers = args.processes * args.threads
    # One service per writer (as clients report on their own providers); --hot: all on one.
    assignments = [services[0 if args.hot else i % len(services)][1] for i in range(writers)]
    start = time.time() + 2.0 + args.warmup  # 2 s for the processes to start
    stop = start + args.duration
    queue: Any = multiprocessing.get_context("fork").Queue()
    pg_before, backends_before = postgres_cpu_seconds(), backend_cpu(DATABASE)
    began = time.time()  # the writers write (unmeasured) from their start: CPU counts from here
    processes = [
        multiprocessing.get_context("fork").Process(
            target=_store_process,
            args=(url, assignments[p :: args.processes], (start, stop, args.batch_size), queue),
        )
        for p in range(args.processes)
    ]
    for process in processes:
        process.start()
    # PostgreSQL's figures are read at the end of the window, while the writers' backends
    # live: they exit when the writers dispose of their engines.
    time.sleep(max(0.0, stop - time.time()))
    postgres = backend_cpu_since(DATABASE, backends_before)
    everything = postgres_cpu_seconds() - pg_before
    results: list[tuple[Tally, float]] = []
    deadline = stop + 60.0
    while len(results) < len(processes):
        try:
            results.append(queue.get(timeout=1.0))
        except Exception:  # queue.Empty: check that the writers are still alive
            dead = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
            if dead or time.time() > deadline:
                for process in processes:
                    process.kill()
                raise RuntimeError(f"writer processes failed (exit codes {dead})") from None
    for process in processes:
        process.join()
    total, client_cpu = Tally(), 0.0
    for tally, cpu in results:
        total.add(tally)
        client_cpu += cpu
    window = stop - began
    return {
        "mode": f"store, {args.processes} process(es) x {args.threads} thread(s)"
        + (", one hot service" if args.hot else ""),
        "tally": total,
        "rate": total.outcomes / args.duration,
        "window": window,
        "warmup": window - args.duration,
        "cpu": {
            "writers": client_cpu,
            "PostgreSQL": postgres,
            "all PostgreSQL": everything,
        },
    }


# ---- HTTP ----


async def _http_connection(
    port: int,
    head: bytes,
    bodies: list[bytes],
    window: tuple[float, float, int],
    tally: Tally,
) -> None:
    start, stop, size = window
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    connection = RawConnection(reader, writer)
    i = 0
    try:
        while time.time() < stop:
            body = bodies[i % len(bodies)]
            i += 1
            began = time.perf_counter()
            status, answer = await connection.send(head, body)
            if status != 202:
                tally.errors += 1
                tally.first_error = tally.first_error or f"{status}: {answer[:200]!r}"
                continue
            if time.time() >= start:
                tally.batches += 1
                tally.outcomes += size
                tally.latencies.append(time.perf_counter() - began)
    finally:
        connection.close()


async def _http_load(
    port: int, token: str, bodies: list[list[bytes]], args: argparse.Namespace
) -> Tally:
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        "Content-Length: "
    ).encode()
    start = time.time() + args.warmup
    stop = start + args.duration
    tallies = [Tally() for _ in range(args.connections)]
    await asyncio.gather(
        *(
            _http_connection(
                port,
                head,
                bodies[0 if args.hot else i % len(bodies)],
                (start, stop, args.batch_size),
                tallies[i],
            )
            for i in range(args.connections)
        )
    )
    total = Tally()
    for tally in tallies:
        total.add(tally)
    return total


STARTED = b"Application startup complete."


def wait_for_workers(
    log_path: Path, workers: int, process: subprocess.Popen[bytes], timeout: float = 120.0
) -> float:
    """Wait until every uvicorn worker logged the end of its start-up; seconds waited."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"the API exited with {process.returncode} while starting")
        if log_path.read_bytes().count(STARTED) >= workers:
            return time.monotonic() - began
        time.sleep(0.1)
    raise RuntimeError(f"not every API worker started within {timeout:.0f} s")


def run_http(
    url: str, catalog: CatalogSpec, settings: Settings, args: argparse.Namespace
) -> dict[str, Any]:
    """POST /outcomes against uvicorn workers; closed loop over keep-alive connections."""
    rng = random.Random(7)
    services = service_nodes(catalog)
    # Per service, a few bodies to cycle through; each connection reports on one service.
    bodies = [
        [
            json.dumps(
                {
                    "outcomes": [
                        {"nodeId": n, "success": ok, "latencyMs": round(latency, 1)}
                        for n, ok, latency in batch_items(nodes, rng, args.batch_size)
                    ]
                }
            ).encode()
            for _ in range(8)
        ]
        for _, nodes in services
    ]
    port = free_port()
    env = {
        **os.environ,
        "SWITCHYARD_DATABASE_URL": url,
        "SWITCHYARD_HOME": str(settings.home),
        "SWITCHYARD_JWT_SECRET": settings.jwt_secret,
        "SWITCHYARD_CATALOG_PATH": str(ROOT / "providers.yaml"),
        "SWITCHYARD_DB_POOL_SIZE": "8",
        "SWITCHYARD_TEMPORAL_ADDRESS": "127.0.0.1:1",  # ingestion never touches Temporal
        "SWITCHYARD_RATE_LIMIT_ENABLED": "false",  # measure ingestion, not the limiter
    }
    command = [
        str(ROOT / ".venv" / "bin" / "python"),
        "-m",
        "uvicorn",
        "api.app:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(args.workers),
        "--log-level",
        "info",  # uvicorn's own lines only: each worker says when its start-up is complete
        "--no-access-log",
    ]
    log_path = settings.home / "api.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            wait_for_health(f"http://127.0.0.1:{port}", process)
            # /health answers as soon as one worker is up; on a busy machine the others can
            # take seconds more to start, and would be missing from the measured window.
            waited = wait_for_workers(log_path, args.workers, process)
            token = issue_token(settings, subject="bench", roles=[Role.operator], ttl=3600)
            api_before, pg_before = tree_cpu_seconds(process.pid), postgres_cpu_seconds()
            backends_before = backend_cpu(DATABASE)
            client_before = time.process_time()
            tally = asyncio.run(_http_load(port, token, bodies, args))
            window = args.duration + args.warmup
            cpu = {
                "API": tree_cpu_seconds(process.pid) - api_before,
                "PostgreSQL": backend_cpu_since(DATABASE, backends_before),
                "all PostgreSQL": postgres_cpu_seconds() - pg_before,
                "client": time.process_time() - client_before,
            }
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    return {
        "mode": f"http, {args.workers} uvicorn worker(s), {args.connections} connections"
        + (", one hot service" if args.hot else ""),
        "tally": tally,
        "rate": tally.outcomes / args.duration,
        "window": window,
        "warmup": args.warmup,
        "cpu": cpu,
        "note": f"every worker ready {waited:.1f} s after the first answered /health",
    }


def row(result: dict[str, Any]) -> str:
    """One markdown table row."""
    tally: Tally = result["tally"]
    mean = statistics.fmean(tally.latencies) * 1000 if tally.latencies else float("nan")
    return (
        f"| {result['mode']} | {result['rate']:,.0f} | {tally.batches} | {tally.errors} "
        f"| {mean:.1f} | {tally.percentile_ms(50):.1f} | {tally.percentile_ms(99):.1f} "
        f"| {cpu_figures(result)} |"
    )


def cpu_figures(result: dict[str, Any]) -> str:
    """Each party's CPU in cores over the run, and in ms per batch measured.

    CPU is read over warm-up and measured window together, batches over the measured window
    only: per batch, the CPU is scaled to the measured window's share.
    """
    tally: Tally = result["tally"]
    window: float = result["window"]
    share = (window - result["warmup"]) / window
    parts = []
    for name, seconds in result["cpu"].items():
        per_batch = 1000 * seconds * share / tally.batches if tally.batches else float("nan")
        parts.append(f"{name} {seconds / window:.2f} ({per_batch:.1f} ms/batch)")
    return ", ".join(parts)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description="Outcome ingestion throughput (PostgreSQL).")
    parser.add_argument("--mode", choices=["store", "http", "both"], default="both")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first")
    parser.add_argument("--batch-size", type=int, default=BATCH, help="outcomes per batch")
    parser.add_argument(
        "--hot", action="store_true", help="every writer reports on the same service's nodes"
    )
    parser.add_argument("--processes", type=int, default=2, help="store: writer processes")
    parser.add_argument("--threads", type=int, default=2, help="store: threads per process")
    parser.add_argument("--workers", type=int, default=2, help="http: uvicorn workers")
    parser.add_argument("--connections", type=int, default=8, help="http: connections")
    parser.add_argument(
        "--admin-url",
        default=os.environ.get("BENCH_ADMIN_URL", DEFAULT_ADMIN_URL),
        help="a PostgreSQL URL allowed to create databases",
    )
    parser.add_argument("--keep-db", action="store_true", help="keep the database afterwards")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark(s) and print a markdown table."""
    args = parse_args(argv)
    command_line = " ".join(
        [".venv/bin/python -m bench.bench_outcomes", *map(shlex.quote, sys.argv[1:])]
    )
    catalog = load_catalog_file(ROOT / "providers.yaml")
    results = []
    for mode in ("store", "http") if args.mode == "both" else (args.mode,):
        url = fresh_database(args.admin_url, DATABASE)
        settings = Settings(
            home=Path(tempfile.mkdtemp(prefix="switchyard-bench-")),
            database_url=url,
            jwt_secret=secrets.token_urlsafe(48),
            catalog_path=ROOT / "providers.yaml",
        )
        from store.prepare import prepare_store

        prepare_store(settings)
        try:
            if mode == "store":
                results.append(run_store(url, catalog, args))
            else:
                results.append(run_http(url, catalog, settings, args))
        finally:
            if not args.keep_db:
                drop_database(args.admin_url, DATABASE)
    print(
        "| path | outcomes/s | batches | errors | mean ms | p50 ms | p99 ms "
        "| CPU (1.0 = one core; ms of CPU per batch) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for result in results:
        print(row(result))
    print(
        f"\nBatches of {args.batch_size}, {args.duration:g} s measured after "
        f"{args.warmup:g} s warm-up, {os.cpu_count()} CPUs, PostgreSQL on the same machine."
    )
    for result in results:
        if "note" in result:
            print(f"{result['mode']}: {result['note']}.")
    for result in results:
        if result["tally"].first_error:
            print(f"First error ({result['mode']}): {result['tally'].first_error}")
    print(f"\nCommand: `{command_line}`")
    return 0 if all(r["tally"].errors == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
