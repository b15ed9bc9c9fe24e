"""End to end: sensitive text is ciphertext in the database and in Temporal's stored history.

The API and a worker run against the real dev server; an error report and an emergency with
recognisable text go through them. Then the raw rows (plain SQL, every table) and the raw
history (fetched by a client without the codec) must not contain that text anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from conftest import TEST_KEYS
from fastapi.testclient import TestClient
from google.protobuf.message import Message
from harness import live_worker
from security_support import BASE
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker
from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from api.auth import Role
from store.base import Base
from store.crypto import FieldCipher, Keyring, key_id_of
from switchyard.settings import Settings
from temporal_client.codec import ENCODING, EncryptionCodec
from workflows.emergency_types import workflow_id_for

Auth = Callable[..., dict[str, str]]
MARK = uuid.uuid4().hex[:10]
ERROR_MESSAGE = f"card 4111 1111 declined for customer alice-{MARK}"
REASON = f"Outage at acquirer, ticket INC-{MARK}"
JUSTIFICATION = f"Black Friday revenue, approved by carol-{MARK}"
SECRETS = (ERROR_MESSAGE, REASON, JUSTIFICATION)


def _error_report(stream: str) -> dict[str, Any]:
    return {
        "errorType": "service_unavailable",
        "serviceName": "samsara",
        "operation": "gps_tracking",
        "severity": "high",
        "errorMessage": ERROR_MESSAGE,
        "errorDetails": {"failedProviders": ["samsara_primary"]},
        "streamId": stream,
    }


EMERGENCY = {
    "serviceName": "stripe",
    "operation": "payment_processing",
    "emergencyReason": REASON,
    "maxBudgetOverride": 100,
    "durationMinutes": 30,
    "businessJustification": JUSTIFICATION,
}


def _payloads(message: Message) -> Iterator[Payload]:
    """Every Payload inside a protobuf message (history events nest them deeply)."""
    if isinstance(message, Payload):
        yield message
        return
    for _, value in message.ListFields():
        items = value if isinstance(value, list | tuple) or hasattr(value, "extend") else [value]
        for item in items:
            if isinstance(item, Message):
                yield from _payloads(item)


def _raw_rows(engine: Engine) -> str:
    """Every row of every table, as the database returns it to plain SQL."""
    dump: list[str] = []
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            dump.extend(str(row) for row in conn.execute(text(f"SELECT * FROM {table.name}")))
    return "\n".join(dump)


async def _terminate(client: Client, workflow_id: str) -> None:
    with contextlib.suppress(RPCError):
        await client.get_workflow_handle(workflow_id).terminate(reason="test cleanup")


async def test_sensitive_text_is_ciphertext_in_the_database_and_in_temporal_history(
    dev_env: WorkflowEnvironment,
    clean_store: Engine,
    sessions: sessionmaker[Session],
    make_settings: Callable[..., Settings],
    auth: Auth,
) -> None:
    target = dev_env.client.service_client.config.target_host
    settings = make_settings(temporal_address=target)
    stream = f"security_{MARK}"
    recovery_id = f"recovery:samsara:{stream}"
    await _terminate(dev_env.client, workflow_id_for("stripe"))
    try:
        async with live_worker(dev_env.client, sessions, settings.temporal_task_queue):
            with TestClient(create_app(settings, prepare=False)) as api:
                reported = await asyncio.to_thread(
                    api.post,
                    f"{BASE}/backend-agent-error",
                    json=_error_report(stream),
                    headers=auth(Role.operator),
                )
                assert reported.status_code == 200, reported.text
                activated = await asyncio.to_thread(
                    api.post,
                    f"{BASE}/emergency-override",
                    json=EMERGENCY,
                    headers=auth(Role.incident_commander),
                )
                assert activated.status_code == 200, activated.text
        coordination_id = activated.json()["data"]["coordinationResult"]["coordinationId"]

        # The database: no plaintext anywhere; the sensitive columns hold `v1:{kid}:...`.
        rows = _raw_rows(clean_store)
        for secret in SECRETS:
            assert secret not in rows
        with clean_store.connect() as conn:
            message = conn.execute(text("SELECT error_message FROM error_events")).scalar_one()
            reason, justification = conn.execute(
                text("SELECT emergency_reason, business_justification FROM emergencies")
            ).one()
        assert {key_id_of(v) for v in (message, reason, justification)} == {"t1"}
        cipher = FieldCipher.from_keys(TEST_KEYS)
        assert (
            cipher.decrypt(
                reason, table="emergencies", column="emergency_reason", row=coordination_id
            )
            == REASON
        )

        # Temporal's history, read by a client without the codec: ciphertext only.
        plain = await Client.connect(target, namespace=dev_env.client.namespace)
        codec = EncryptionCodec(Keyring.parse(TEST_KEYS))
        for workflow_id in (recovery_id, workflow_id_for("stripe")):
            history = await plain.get_workflow_handle(workflow_id).fetch_history()
            payloads = [p for event in history.events for p in _payloads(event)]
            assert payloads and all(p.metadata["encoding"] == ENCODING for p in payloads)
            raw = b"".join(event.SerializeToString() for event in history.events)
            opened = b"".join(codec.decode_one(p).data for p in payloads)
            for secret in SECRETS:
                assert secret.encode() not in raw
            # The check can see plaintext: decoded with the key, the text is there.
            expected = ERROR_MESSAGE if workflow_id == recovery_id else REASON
            assert expected.encode() in opened
    finally:
        await _terminate(dev_env.client, recovery_id)
        await _terminate(dev_env.client, workflow_id_for("stripe"))
