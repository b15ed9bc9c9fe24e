"""schemathesis over the OpenAPI document: valid and invalid requests with an admin token.

No answer may be a 5xx other than a documented 503 (Temporal is unreachable on purpose, so
routes that need it answer 503 at once), and every answer must match its documented status,
media type and schema. `make test` runs a bounded number of examples per operation, drawn
from a fixed seed so that a failure there fails again on every run; `make fuzz`
(SWITCHYARD_FUZZ_EXAMPLES=...) runs many more from a random seed, which it prints first:
`make fuzz SEED=...` replays it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from conftest import TEST_KEYS, TEST_SECRET, reset_store
from schemathesis import Case, CheckContext, Response
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)
from security_support import claims, hmac_token, security_settings
from sqlalchemy import Engine

from api.app import create_app
from switchyard.settings import Settings

EXAMPLES = int(os.environ.get("SWITCHYARD_FUZZ_EXAMPLES", "12"))
SEED = int(os.environ.get("SWITCHYARD_FUZZ_SEED", "1"))
# Nothing internal may ever leave the API, whatever the input.
LEAKS = ("Traceback", 'File "', "sqlalchemy", "psycopg", "SELECT ", "INSERT INTO")


def _admin_token() -> str:
    return hmac_token(TEST_SECRET.encode(), claims(sub="fuzzer", roles=["admin"], exp=2**40))


def _document() -> dict[str, Any]:
    """The OpenAPI document, from an app that is never started (it needs no database)."""
    settings = Settings(jwt_secret=TEST_SECRET, encryption_keys=TEST_KEYS, database_url="sqlite://")
    return create_app(settings, prepare=False).openapi()


CONFIG = {
    # The same examples on every run (no example database either): reproducible.
    "seed": SEED,
    "headers": {"Authorization": f"Bearer {_admin_token()}"},
    "generation": {"mode": "all", "max-examples": EXAMPLES, "database": "none"},
    # Temporal is unreachable on purpose: its routes answer the documented 503.
    "checks": {"not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "503"]}},
}
# Loaded at import so pytest can parametrize by operation; requests go to `fuzzed_app`.
schema = schemathesis.openapi.from_dict(_document(), config=schemathesis.Config.from_dict(CONFIG))


@pytest.fixture(scope="module")
def fuzzed_app(
    engine: Engine, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """The API on the test store, Temporal unreachable, rate limits off."""
    reset_store(engine)
    home = tmp_path_factory.mktemp("fuzz")
    app = create_app(security_settings(database_url, home, rate_limit_enabled=False), prepare=False)
    yield app
    # schemathesis started the app's lifespan on first use; stop it with the module.
    shutdown_lifespans()


def sent_text(case: Case[Any]) -> str:
    """Everything the request carried, raw and as JSON, for telling an echo from a leak."""
    parts: list[Any] = [
        case.body,
        case.query,
        case.path_parameters,
        case.headers,
        case.cookies,
        case.formatted_path,
    ]
    strings: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(key)
                walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)
        elif isinstance(value, str | bytes):
            strings.append(value.decode(errors="replace") if isinstance(value, bytes) else value)

    walk(parts)
    return "\n".join([*strings, json.dumps(parts, default=str)])


def leaked_markers(answer: str, sent: str) -> list[str]:
    """The internal markers in an answer that the request did not carry itself."""
    return [marker for marker in LEAKS if marker in answer and marker not in sent]


@schemathesis.check
def nothing_internal(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    """No stack trace, file path or SQL in any answer (a string the client sent, echoed back,
    is not a leak)."""
    leaked = leaked_markers(response.text or "", sent_text(case))
    assert not leaked, f"answer leaks {leaked}"
    return None


def test_an_echo_of_the_request_is_not_a_leak() -> None:
    sent = json.dumps({"payloads": [{"metadata": {"SELECT 1": 2}}]})
    answer = '{"error": {"message": "invalid request: payloads.0.metadata.SELECT 1"}}'
    assert leaked_markers(answer, sent) == []
    assert leaked_markers(answer + ' File "/app/x.py"', sent) == ['File "']
    assert leaked_markers("sqlalchemy.exc.OperationalError", "{}") == ["sqlalchemy"]


@schema.parametrize()
def test_openapi_fuzz(case: Case[Any], fuzzed_app: Any) -> None:
    case.call_and_validate(
        app=fuzzed_app,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
            negative_data_rejection,
            nothing_internal,
        ],
    )
