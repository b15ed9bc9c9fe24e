"""Field encryption: AES-256-GCM bound to table, column and row; loud failures; rotation."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from security_support import new_key
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from store.base import utcnow
from store.crypto import DecryptionError, FieldCipher, Keyring, KeyringError, key_id_of
from store.db import transaction
from store.events import EventDraft, publish_many
from store.models import AuditEntry, Emergency, ErrorEvent, ErrorStream, Event
from store.rotation import rotate_keys
from switchyard import settings as settings_module
from switchyard.cli import app as cli

OLD, NEW = new_key("k1"), new_key("k2")
SECRET = "card 4111-1111-1111-1111 declined for Alice"


def _where(row: str = "row-1") -> dict[str, str]:
    return {"table": "error_events", "column": "error_message", "row": row}


def test_round_trip_with_a_fresh_nonce_and_the_key_id() -> None:
    cipher = FieldCipher.from_keys(OLD)
    first, second = cipher.encrypt(SECRET, **_where()), cipher.encrypt(SECRET, **_where())
    assert first != second  # a fresh 96-bit nonce per value
    assert first.startswith("v1:k1:") and key_id_of(first) == "k1"
    assert SECRET not in first
    assert len(base64.b64decode(first.removeprefix("v1:k1:"))) == 12 + len(SECRET) + 16
    assert cipher.decrypt(first, **_where()) == SECRET
    assert cipher.decrypt(cipher.encrypt("", **_where()), **_where()) == ""


@pytest.mark.parametrize(
    "elsewhere",
    [
        {"table": "error_events", "column": "error_message", "row": "row-2"},
        {"table": "error_events", "column": "operation", "row": "row-1"},
        {"table": "emergencies", "column": "error_message", "row": "row-1"},
    ],
    ids=["other_row", "other_column", "other_table"],
)
def test_a_value_moved_elsewhere_does_not_decrypt(elsewhere: dict[str, str]) -> None:
    cipher = FieldCipher.from_keys(OLD)
    sealed = cipher.encrypt(SECRET, **_where())
    with pytest.raises(DecryptionError, match="authentication failed"):
        cipher.decrypt(sealed, **elsewhere)


def _flip(sealed: str, index: int) -> str:
    blob = bytearray(base64.b64decode(sealed.removeprefix("v1:k1:")))
    blob[index] ^= 0x01
    return "v1:k1:" + base64.b64encode(bytes(blob)).decode()


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda s: _flip(s, 0), "authentication failed"),  # nonce
        (lambda s: _flip(s, 20), "authentication failed"),  # ciphertext
        (lambda s: _flip(s, -1), "authentication failed"),  # tag
        (lambda s: s[:-12], "not valid base64|truncated|authentication failed"),
        (lambda s: "v1:k1:AAAA", "truncated"),
        (lambda s: "v1:k1:***", "not valid base64"),
        (lambda s: SECRET, "not an encrypted value"),
        (lambda s: s.replace("v1:k1:", "v1:k9:"), "'k9', which is not configured"),
    ],
    ids=["nonce", "ciphertext", "tag", "cut", "truncated", "garbage", "plaintext", "unknown_kid"],
)
def test_a_tampered_value_fails_loudly(mangle: object, message: str) -> None:
    cipher = FieldCipher.from_keys(OLD)
    sealed = cipher.encrypt(SECRET, **_where())
    with pytest.raises(DecryptionError, match=message) as failure:
        cipher.decrypt(mangle(sealed), **_where())  # type: ignore[operator]
    assert SECRET not in str(failure.value)


def test_a_wrong_key_with_the_same_id_fails_loudly() -> None:
    sealed = FieldCipher.from_keys(OLD).encrypt(SECRET, **_where())
    impostor = FieldCipher.from_keys(new_key("k1"))
    with pytest.raises(DecryptionError, match="wrong key"):
        impostor.decrypt(sealed, **_where())


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "no encryption keys"),
        ("nokid", "expected `kid:base64key`"),
        ("bad kid:" + "A" * 44, "expected `kid:base64key`"),
        ("k1:" + base64.b64encode(b"short").decode(), "has 5 bytes; AES-256 needs 32"),
        ("k1:%%%%", "has 0 bytes|not base64"),
        (f"{OLD},{OLD}", "twice"),
    ],
)
def test_malformed_keys_are_refused(spec: str, message: str) -> None:
    with pytest.raises(KeyringError, match=message):
        Keyring.parse(spec)


def test_both_base64_alphabets_are_accepted() -> None:
    raw = bytes(range(200, 232))
    standard = "a:" + base64.b64encode(raw).decode()
    urlsafe = "b:" + base64.urlsafe_b64encode(raw).decode().rstrip("=")
    ring = Keyring.parse(f"{standard}, {urlsafe}")
    assert ring.key_ids == ("a", "b") and ring.current_kid == "a"


def _store(sessions: sessionmaker[Session], cipher: FieldCipher, n: int = 3) -> None:
    """n error events, n emergencies and n activation events, sealed with `cipher`."""
    now = utcnow()
    with transaction(sessions) as session:
        session.add(ErrorStream(stream_id="rotation-stream", service="stripe"))
        session.flush()
        for i in range(n):
            key = f"wf/rotation-{i}"
            coordination = f"emergency_rotation_{i}"
            session.add(
                ErrorEvent(
                    idempotency_key=key,
                    stream_id="rotation-stream",
                    error_type="timeout",
                    severity="high",
                    error_message=cipher.seal(ErrorEvent.error_message, key, f"{SECRET} #{i}"),
                )
            )
            session.add(
                Emergency(
                    coordination_id=coordination,
                    workflow_id="emergency:stripe",
                    service=f"stripe-{i}",
                    status="ended",
                    emergency_reason=cipher.seal(Emergency.emergency_reason, coordination, "why"),
                    business_justification=cipher.seal(
                        Emergency.business_justification, coordination, "because"
                    ),
                    max_budget_override=10.0,
                    deadline=now + timedelta(minutes=5),
                )
            )
            payload = {"emergencyReason": "why", "businessJustification": "because", "n": i}
            # Written the way the product writes events: through the outbox (ids at commit).
            sealed = cipher.seal_event("emergency_mode_activated", coordination, payload)
            publish_many(
                session,
                [EventDraft("emergency_mode_activated", sealed, coordination_id=coordination)],
            )


def _read_all(sessions: sessionmaker[Session], cipher: FieldCipher) -> list[str]:
    values: list[str] = []
    with sessions() as session:
        for event in session.scalars(select(ErrorEvent)):
            values.append(
                cipher.open(ErrorEvent.error_message, event.idempotency_key, event.error_message)
            )
        for row in session.scalars(select(Emergency)):
            values.append(
                cipher.open(Emergency.emergency_reason, row.coordination_id, row.emergency_reason)
            )
            values.append(
                cipher.open(
                    Emergency.business_justification,
                    row.coordination_id,
                    row.business_justification,
                )
            )
        for outbox in session.scalars(select(Event)):
            published = cipher.open_event(
                outbox.event_type, outbox.coordination_id or "", outbox.payload
            )
            values += [published["emergencyReason"], published["businessJustification"]]
    return values


def _kids(sessions: sessionmaker[Session]) -> set[str | None]:
    with sessions() as session:
        kids = {key_id_of(v) for v in session.scalars(select(ErrorEvent.error_message))}
        kids |= {key_id_of(v) for v in session.scalars(select(Emergency.emergency_reason))}
        kids |= {key_id_of(e.payload["emergencyReason"]) for e in session.scalars(select(Event))}
    return kids


def test_rotation_old_key_still_decrypts_then_rotate_then_old_key_removed(
    clean_store: Engine, sessions: sessionmaker[Session]
) -> None:
    _store(sessions, FieldCipher.from_keys(OLD))
    expected = _read_all(sessions, FieldCipher.from_keys(OLD))
    assert len(expected) == 15

    # A new current key; the old one still decrypts what it sealed.
    both = FieldCipher.from_keys(f"{NEW},{OLD}")
    assert _read_all(sessions, both) == expected
    # Without the old key, old values fail loudly (not garbage).
    with pytest.raises(DecryptionError, match="'k1', which is not configured"):
        _read_all(sessions, FieldCipher.from_keys(NEW))

    counts = {c.column: c for c in rotate_keys(sessions, both)}
    assert {name: c.rotated for name, c in counts.items()} == {
        "error_events.error_message": 3,
        "emergencies.emergency_reason": 3,
        "emergencies.business_justification": 3,
        "events.payload.emergencyReason": 3,
        "events.payload.businessJustification": 3,
    }
    assert all(not c.failed for c in counts.values())
    assert _kids(sessions) == {"k2"}

    again = rotate_keys(sessions, both)  # idempotent
    assert [(c.rotated, c.current, c.failed) for c in again] == [(0, 3, [])] * 5

    assert _read_all(sessions, FieldCipher.from_keys(NEW)) == expected  # old key removed


def test_plaintext_is_reported_unless_asked_to_encrypt_it(
    clean_store: Engine, sessions: sessionmaker[Session]
) -> None:
    cipher = FieldCipher.from_keys(NEW)
    _store(sessions, cipher, n=1)
    with transaction(sessions) as session:
        session.add(
            ErrorEvent(
                idempotency_key="legacy",
                stream_id="rotation-stream",
                error_type="timeout",
                severity="low",
                error_message="stored before encryption",
            )
        )
    [errors, *_] = rotate_keys(sessions, cipher)
    assert (errors.current, errors.failed) == (1, ["legacy: not encrypted"])
    [errors, *_] = rotate_keys(sessions, cipher, encrypt_plaintext=True)
    assert (errors.current, errors.encrypted, errors.failed) == (1, 1, [])
    with sessions() as session:
        legacy = session.scalars(
            select(ErrorEvent).where(ErrorEvent.idempotency_key == "legacy")
        ).one()
    assert (
        cipher.open(ErrorEvent.error_message, "legacy", legacy.error_message)
        == "stored before encryption"
    )


@pytest.fixture
def cli_env(database_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """Environment for in-process CLI runs against the test database."""
    settings_module.get_settings.cache_clear()
    yield {
        "SWITCHYARD_ENV": "test",
        "SWITCHYARD_HOME": str(tmp_path / "cli"),
        "SWITCHYARD_DATABASE_URL": database_url,
    }
    settings_module.get_settings.cache_clear()


def test_cli_keys_rotate_reports_counts_and_is_audited(
    clean_store: Engine, sessions: sessionmaker[Session], cli_env: dict[str, str]
) -> None:
    _store(sessions, FieldCipher.from_keys(OLD), n=2)
    env = {**cli_env, "SWITCHYARD_ENCRYPTION_KEYS": f"{NEW},{OLD}"}
    first = CliRunner().invoke(cli, ["keys", "rotate"], env=env)
    assert first.exit_code == 0, first.output
    report = json.loads(first.output)
    assert report["currentKey"] == "k2"
    assert [c["rotated"] for c in report["columns"]] == [2] * 5
    second = json.loads(CliRunner().invoke(cli, ["keys", "rotate"], env=env).output)
    assert [(c["rotated"], c["current"]) for c in second["columns"]] == [(0, 2)] * 5

    missing_old = {**cli_env, "SWITCHYARD_ENCRYPTION_KEYS": new_key("k3")}
    settings_module.get_settings.cache_clear()  # the CLI caches its settings per process
    failed = CliRunner().invoke(cli, ["keys", "rotate"], env=missing_old)
    assert failed.exit_code == 1
    with sessions() as session:
        audited = list(
            session.scalars(select(AuditEntry).where(AuditEntry.action == "keys rotate"))
        )
    assert [a.outcome for a in audited] == ["ok", "ok", "failed"]
