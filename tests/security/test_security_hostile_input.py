"""Hostile input: one error envelope for every refusal, size and media-type limits, request
ids, and nothing internal (stack traces, SQL) in any answer."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from security_support import BASE
from sqlalchemy import Engine, select
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from api.auth import Role
from store.models import AuditEntry
from switchyard.settings import Settings

Auth = Callable[..., dict[str, str]]
URL = f"{BASE}/execute-coordination"
REQUEST = {"serviceName": "stripe", "operation": "payment_processing"}
LIMIT = 1_048_576


def _envelope(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["success"] is False and body["error"]["code"] == code
    assert response.headers["X-Request-ID"]
    return body


def test_unknown_paths_and_methods_get_the_envelope(api_client: TestClient, auth: Auth) -> None:
    _envelope(api_client.get("/no/such/path"), 404, "not_found")
    _envelope(api_client.delete(URL, headers=auth(Role.admin)), 405, "method_not_allowed")
    _envelope(api_client.get(URL, headers=auth(Role.admin)), 405, "method_not_allowed")


def test_a_body_over_the_limit_is_413_declared_or_chunked(
    api_client: TestClient, auth: Auth, sessions: sessionmaker[Session]
) -> None:
    headers = {**auth(Role.operator), "Content-Type": "application/json"}
    big = b'{"serviceName": "' + b"x" * LIMIT + b'"}'
    _envelope(api_client.post(URL, content=big, headers=headers), 413, "payload_too_large")

    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b" " * 65_536  # 1.25 MiB in all, no Content-Length

    _envelope(api_client.post(URL, content=chunks(), headers=headers), 413, "payload_too_large")
    with sessions() as session:
        outcomes = list(session.scalars(select(AuditEntry.outcome)))
    assert outcomes == ["413", "413"]  # refused writes are audited too


def test_a_chunked_body_within_the_limit_is_read_whole(api_client: TestClient, auth: Auth) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"serviceName": "stripe",'
        yield b' "operation": "payment_processing"}'

    headers = {**auth(Role.operator), "Content-Type": "application/json"}
    assert api_client.post(URL, content=chunks(), headers=headers).status_code == 200


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_a_body_that_is_not_json_is_415(
    api_client: TestClient, auth: Auth, content_type: str
) -> None:
    headers = {**auth(Role.operator), "Content-Type": content_type}
    response = api_client.post(URL, content=b"serviceName=stripe", headers=headers)
    _envelope(response, 415, "unsupported_media_type")


def test_json_media_types_with_parameters_are_accepted(api_client: TestClient, auth: Auth) -> None:
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        headers = {**auth(Role.operator), "Content-Type": content_type}
        response = api_client.post(
            URL, content=b'{"serviceName":"stripe","operation":"x"}', headers=headers
        )
        assert response.status_code == 200, (content_type, response.text)


@pytest.mark.parametrize(
    ("given", "echoed"),
    [("abc-123", True), ("trace:9f/01@edge=1", True), ("has space", False), ("x" * 101, False)],
)
def test_request_ids_are_echoed_when_sane(api_client: TestClient, given: str, echoed: bool) -> None:
    answered = api_client.get(f"{BASE}/health", headers={"X-Request-ID": given}).headers[
        "X-Request-ID"
    ]
    assert (answered == given) is echoed
    if not echoed:
        assert len(answered) == 32


@pytest.fixture
def failing_api(
    clean_store: Engine, make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    """The API whose coordinator fails with an internal error quoting SQL."""

    def explode(*_: object) -> None:
        raise ProgrammingError("SELECT secret FROM budget_spend WHERE x = 1", {}, Exception("boom"))

    monkeypatch.setattr("api.routes.coordination.execute_coordination", explode)
    app = create_app(make_settings(temporal_address="127.0.0.1:1"), prepare=False)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def test_internal_errors_say_nothing_internal(
    failing_api: TestClient, auth: Auth, sessions: sessionmaker[Session]
) -> None:
    headers = {**auth(Role.operator), "X-Request-ID": "oops-1"}
    response = failing_api.post(URL, json=REQUEST, headers=headers)
    body = _envelope(response, 500, "internal_error")
    assert body["error"] == {"code": "internal_error", "message": "internal error", "details": None}
    for leak in ("SELECT", "budget_spend", "Traceback", "boom", ".py"):
        assert leak not in response.text
    assert response.headers["X-Request-ID"] == "oops-1"
    with sessions() as session:
        entry = session.scalars(select(AuditEntry)).one()
    assert (entry.request_id, entry.outcome) == ("oops-1", "500")


def test_unexpected_exceptions_are_500_without_a_trace(
    clean_store: Engine,
    make_settings: Callable[..., Settings],
    auth: Auth,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def explode(*_: object) -> None:
        raise RuntimeError("/srv/app/secret.py line 3: password=hunter2")

    monkeypatch.setattr("api.routes.coordination.execute_coordination", explode)
    app = create_app(make_settings(temporal_address="127.0.0.1:1"), prepare=False)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post(
            URL, json=REQUEST, headers={**auth(Role.operator), "X-Request-ID": "r-7"}
        )
    _envelope(response, 500, "internal_error")
    assert "hunter2" not in response.text and "secret.py" not in response.text
    assert response.headers["X-Request-ID"] == "r-7"


CODEC = "/codec/decode"  # the Temporal UI calls it at the root


def test_a_422_names_five_fields_and_counts_the_rest(api_client: TestClient, auth: Auth) -> None:
    # Every metadata value must be a string: each of the twelve keys is refused.
    metadata = {f"key{i:02d}": i for i in range(12)}
    response = api_client.post(
        CODEC, json={"payloads": [{"metadata": metadata}]}, headers=auth(Role.viewer)
    )
    error = _envelope(response, 422, "validation_error")["error"]
    named = ", ".join(f"payloads.0.metadata.key{i:02d}" for i in range(5))
    assert error["message"] == f"invalid request: {named} and 7 more"
    assert [d["field"] for d in error["details"]] == [
        f"payloads.0.metadata.key{i:02d}" for i in range(12)
    ]


def test_a_422_escapes_control_characters_and_clips_long_names(
    api_client: TestClient, auth: Auth
) -> None:
    long_key = "SELECT 1 " + "x" * 500
    metadata = {"bell\x07\nnext": 1, long_key: 2}
    response = api_client.post(
        CODEC, json={"payloads": [{"metadata": metadata}]}, headers=auth(Role.viewer)
    )
    error = _envelope(response, 422, "validation_error")["error"]
    message = error["message"]
    assert "payloads.0.metadata.bell\\x07\\nnext" in message
    assert "\x07" not in message and "\n" not in message
    clipped = ("payloads.0.metadata." + long_key)[:63] + "…"
    assert clipped in message and "x" * 100 not in message
    assert {d["field"] for d in error["details"]} == {
        "payloads.0.metadata.bell\\x07\\nnext",
        clipped,
    }


def test_details_are_capped_at_fifty(api_client: TestClient, auth: Auth) -> None:
    payloads = [{"metadata": {"k": 1}} for _ in range(80)]
    response = api_client.post(CODEC, json={"payloads": payloads}, headers=auth(Role.viewer))
    error = _envelope(response, 422, "validation_error")["error"]
    assert len(error["details"]) == 50
    assert error["message"].endswith(" and 75 more")
