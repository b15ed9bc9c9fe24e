"""How long a catalog change takes to reach another API replica (PostgreSQL).

Two API apps (each with its snapshot and its NOTIFY listener, as two replicas) share one
fresh database. Each round changes a price through the first replica
(`PATCH /providers/{nodeId}`) and times, from the request's start (the change commits inside
it), until the second replica's snapshot routes with the new revision; and the first
replica's own answer time, which includes waiting for its own snapshot.

    .venv/bin/python -m bench.bench_catalog --rounds 50
"""

from __future__ import annotations

import argparse
import base64
import secrets
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import Role, issue_token
from bench.bench_http import drop_database, fresh_database
from bench.stats import nearest_rank
from store.prepare import prepare_store
from switchyard.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DATABASE = "switchyard_bench_catalog"
BASE = "/api/v1/enhanced-traffic-coordination"
NODE = "stripe_secondary_us_west"


def main() -> None:
    """Print the distribution of the time to the second replica, in milliseconds."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL)
    args = parser.parse_args()
    url = fresh_database(args.admin_url, DATABASE)
    try:
        with tempfile.TemporaryDirectory() as home:
            settings = Settings(
                database_url=url,
                home=Path(home),
                jwt_secret=secrets.token_urlsafe(48),
                encryption_keys="bench:" + base64.b64encode(secrets.token_bytes(32)).decode(),
                catalog_path=ROOT / "providers.yaml",
                temporal_address="127.0.0.1:1",
                rate_limit_enabled=False,
            )
            prepare_store(settings)
            samples, answers = run(settings, args.rounds)
    finally:
        drop_database(args.admin_url, DATABASE)
    print(f"catalog change through one replica, {len(samples)} rounds (ms)\n")
    print("| from the request's start | p50 | p95 | max |")
    print("|---|---:|---:|---:|")
    for name, values in (
        ("to the answer (its own snapshot fresh)", answers),
        ("to the second replica routing with it", samples),
    ):
        print(
            f"| {name} | {nearest_rank(values, 50):.1f} | {nearest_rank(values, 95):.1f} "
            f"| {max(values):.1f} |"
        )
    print(f"\nCommand: `.venv/bin/python -m bench.bench_catalog --rounds {args.rounds}`")


def run(settings: Settings, rounds: int) -> tuple[list[float], list[float]]:
    """One price change per round through the first replica, timed at the second."""
    headers = {
        "Authorization": "Bearer "
        + issue_token(settings, subject="bench", roles=[Role.admin], ttl=3600)
    }
    samples, answers = [], []
    with (
        TestClient(create_app(settings, prepare=False)) as first,
        TestClient(create_app(settings, prepare=False)) as second,
    ):
        snapshot = second.app.state.runtime.snapshot  # type: ignore[attr-defined]
        for n in range(rounds):
            price = round(0.032 + (n % 2) / 1000, 6)
            started = time.perf_counter()
            answer = first.patch(
                f"{BASE}/providers/{NODE}", json={"costPerRequest": price}, headers=headers
            )
            answers.append((time.perf_counter() - started) * 1000)
            revision = answer.json()["data"]["revision"]
            while snapshot.current.catalog_revision < revision:
                time.sleep(0.0005)
            samples.append((time.perf_counter() - started) * 1000)
    return samples, answers


if __name__ == "__main__":
    main()
