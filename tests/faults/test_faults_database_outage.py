"""PostgreSQL unavailable for a few seconds under execute-coordination, outcome and error load.

The outage is made by the proxy between Switchyard's processes and the database (connections
reset, new ones refused: what clients see when the server stops) or by pg_terminate_backend on
this run's database only; the shared server itself is never stopped. While the database is
gone the API answers 503 with Retry-After, never 500, and it serves again by itself once the
database is back; afterwards nothing accepted is lost and nothing is counted twice.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import TEST_SECRET
from fault_invariants import check_all
from fault_load import BASE, Attempt, Load, LoadClient, LoadLog, Mix
from fault_report import Verdict, record
from fault_stack import FaultStack, bearer, get_json, running_stack
from fault_workflows import wait_workflows_ended
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from api.auth import Role
from switchyard.settings import Settings

pytestmark = [pytest.mark.devserver, pytest.mark.faults]
MIX = Mix(coordinations=25, outcome_batches=3, batch_size=10, errors=1, error_services=("samsara",))
# Answers a client may get while the database is gone: the store or the audit log refused,
# or (backend-agent-error) the recovery could not take more errors until its store is back.
OUTAGE_CODES = {"database_unavailable", "audit_unavailable", "temporal_unavailable"}
# The steady state after the outage: this many final coordinations must all succeed.
SETTLED = 20


@pytest.fixture
def postgresql_only(database_url: str) -> None:
    """The outage is made between processes and a database server: PostgreSQL only."""
    if not database_url.startswith("postgresql"):
        pytest.skip("a database outage needs PostgreSQL (SWITCHYARD_DATABASE_URL)")


def _check_outage_answers(attempts: list[Attempt], verdict: Verdict) -> None:
    """Every refusal during the outage is a 503 naming the store, with Retry-After."""
    for attempt in attempts:
        if attempt.status is None or 200 <= attempt.status < 300:
            continue
        verdict.expect(
            attempt.status == 503 and attempt.code in OUTAGE_CODES and bool(attempt.retry_after),
            f"during the outage: {attempt.status} {attempt.code} {attempt.message!r} "
            f"(Retry-After {attempt.retry_after})",
        )


def _check_settled(log: LoadLog, restored: float, verdict: Verdict) -> float | None:
    """Seconds from the database's return to the first 2xx; the load ends fully healthy."""
    after = sorted(
        (a for c in log.of("coordination") for a in c.attempts if a.sent >= restored),
        key=lambda a: a.sent,
    )
    last = after[-SETTLED:]
    verdict.expect(
        len(last) == SETTLED and all(a.status == 200 for a in last),
        f"not settled after the outage: last answers {[a.status for a in last]}",
    )
    return log.first_success_after(restored, ("coordination", "outcomes"))


async def _health_during_outage(stack: FaultStack, verdict: Verdict) -> None:
    document = await asyncio.to_thread(get_json, f"{stack.apis[0].url}{BASE}/health")
    status = (document or {}).get("data", {}).get("status")
    verdict.expect(status == "unhealthy", f"health during the outage says {status!r}")


@dataclass
class Outage:
    """How the database goes away and comes back; `unreachable` while it is away."""

    begin: Callable[[], None]
    end: Callable[[], None]
    seconds: float
    unreachable: bool = True


async def run_outage(
    stack: FaultStack,
    sessions: sessionmaker[Session],
    outage: Outage,
    *,
    outages: int,
    load_seconds: float,
) -> Verdict:
    """Load, `outages` database outages, load again, then every check; the verdict."""
    log, verdict = LoadLog(), Verdict()
    http = LoadClient([a.url for a in stack.apis], bearer(Role.admin, secret=TEST_SECRET))
    client = await stack.client()
    windows: list[tuple[float, float]] = []
    try:
        load = Load(http, log, MIX)
        load.start()
        for _ in range(outages):
            await asyncio.sleep(load_seconds)
            cut = time.monotonic()
            outage.begin()
            await asyncio.sleep(outage.seconds / 2)
            if outage.unreachable:
                await _health_during_outage(stack, verdict)
            await asyncio.sleep(outage.seconds / 2)
            outage.end()
            windows.append((cut, time.monotonic()))
        await asyncio.sleep(load_seconds)
        await load.finish()
        ended_in = await wait_workflows_ended(client, within=90)
    finally:
        await http.close()
    await check_all(client, sessions, log, verdict)
    during = [a for start, end in windows for a in log.attempts_between(start, end)]
    _check_outage_answers(during, verdict)
    # The store's requests are answered, not left hanging (an error report may wait on its
    # recovery, whose first step needs the store).
    hanging = [
        a
        for start, end in windows
        for a in log.attempts_between(start, end, ("coordination", "outcomes"))
        if a.status is None
    ]
    verdict.expect(not hanging, f"{len(hanging)} requests got no answer during the outage")
    verdict.expect(
        "500" not in log.answers(), f"500 answers: {log.answers()['500']} (must be none)"
    )
    recovered = [_check_settled(log, end, verdict) for _, end in windows]
    verdict.expect(None not in recovered, "no success after a database outage")
    verdict.figures.update(
        load=log.figures(),
        outages=outages,
        outage_seconds=outage.seconds,
        answers_during_outage=dict(
            sorted(
                Counter(f"{a.status or 'no answer'} {a.code or ''}".strip() for a in during).items()
            )
        ),
        slowest_answer_during_outage_seconds=round(
            max((a.took for a in during if a.status is not None), default=0.0), 2
        ),
        recovered_seconds=max((r for r in recovered if r is not None), default=None),
        workflows_ended_seconds_after_load=round(ended_in, 2),
    )
    return verdict


async def test_database_outage_answers_503_and_loses_nothing(
    postgresql_only: None,
    clean_store: Engine,
    sessions: sessionmaker[Session],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    async with running_stack(make_settings, tmp_path) as stack:
        assert stack.proxy is not None
        outage = Outage(stack.proxy.cut, stack.proxy.restore, seconds=3)
        verdict = await run_outage(stack, sessions, outage, outages=1, load_seconds=3)
    record("database_outage", verdict)
    verdict.assert_clean()


def _terminator(database_url: str) -> Callable[[], None]:
    """pg_terminate_backend on every other connection to this run's database (only)."""
    url = make_url(database_url)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")

    def terminate() -> None:
        with admin.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": url.database},
            )

    return terminate


@pytest.mark.faults_long
async def test_database_connections_terminated_repeatedly(
    postgresql_only: None,
    clean_store: Engine,
    sessions: sessionmaker[Session],
    make_settings: Callable[..., Settings],
    database_url: str,
    tmp_path: Path,
) -> None:
    terminate = _terminator(database_url)
    async with running_stack(make_settings, tmp_path) as stack:
        outage = Outage(terminate, terminate, seconds=1, unreachable=False)
        verdict = await run_outage(stack, sessions, outage, outages=3, load_seconds=3)
    record("database_connections_terminated", verdict)
    verdict.assert_clean()


@pytest.mark.faults_long
async def test_database_frozen_answers_503_within_the_connect_timeout(
    postgresql_only: None,
    clean_store: Engine,
    sessions: sessionmaker[Session],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    async with running_stack(make_settings, tmp_path) as stack:
        assert stack.proxy is not None
        outage = Outage(stack.proxy.freeze, stack.proxy.restore, seconds=8)
        verdict = await run_outage(stack, sessions, outage, outages=1, load_seconds=3)
    record("database_frozen", verdict)
    verdict.assert_clean()


@pytest.mark.faults_long
async def test_database_outage_of_ten_seconds_twice(
    postgresql_only: None,
    clean_store: Engine,
    sessions: sessionmaker[Session],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    async with running_stack(make_settings, tmp_path) as stack:
        assert stack.proxy is not None
        outage = Outage(stack.proxy.cut, stack.proxy.restore, seconds=10)
        verdict = await run_outage(stack, sessions, outage, outages=2, load_seconds=4)
    record("database_outage_long", verdict)
    verdict.assert_clean()
