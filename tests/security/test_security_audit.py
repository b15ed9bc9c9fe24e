"""The audit log: every write request is recorded, chained, and tampering is found."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from security_support import BASE
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from api.audit import AuditWriter, document_summary
from api.auth import Role
from api.coordinator import audit_summary
from store.audit import (
    GENESIS,
    AuditRecord,
    append_entry,
    entry_hash,
    hashed_fields,
    verify_chain,
)
from store.base import utcnow
from store.db import transaction
from store.models import AuditEntry, BudgetSpend, Coordination, Outcome
from store.receipts import pending_receipts, record_receipt, seal_receipts
from switchyard import settings as settings_module
from switchyard.cli import app as cli

Auth = Callable[..., dict[str, str]]
COORDINATE = f"{BASE}/execute-coordination"
OUTCOMES = f"{BASE}/outcomes"
BREAKER = f"{BASE}/providers/stripe_backup_eu_west/breaker"
REQUEST = {"serviceName": "stripe", "operation": "payment_processing"}


def _record(n: int) -> AuditRecord:
    return AuditRecord(
        principal=f"user-{n}",
        role="operator",
        action="POST /execute-coordination",
        resource=COORDINATE,
        request_id=f"req-{n}",
        outcome="200",
        detail={"coordinationId": f"coordination_{n}", "n": n, "text": "naïve ✓"},
    )


def _entries(sessions: sessionmaker[Session]) -> list[AuditEntry]:
    with sessions() as session:
        return list(session.scalars(select(AuditEntry).order_by(AuditEntry.id)))


def _verify(sessions: sessionmaker[Session]) -> Any:
    with sessions() as session:
        return verify_chain(session)


@pytest.fixture
def five(clean_store: Engine, sessions: sessionmaker[Session]) -> list[AuditEntry]:
    """Five chained entries."""
    for n in range(5):
        append_entry(sessions, _record(n))
    return _entries(sessions)


def test_write_requests_are_audited_with_principal_role_request_id_and_decision(
    api_client: TestClient, auth: Auth, sessions: sessionmaker[Session]
) -> None:
    headers = {**auth(Role.operator), "X-Request-ID": "trace-42"}
    response = api_client.post(COORDINATE, json=REQUEST, headers=headers)
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == "trace-42"
    coordination_id = response.json()["data"]["coordinationId"]
    api_client.get(f"{BASE}/coordination-analytics", headers=auth(Role.viewer))  # reads: no entry
    api_client.post(COORDINATE, json=REQUEST)  # no token: still recorded

    page = api_client.get(f"{BASE}/audit", headers=auth(Role.admin)).json()["data"]
    first, refused = page["entries"]
    assert first["principal"] == "test-user" and first["role"] == "operator"
    assert first["action"] == "POST /execute-coordination"
    assert first["resource"] == COORDINATE
    assert (first["requestId"], first["outcome"]) == ("trace-42", "200")
    assert first["detail"]["coordinationId"] == coordination_id
    assert first["detail"]["nodeId"] == "stripe_primary_us_east"
    # The decision path reads its summary directly: the same as the generic scan finds.
    envelope = response.json()
    assert first["detail"] == {"method": "POST", **document_summary(envelope)}
    assert audit_summary(envelope["data"]) == document_summary(envelope)
    assert first["prevHash"] == GENESIS and refused["prevHash"] == first["hash"]
    assert (refused["principal"], refused["role"], refused["outcome"]) == (
        "anonymous",
        "none",
        "401",
    )
    assert refused["detail"]["error"] == "unauthorized"
    assert len(refused["requestId"]) == 32  # generated when the caller sends none
    assert page["nextSince"] == refused["id"]
    assert _verify(sessions).ok


def test_audit_pages_with_since_and_limit(
    five: list[AuditEntry], api_client: TestClient, auth: Auth
) -> None:
    admin = auth(Role.admin)
    ids = [e.id for e in five]
    first = api_client.get(f"{BASE}/audit?limit=2", headers=admin).json()["data"]
    assert [e["id"] for e in first["entries"]] == ids[:2]
    rest = api_client.get(f"{BASE}/audit?since={first['nextSince']}&limit=10", headers=admin)
    assert [e["id"] for e in rest.json()["data"]["entries"]] == ids[2:]
    assert api_client.get(f"{BASE}/audit?limit=0", headers=admin).status_code == 422
    assert api_client.get(f"{BASE}/audit", headers=auth(Role.operator)).status_code == 403


def test_an_intact_chain_verifies(five: list[AuditEntry], sessions: sessionmaker[Session]) -> None:
    report = _verify(sessions)
    assert report.ok and report.checked == 5 and report.head_hash == five[-1].hash


def _edit(engine: Engine, ids: list[int]) -> int:
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET outcome = '403' WHERE id = :id"), {"id": ids[2]})
    return ids[2]


def _edit_and_rehash(engine: Engine, ids: list[int]) -> int:
    # A forger who recomputes the edited entry's own hash still breaks the next link.
    with Session(engine) as session, session.begin():
        entry = session.get_one(AuditEntry, ids[2])
        entry.principal = "mallory"
        entry.hash = entry_hash(hashed_fields(entry), entry.prev_hash)
    return ids[3]


def _delete(engine: Engine, ids: list[int]) -> int:
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE id = :id"), {"id": ids[2]})
    return ids[3]


def _delete_first(engine: Engine, ids: list[int]) -> int:
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE id = :id"), {"id": ids[0]})
    return ids[1]


def _reorder(engine: Engine, ids: list[int]) -> int:
    # Swap two entries' positions: move them aside, then back under each other's id.
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET id = :t WHERE id = :a"), {"t": 10_000, "a": ids[1]})
        conn.execute(text("UPDATE audit_log SET id = :a WHERE id = :b"), {"a": ids[1], "b": ids[2]})
        conn.execute(text("UPDATE audit_log SET id = :b WHERE id = :t"), {"b": ids[2], "t": 10_000})
    return ids[1]


@pytest.mark.parametrize(
    "tamper", [_edit, _edit_and_rehash, _delete, _delete_first, _reorder], ids=lambda f: f.__name__
)
def test_verify_names_the_first_broken_entry(
    five: list[AuditEntry],
    clean_store: Engine,
    sessions: sessionmaker[Session],
    tamper: Callable[[Engine, list[int]], int],
) -> None:
    expected = tamper(clean_store, [e.id for e in five])
    report = _verify(sessions)
    assert not report.ok and report.broken is not None
    assert report.broken.entry_id == expected, report.broken


@pytest.fixture
def cli_env(database_url: str, tmp_path: Any) -> Iterator[dict[str, str]]:
    """Environment for in-process CLI runs against the test database."""
    settings_module.get_settings.cache_clear()
    yield {
        "SWITCHYARD_ENV": "test",
        "SWITCHYARD_HOME": str(tmp_path / "cli"),
        "SWITCHYARD_DATABASE_URL": database_url,
    }
    settings_module.get_settings.cache_clear()


def test_cli_audit_verify_exits_1_naming_the_entry(
    five: list[AuditEntry], clean_store: Engine, cli_env: dict[str, str]
) -> None:
    good = CliRunner().invoke(cli, ["audit", "verify"], env=cli_env)
    assert good.exit_code == 0, good.output
    assert "5 entries" in good.output and five[-1].hash in good.output
    broken_id = _delete(clean_store, [e.id for e in five])
    bad = CliRunner().invoke(cli, ["audit", "verify"], env=cli_env)
    assert bad.exit_code == 1
    assert f"broken at entry {broken_id}" in bad.output


def test_concurrent_appends_form_one_chain(
    clean_store: Engine, sessions: sessionmaker[Session]
) -> None:
    # Separate connections appending at once: the database lock (advisory lock on
    # PostgreSQL, BEGIN IMMEDIATE on SQLite) keeps one chain with no fork.
    errors: list[BaseException] = []

    def writer(offset: int) -> None:
        try:
            for n in range(15):
                append_entry(sessions, _record(offset + n))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(100 * i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    report = _verify(sessions)
    assert report.ok and report.checked == 90
    with sessions() as session:
        assert session.scalar(select(func.count(func.distinct(AuditEntry.prev_hash)))) == 90


async def test_requests_audited_together_share_transactions_and_one_chain(
    clean_store: Engine, sessions: sessionmaker[Session]
) -> None:
    writer = AuditWriter(max_batch=16)
    await asyncio.gather(*(writer.append(sessions, _record(n)) for n in range(60)))
    report = _verify(sessions)
    assert report.ok and report.checked == 60
    assert sorted(e.request_id for e in _entries(sessions)) == sorted(f"req-{n}" for n in range(60))


def test_an_unwritable_audit_log_answers_503_not_unaudited(
    api_client: TestClient, auth: Auth, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_: object) -> None:
        raise RuntimeError("audit database gone")

    monkeypatch.setattr("api.audit.append_entries", refuse)
    # A breaker command: a write whose entry the middleware appends after the route answered.
    headers = {**auth(Role.incident_commander), "X-Request-ID": "lost-1"}
    command = {"state": "OPEN", "reason": "maintenance"}
    response = api_client.post(BREAKER, json=command, headers=headers)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "audit_unavailable"
    assert "lost-1" in response.json()["error"]["message"]
    assert response.headers["X-Request-ID"] == "lost-1"
    assert "audit database gone" not in response.text


def test_a_decision_whose_entry_cannot_be_written_is_not_recorded(
    api_client: TestClient,
    auth: Auth,
    sessions: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A decision's entry goes in the decision's own transaction: no entry, no decision.
    def refuse(*_: object) -> None:
        raise OperationalError("INSERT INTO audit_log", {}, Exception("audit database gone"))

    # Both ways a decision batch is written (step by step, and two round trips on PostgreSQL).
    monkeypatch.setattr("store.decisions.append_audit", refuse)
    monkeypatch.setattr("store.decisions_pg.chain_rows", refuse)
    response = api_client.post(COORDINATE, json=REQUEST, headers=auth(Role.operator))
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "database_unavailable"
    assert "audit database gone" not in response.text
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Coordination)) == 0
        assert session.scalar(select(func.coalesce(func.sum(BudgetSpend.spent), 0.0))) == 0.0
        # The refusal itself is audited, by the middleware, like any other answer.
        entry = session.scalars(select(AuditEntry)).one()
    assert (entry.outcome, entry.detail.get("error")) == ("503", "database_unavailable")


def test_an_outcome_batch_whose_entry_cannot_be_written_is_not_recorded(
    api_client: TestClient,
    auth: Auth,
    sessions: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A batch's receipt goes in the batch's own transaction: no receipt, no outcomes.
    def refuse(*_: object) -> None:
        raise OperationalError("INSERT INTO audit_log", {}, Exception("audit database gone"))

    monkeypatch.setattr("api.routes.outcomes.record_receipt", refuse)
    report = {"nodeId": "stripe_primary_us_east", "success": True, "latencyMs": 120.0}
    response = api_client.post(OUTCOMES, json={"outcomes": [report]}, headers=auth(Role.operator))
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "database_unavailable"
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Outcome)) == 0
        entry = session.scalars(select(AuditEntry)).one()  # the refusal, by the middleware
    assert (entry.outcome, entry.detail.get("error")) == ("503", "database_unavailable")


def test_an_outcome_batch_is_audited_once_with_its_size_and_digest(
    api_client: TestClient, auth: Auth, sessions: sessionmaker[Session]
) -> None:
    reports = [
        {"nodeId": "stripe_primary_us_east", "success": n % 10 != 0, "latencyMs": 100.0 + n}
        for n in range(40)
    ]
    body = json.dumps({"outcomes": reports}).encode()
    headers = {**auth(Role.operator), "Content-Type": "application/json", "X-Request-ID": "b-1"}
    response = api_client.post(OUTCOMES, content=body, headers=headers)
    assert response.status_code == 202, response.text
    runtime = api_client.app.state.runtime  # type: ignore[attr-defined]
    runtime.receipts.seal()  # the API seals every second; here, now
    with sessions() as session:
        entry = session.scalars(select(AuditEntry)).one()
        report = verify_chain(session)
        assert pending_receipts(session) == 0
    assert report.ok
    assert (entry.action, entry.resource, entry.outcome) == ("POST /outcomes", OUTCOMES, "202")
    assert entry.detail["sealed"] == 1
    [batch] = entry.detail["batches"]
    assert (batch["requestId"], batch["accepted"], batch["failed"]) == ("b-1", 40, 4)
    # Tamper-evident: the chain names exactly the bytes the caller sent.
    assert batch["sha256"] == hashlib.sha256(body).hexdigest()


def test_receipts_are_sealed_once_per_principal_and_second(
    clean_store: Engine, sessions: sessionmaker[Session]
) -> None:
    at = utcnow()
    with transaction(sessions) as session:
        for n in range(250):
            record = AuditRecord(
                principal="checkout" if n % 5 else "billing",
                role="operator",
                action="POST /outcomes",
                resource="/outcomes",
                request_id=f"r{n}",
                outcome="202",
                detail={"accepted": 100, "failed": n % 3, "sha256": f"{n:064x}"},
            )
            record_receipt(session, record, at)
    # Two sealers at once (two API processes): every receipt sealed exactly once.
    results: list[int] = []

    def seal() -> None:
        with transaction(sessions) as session:
            results.append(seal_receipts(session, before=utcnow()))

    threads = [threading.Thread(target=seal) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with transaction(sessions) as session:
        results.append(seal_receipts(session, before=utcnow()))
    assert sum(results) == 250
    with sessions() as session:
        assert verify_chain(session).ok
        entries = session.scalars(select(AuditEntry)).all()
        assert pending_receipts(session) == 0
    sealed = [b["requestId"] for e in entries for b in e.detail["batches"]]
    assert sorted(sealed) == sorted(f"r{n}" for n in range(250))
    # Entries group a principal's receipts (at most 100 each); concurrent sealers may each take
    # part of a second's receipts, so the split varies, the totals do not.
    assert all(e.detail["sealed"] == len(e.detail["batches"]) <= 100 for e in entries)
    totals: dict[str, int] = {}
    for entry in entries:
        totals[entry.principal] = totals.get(entry.principal, 0) + entry.detail["sealed"]
    assert totals == {"billing": 50, "checkout": 200}


def test_a_database_outage_answer_is_not_replaced_by_audit_unavailable(
    api_client: TestClient, auth: Auth, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The store is down: the decision is refused (nothing took effect) and its refusal
    # cannot be audited either; the caller must hear "database unavailable", not "the request
    # may have taken effect".
    def down(*_: object) -> None:
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr("store.decisions.append_audit", down)
    monkeypatch.setattr("store.decisions_pg.chain_rows", down)
    monkeypatch.setattr("api.audit.append_entries", down)
    response = api_client.post(COORDINATE, json=REQUEST, headers=auth(Role.operator))
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "database_unavailable"
    assert response.headers["Retry-After"] == "2"
