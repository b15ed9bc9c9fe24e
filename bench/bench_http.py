"""End-to-end HTTP benchmark of execute-coordination on PostgreSQL.

Creates a fresh database, starts the API as a subprocess, waits for /health, sends requests
at a fixed arrival rate (bench/loadgen.py) and prints a markdown table with the command that
produced it. The load generator runs on the same machine, so its CPU is part of the budget.

    .venv/bin/python -m bench.bench_http                       # 500 req/s, 20 s after 3 s
    .venv/bin/python -m bench.bench_http --server uvicorn --workers 2 --no-access-log
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from api.auth import Role, issue_token
from bench.loadgen import LoadResult, install_fast_loop, run_load
from switchyard.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DATABASE = "switchyard_bench"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fresh_database(admin_url: str, name: str) -> str:
    """Drop and create `name` on the server of `admin_url`; return its URL."""
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, name: str) -> None:
    """Drop the benchmark database."""
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def server_command(args: argparse.Namespace, port: int) -> list[str]:
    """How the API is started: the project's CLI, or uvicorn directly for tuning options."""
    python = str(ROOT / ".venv" / "bin" / "python")
    if args.server == "cli":
        return [python, "-m", "switchyard", "api", "--host", "127.0.0.1", "--port", str(port)]
    command = [
        python,
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
        "--loop",
        args.loop,
        "--http",
        args.http,
        "--log-level",
        "warning",
    ]
    if args.no_access_log:
        command.append("--no-access-log")
    return command


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its reaped children, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    # utime, stime, cutime, cstime are fields 14-17 of stat; index 11.. after the name.
    return sum(int(v) for v in fields[11:15]) / ticks


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a process and its live children (uvicorn workers)."""
    total = process_cpu_seconds(pid)
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return total + sum(tree_cpu_seconds(int(child)) for child in children)


def cpu_times() -> list[int]:
    """The machine's aggregate CPU times in ticks (/proc/stat: user ... steal)."""
    with open("/proc/stat") as stat:
        return [int(v) for v in stat.readline().split()[1:9]]


def steal_share(before: list[int], after: list[int]) -> float:
    """Share of the machine's CPU time taken by the hypervisor for other guests (steal)."""
    deltas = [b - a for a, b in zip(before, after, strict=True)]
    return deltas[7] / sum(deltas) if sum(deltas) else 0.0


def postgres_cpu_seconds() -> float:
    """CPU used so far by every postgres process on this machine (read-only /proc scan)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() == "postgres":
                total += process_cpu_seconds(int(entry.name))
        except OSError:
            continue
    return total


def batch_summary(url: str, token: str) -> str:
    """How the API's writer batched the decisions (its /metrics histograms), in one line.

    With several workers, each scrape reaches one process: the figures are that one's.
    """
    try:
        text = httpx.get(
            f"{url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10
        ).text
    except httpx.HTTPError as exc:
        return f"Decision batches: /metrics unreadable ({exc.__class__.__name__})."
    values: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name.startswith(("switchyard_decision_batch_size_", "switchyard_decision_batch_sec")):
            values[name] = values.get(name, 0.0) + float(value)
    batches = values.get("switchyard_decision_batch_size_count", 0.0)
    if not batches:
        return "Decision batches: none reported."
    decisions = values.get("switchyard_decision_batch_size_sum", 0.0)
    seconds = sum(
        v for k, v in values.items() if k.startswith("switchyard_decision_batch_seconds_sum")
    )
    return (
        f"Decision batches (one process): {batches:.0f}, {decisions / batches:.1f} decisions "
        f"each on average, {seconds / batches * 1000:.2f} ms each on average."
    )


def wait_for_health(url: str, process: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    """Wait until the API answers /health (any status but a connection error)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the API exited with {process.returncode} before it was ready")
        try:
            response = httpx.get(f"{url}/api/v1/enhanced-traffic-coordination/health", timeout=10)
            if response.status_code in (200, 503):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the API did not answer /health within {timeout:.0f} s")


def markdown(
    result: LoadResult, args: argparse.Namespace, cpu: dict[str, float], batches: str
) -> str:
    """The result as a markdown table."""
    s = result.summary()
    window = cpu["elapsed"]
    config = (
        f"server={args.server}"
        + (
            f" workers={args.workers} loop={args.loop} http={args.http}"
            f" access_log={'off' if args.no_access_log else 'on'}"
            if args.server == "uvicorn"
            else " (1 process, uvicorn defaults, access log on)"
        )
        + f", client={args.client}, connections<={args.connections}, bodies={args.bodies}"
    )
    rows = [
        "| target req/s | achieved req/s | answered | non-2xx | transport errors | unanswered "
        "| p50 ms | p95 ms | p99 ms | p99.9 ms | max ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {s['target_rate']:g} | {s['achieved_rate']} | {s['measured_requests']} "
        f"| {s['non_2xx']} | {s['transport_errors']} | {s['unfinished']} | {s['p50_ms']} "
        f"| {s['p95_ms']} | {s['p99_ms']} | {s['p999_ms']} | {s['max_ms']} |",
        "",
        f"Configuration: {config}; {result.duration:g} s measured after a "
        f"{result.warmup:g} s warm-up, {os.cpu_count()} CPUs.",
        f"CPU over the {window:.0f} s run (1.0 = one core busy): API "
        f"{cpu['api'] / window:.2f}, PostgreSQL {cpu['postgres'] / window:.2f}, load generator "
        f"{cpu['client'] / window:.2f}; stolen by the hypervisor: {cpu['steal']:.0%} of the "
        "machine. Load generator start lag p99: "
        f"{s['dispatch_lag_p99_ms']} ms (included in the latencies).",
        "Slowest second: p99 {1:.1f} ms in second {0:.0f} of the measured window.".format(
            *result.worst_second()
        ),
        batches,
    ]
    if result.statuses:
        rows.append(f"Statuses: {dict(sorted(result.statuses.items()))}.")
    if result.sample_error:
        rows.append(f"First error: {result.sample_error}")
    return "\n".join(rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description="HTTP benchmark of execute-coordination.")
    parser.add_argument("--rate", type=float, default=500.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw")
    parser.add_argument("--connections", type=int, default=64, help="client connection cap")
    parser.add_argument("--bodies", choices=["seed", "plain", "mixed"], default="seed")
    parser.add_argument(
        "--server",
        choices=["cli", "uvicorn"],
        default="cli",
        help="cli: `python -m switchyard api`; uvicorn: uvicorn with options",
    )
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto")
    parser.add_argument("--http", choices=["auto", "h11", "httptools"], default="auto")
    parser.add_argument("--no-access-log", action="store_true")
    parser.add_argument("--pool-size", type=int, default=10, help="SWITCHYARD_DB_POOL_SIZE")
    parser.add_argument(
        "--admin-url",
        default=os.environ.get("BENCH_ADMIN_URL", DEFAULT_ADMIN_URL),
        help="a PostgreSQL URL allowed to create databases",
    )
    parser.add_argument("--keep-db", action="store_true", help="keep switchyard_bench afterwards")
    parser.add_argument(
        "--server-log",
        type=Path,
        default=None,
        help="where the API's output goes (default: a temp file)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    args = parse_args(argv)
    command_line = " ".join(
        [".venv/bin/python -m bench.bench_http", *map(shlex.quote, sys.argv[1:])]
    )
    database_url = fresh_database(args.admin_url, DATABASE)
    home = Path(tempfile.mkdtemp(prefix="switchyard-bench-"))
    secret = secrets.token_urlsafe(48)
    settings = Settings(
        home=home,
        database_url=database_url,
        jwt_secret=secret,
        catalog_path=ROOT / "providers.yaml",
    )
    # Migrate and load the catalog once, so that several workers never race to do it.
    from store.prepare import prepare_store

    prepare_store(settings)
    port = free_port()
    env = {
        **os.environ,
        "SWITCHYARD_DATABASE_URL": database_url,
        "SWITCHYARD_HOME": str(home),
        "SWITCHYARD_JWT_SECRET": secret,
        "SWITCHYARD_CATALOG_PATH": str(ROOT / "providers.yaml"),
        "SWITCHYARD_DB_POOL_SIZE": str(args.pool_size),
        # Temporal is not needed on the hot path; point it nowhere fast.
        "SWITCHYARD_TEMPORAL_ADDRESS": "127.0.0.1:1",
        # One principal sends everything: keep the per-principal limiter on (its cost is part
        # of the hot path) but far above the offered load, so no request is refused by it.
        "SWITCHYARD_RATE_LIMIT_DECIDE": "10000000/minute",
        "SWITCHYARD_RATE_LIMIT_CONTROL": "10000000/minute",
        "SWITCHYARD_RATE_LIMIT_READ": "10000000/minute",
    }
    log_path = args.server_log or home / "api.log"
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            server_command(args, port),
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for_health(url, process)
            token = issue_token(settings, subject="bench", roles=[Role.operator], ttl=3600)
            install_fast_loop()
            api_cpu, pg_cpu = tree_cpu_seconds(process.pid), postgres_cpu_seconds()
            machine = cpu_times()
            started = time.monotonic()
            result = asyncio.run(
                run_load(
                    url,
                    token,
                    rate=args.rate,
                    duration=args.duration,
                    warmup=args.warmup,
                    client=args.client,
                    max_connections=args.connections,
                    bodies=args.bodies,
                    progress=lambda line: print(line, file=sys.stderr),
                )
            )
            cpu = {
                "api": tree_cpu_seconds(process.pid) - api_cpu,
                "postgres": postgres_cpu_seconds() - pg_cpu,
                "client": result.client_cpu_seconds,
                "steal": steal_share(machine, cpu_times()),
                # An overloaded run lasts longer than planned while the backlog drains.
                "elapsed": time.monotonic() - started,
            }
            batches = batch_summary(url, token)
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            if not args.keep_db:
                drop_database(args.admin_url, DATABASE)
    print(markdown(result, args, cpu, batches))
    print(f"\nCommand: `{command_line}`")
    print(f"API log: {log_path}")
    ok = result.non_2xx == 0 and result.transport_errors == 0 and result.unfinished == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
