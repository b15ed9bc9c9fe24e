"""What the client library (clients/python) costs a caller, against the API on PostgreSQL.

Starts the API as a subprocess on a fresh database and measures, in one run:

- the cost `Switchyard.call()` adds over a bare execute-coordination request: the two are
  interleaved one for one (the bare request parses the answer and calls the same no-op
  handler; call() also classifies, queues the report and lets its background thread send
  the batches), p50 of each and the median of the pairwise differences;
- the local decision's time, while Switchyard is away: `Switchyard.decide()` as a caller
  sees it, and the local rules alone;
- the time from losing the API to the first local decision, back-to-back decisions running
  when the API process is killed (SIGKILL: connections reset and refused) or frozen
  (SIGSTOP: connections accepted, never answered, so the decision deadline decides).

    .venv/bin/python -m bench.bench_client [--calls 3000] [--losses 5]
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from switchyard_client import Switchyard
from switchyard_client.context import routing_request
from switchyard_client.core import Options
from switchyard_client.local import LocalEvidence, decide_locally

from api.auth import Role, issue_token
from bench.bench_http import (
    DEFAULT_ADMIN_URL,
    ROOT,
    drop_database,
    free_port,
    fresh_database,
    wait_for_health,
)
from bench.stats import nearest_rank
from switchyard.settings import Settings

BASE = "/api/v1/enhanced-traffic-coordination"
DATABASE = "switchyard_bench_client"
SERVICE, OPERATION = "stripe", "payment_processing"
# The README's first request, in the client's Python names and on the wire.
CONTEXT: dict[str, Any] = {
    "priority": "CRITICAL",
    "business_criticality": "REVENUE_BLOCKING",
    "remaining_budget": 1000,
    "cost_per_request_limit": 0.1,
    "current_latency": 800,
    "target_latency": 300,
}
NODES = ("stripe_primary_us_east", "stripe_secondary_us_west", "stripe_premium_emergency")


class ApiProcess:
    """The API as a subprocess on a fixed port: started, killed or frozen at will."""

    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.env, self.port, self.log = env, port, log
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it and wait until it answers."""
        python = str(ROOT / ".venv" / "bin" / "python")
        command = [python, "-m", "switchyard", "api", "--host", "127.0.0.1"]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [*command, "--port", str(self.port)],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for_health(self.url, self.process)

    def signal(self, number: signal.Signals) -> None:
        """Send a signal to the API's process group."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, number)

    def kill(self) -> None:
        """SIGKILL, as a crash: the kernel resets its connections."""
        self.signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait()
        self.process = None

    def stop(self) -> None:
        """Thaw if frozen, then kill."""
        self.signal(signal.SIGCONT)
        self.kill()


def noop(*_: object) -> str:
    """The provider call: nothing, so only routing and reporting are timed."""
    return "ok"


def added_cost(url: str, token: str, calls: int) -> dict[str, list[float]]:
    """Bare execute-coordination requests and call()s, interleaved one for one (ms)."""
    body = routing_request(SERVICE, OPERATION, CONTEXT).body
    headers = {"Authorization": f"Bearer {token}"}
    handlers: dict[str, Callable[..., str]] = dict.fromkeys(NODES, noop)
    times: dict[str, list[float]] = {"bare": [], "call": [], "paired": []}
    with httpx.Client(timeout=5.0) as http, Switchyard(url, token) as client:

        def bare() -> str:
            answer = http.post(url + BASE + "/execute-coordination", json=body, headers=headers)
            answer.raise_for_status()
            node: str = answer.json()["data"]["routingDecision"]["selectedNode"]["nodeId"]
            return handlers[node]()

        def through_client() -> str:
            return client.call(SERVICE, OPERATION, handlers, **CONTEXT)

        for _ in range(200):  # warm-up: connections, caches, the API's writer
            bare(), through_client()
        for n in range(calls):
            measured = {}
            # Alternate which goes first: neither always follows the other's request.
            for name, run in (
                (("bare", bare), ("call", through_client))
                if n % 2 == 0
                else (("call", through_client), ("bare", bare))
            ):
                started = time.perf_counter()
                run()
                measured[name] = (time.perf_counter() - started) * 1000
            times["bare"].append(measured["bare"])
            times["call"].append(measured["call"])
            times["paired"].append(measured["call"] - measured["bare"])
        if client.counters.local_decisions:
            raise RuntimeError("a call was decided locally: the API was not answering")
    return times


def local_decision_times(api: ApiProcess, token: str, count: int) -> dict[str, list[float]]:
    """Decisions while the API is away (µs): through the client, and the rules alone.

    The API is killed here; timed like bench_decide (garbage collection paused).
    """
    with Switchyard(api.url, token) as client:
        deadline = time.monotonic() + 30
        while client.catalog is None and time.monotonic() < deadline:
            time.sleep(0.05)
        copy = client.catalog
        if copy is None:
            raise RuntimeError("no catalog copy within 30 s")
        api.kill()
        if not client.decide(SERVICE, OPERATION, **CONTEXT).decided_locally:
            raise RuntimeError("the first decision after the kill was not local")
        request = routing_request(SERVICE, OPERATION, CONTEXT)
        evidence = LocalEvidence()
        runs: dict[str, Callable[[], object]] = {
            "client": lambda: client.decide(SERVICE, OPERATION, **CONTEXT),
            "rules": lambda: decide_locally(
                copy, request, None, evidence, time.monotonic(), "bench"
            ),
        }
        times: dict[str, list[float]] = {}
        for name, run in runs.items():
            for _ in range(2_000):
                run()
            samples = []
            gc.collect()
            gc.disable()
            try:
                for _ in range(count):
                    started = time.perf_counter_ns()
                    run()
                    samples.append((time.perf_counter_ns() - started) / 1000)
            finally:
                gc.enable()
            times[name] = samples
    return times


def loss_to_local(api: ApiProcess, token: str, how: str, runs: int) -> list[float]:
    """Milliseconds from losing the API to the end of the first local decision."""
    results = []
    for _ in range(runs):
        api.start()
        with Switchyard(api.url, token) as client:
            while client.catalog is None:
                time.sleep(0.02)
            lost: dict[str, float] = {}
            thread = threading.Thread(target=_lose, args=(api, how, lost))
            thread.start()
            while True:
                decision = client.decide(SERVICE, OPERATION, **CONTEXT)
                if decision.decided_locally:
                    first_local = time.perf_counter()
                    break
            thread.join()
            results.append((first_local - lost["at"]) * 1000)
        api.stop()
    return results


def _lose(api: ApiProcess, how: str, lost: dict[str, float]) -> None:
    time.sleep(random.uniform(0.3, 0.6))  # at any point of a decision in flight
    lost["at"] = time.perf_counter()
    api.signal(signal.SIGKILL if how == "kill" else signal.SIGSTOP)


def row(label: str, values: list[float], digits: int = 3) -> str:
    """A markdown row: p50, p90, p99, count."""
    p50, p90, p99 = (round(nearest_rank(values, q), digits) for q in (50, 90, 99))
    return f"| {label} | {p50} | {p90} | {p99} | {len(values)} |"


def report(
    cost: dict[str, list[float]],
    local: dict[str, list[float]],
    losses: dict[str, list[float]],
    deadline_ms: float,
) -> str:
    """The figures as markdown."""
    added = nearest_rank(cost["call"], 50) - nearest_rank(cost["bare"], 50)
    lines = [
        "| per request (ms) | p50 | p90 | p99 | n |",
        "|---|---:|---:|---:|---:|",
        row("bare execute-coordination (httpx, answer parsed, handler called)", cost["bare"]),
        row("`Switchyard.call()` (decide, handler, classify, report queued)", cost["call"]),
        row("call() - bare, request by request", cost["paired"]),
        "",
        f"Added by the client: **{added:.3f} ms** at the p50 (p50 of call() - p50 of bare), "
        f"{statistics.median(cost['paired']):.3f} ms as the median of the pairwise differences.",
        "",
        "| local decision (µs) | p50 | p90 | p99 | n |",
        "|---|---:|---:|---:|---:|",
        row("`Switchyard.decide()` while Switchyard is away", local["client"], 1),
        row("the local rules alone (`decide_locally`)", local["rules"], 1),
        "",
        "| losing the API (ms to the first local decision) | min | median | max | runs |",
        "|---|---:|---:|---:|---:|",
    ]
    for how, label in (("kill", "killed (SIGKILL)"), ("freeze", "frozen (SIGSTOP)")):
        values = losses[how]
        lines.append(
            f"| API {label} | {min(values):.1f} | {statistics.median(values):.1f} "
            f"| {max(values):.1f} | {len(values)} |"
        )
    lines.append("")
    lines.append(f"Decision deadline: {deadline_ms:.0f} ms (the client's default).")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description="Costs of the client library.")
    parser.add_argument("--calls", type=int, default=3000, help="pairs of requests timed")
    parser.add_argument("--local", type=int, default=20_000, help="local decisions timed")
    parser.add_argument("--losses", type=int, default=5, help="API losses per kind")
    parser.add_argument(
        "--admin-url",
        default=os.environ.get("BENCH_ADMIN_URL", DEFAULT_ADMIN_URL),
        help="a PostgreSQL URL allowed to create databases",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the three measurements and print the tables."""
    args = parse_args(argv)
    command_line = " ".join(
        [".venv/bin/python -m bench.bench_client", *map(shlex.quote, sys.argv[1:])]
    )
    database_url = fresh_database(args.admin_url, DATABASE)
    home = Path(tempfile.mkdtemp(prefix="switchyard-bench-client-"))
    secret = "bench-" + os.urandom(24).hex()
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
        "SWITCHYARD_CATALOG_PATH": str(ROOT / "providers.yaml"),
        "SWITCHYARD_TEMPORAL_ADDRESS": "127.0.0.1:1",  # not on the decision path
        "SWITCHYARD_ACCESS_LOG": "false",
        "SWITCHYARD_RATE_LIMIT_WRITE": "10000000/minute",
        "SWITCHYARD_RATE_LIMIT_READ": "10000000/minute",
        "SWITCHYARD_RATE_LIMIT_INGEST": "10000000/minute",
    }
    api = ApiProcess(env, free_port(), home / "api.log")
    token = issue_token(settings, subject="bench-client", roles=[Role.operator], ttl=3600)
    try:
        api.start()
        print("timing call() against bare requests ...", file=sys.stderr)
        cost = added_cost(api.url, token, args.calls)
        print("timing local decisions ...", file=sys.stderr)
        local = local_decision_times(api, token, args.local)
        losses = {}
        for how in ("kill", "freeze"):
            print(f"losing the API ({how}) ...", file=sys.stderr)
            losses[how] = loss_to_local(api, token, how, args.losses)
    finally:
        api.stop()
        drop_database(args.admin_url, DATABASE)
    deadline = Options().decision_deadline * 1000
    print(report(cost, local, losses, deadline))
    print(f"\nCommand: `{command_line}` ({os.cpu_count()} CPUs; API log {api.log})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
