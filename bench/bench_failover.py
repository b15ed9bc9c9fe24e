"""Error-to-failover latency and recovery start rate on the local Temporal dev server.

Starts a Temporal dev server (in memory), a worker and the API on a fresh PostgreSQL database,
then measures:

- failover latency: from sending a backend-agent-error for a new stream to the answer of the
  first execute-coordination that avoids the failed provider (p50/p95 over N errors);
- recoveries started per second: distinct streams reported with a fixed concurrency.

    .venv/bin/python -m bench.bench_failover [--errors 100] [--recoveries 300] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

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
from switchyard.dev import wait_for_port
from switchyard.settings import Settings
from workflows.search import SEARCH_ATTRIBUTES

BASE = "/api/v1/enhanced-traffic-coordination"
DATABASE = "switchyard_bench_failover"
SERVICES = {
    "samsara": "samsara_primary",
    "stripe": "stripe_primary_us_east",
    "twilio": "twilio_primary_us_east",
    "maps": "mapbox_primary",
}


def error_body(service: str, stream: str) -> dict[str, object]:
    """A backend-agent-error for a new stream of `service`."""
    return {
        "errorType": "service_unavailable",
        "serviceName": service,
        "operation": "bench",
        "severity": "high",
        "errorMessage": "provider returned 503",
        "businessImpact": {"revenueAtRisk": 2000, "customerImpact": "moderate"},
        "errorDetails": {"failedProviders": [SERVICES[service]]},
        "streamId": stream,
    }


async def failover_latency(client: httpx.AsyncClient, errors: int) -> tuple[list[float], int]:
    """Milliseconds from the error POST to the first coordination avoiding the failed node."""
    samples: list[float] = []
    wrong = 0
    for index in range(errors):
        service = "samsara"
        stream = f"bench_{uuid.uuid4().hex[:10]}"
        started = time.perf_counter()
        reported = await client.post(
            f"{BASE}/backend-agent-error", json=error_body(service, stream)
        )
        reported.raise_for_status()
        routed = await client.post(
            f"{BASE}/execute-coordination",
            json={
                "serviceName": service,
                "operation": "bench",
                "routingContext": {"requestMetadata": {"requestId": f"r{index}"}},
            },
        )
        elapsed = (time.perf_counter() - started) * 1000
        routed.raise_for_status()
        node = routed.json()["data"]["routingDecision"]["selectedNode"]["nodeId"]
        wrong += node == SERVICES[service]
        samples.append(elapsed)
    return samples, wrong


async def recovery_rate(client: httpx.AsyncClient, total: int, concurrency: int) -> float:
    """Recoveries started per second with `concurrency` reports in flight."""
    gate = asyncio.Semaphore(concurrency)
    services = list(SERVICES)

    async def one(index: int) -> None:
        async with gate:
            service = services[index % len(services)]
            response = await client.post(
                f"{BASE}/backend-agent-error",
                json=error_body(service, f"rate_{uuid.uuid4().hex[:10]}"),
            )
            response.raise_for_status()

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(total)))
    return total / (time.perf_counter() - started)


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A child process logging to `log`."""
    handle = open(log, "ab")  # noqa: SIM115 (the child owns it)
    return subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--errors", type=int, default=100)
    parser.add_argument("--recoveries", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL)
    args = parser.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="switchyard-bench-"))
    url = fresh_database(args.admin_url, DATABASE)
    temporal_port, api_port = free_port(), free_port()
    bin_dir = Path(sys.executable).parent
    settings = Settings(jwt_secret="bench-secret-" + "x" * 32)
    env = {
        **os.environ,
        "SWITCHYARD_HOME": str(home),
        "SWITCHYARD_DATABASE_URL": url,
        "SWITCHYARD_TEMPORAL_ADDRESS": f"127.0.0.1:{temporal_port}",
        "SWITCHYARD_JWT_SECRET": settings.jwt_secret,
        "SWITCHYARD_ENCRYPTION_KEYS": "b1:" + "A" * 43 + "=",
        "SWITCHYARD_CATALOG_PATH": str(ROOT / "providers.yaml"),
    }
    temporal_cmd = [
        str(bin_dir / "temporal"),
        "server",
        "start-dev",
        "--headless",
        "--ip",
        "127.0.0.1",
        "--port",
        str(temporal_port),
        "--log-level",
        "error",
    ]
    for key in SEARCH_ATTRIBUTES:
        temporal_cmd += ["--search-attribute", f"{key.name}=Keyword"]
    children = [start(temporal_cmd, env, home / "temporal.log")]
    try:
        if not wait_for_port(f"127.0.0.1:{temporal_port}", 60):
            raise RuntimeError("Temporal dev server did not start")
        python = str(bin_dir / "python")
        children.append(start([python, "-m", "switchyard", "worker"], env, home / "worker.log"))
        api = start(
            [python, "-m", "switchyard", "api", "--host", "127.0.0.1", "--port", str(api_port)],
            env,
            home / "api.log",
        )
        children.append(api)
        base_url = f"http://127.0.0.1:{api_port}"
        wait_for_health(base_url, api)
        token = issue_token(settings, subject="bench", roles=[Role.admin], ttl=3600)

        async def run() -> tuple[list[float], int, float]:
            async with httpx.AsyncClient(
                base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
            ) as client:
                # Warm-up: the worker's first workflow task and the API's client connection.
                await failover_latency(client, 5)
                samples, wrong = await failover_latency(client, args.errors)
                rate = await recovery_rate(client, args.recoveries, args.concurrency)
                return samples, wrong, rate

        samples, wrong, rate = asyncio.run(run())
    finally:
        for child in reversed(children):
            child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(20)
            except subprocess.TimeoutExpired:
                child.kill()
        drop_database(args.admin_url, DATABASE)

    command = " ".join(["python -m bench.bench_failover", *map(shlex.quote, argv or sys.argv[1:])])
    print(f"`{command}` — Temporal dev server in memory, PostgreSQL, one API and one worker\n")
    print("| figure | value |")
    print("|---|---|")
    print(f"| error → failover p50 | {statistics.median(samples):.1f} ms |")
    print(f"| error → failover p95 | {nearest_rank(samples, 95):.1f} ms |")
    print(f"| error → failover max | {max(samples):.1f} ms |")
    print(f"| coordinations still on the failed node | {wrong} of {len(samples)} |")
    print(f"| recoveries started per second (concurrency {args.concurrency}) | {rate:.1f} |")
    return 1 if wrong else 0


if __name__ == "__main__":
    raise SystemExit(main())
