"""Rate limits per principal and route class: 429 with Retry-After and X-RateLimit-* headers."""

from __future__ import annotations

import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient
from security_support import BASE
from sqlalchemy import Engine

from api.app import create_app
from api.auth import Role
from api.ratelimit import RateLimiter, SweepingMemoryStorage
from switchyard.settings import Settings

Token = Callable[..., str]
DECIDE = f"{BASE}/execute-coordination"
READ = f"{BASE}/coordination-analytics"
REQUEST = {"serviceName": "stripe", "operation": "payment_processing"}
REDIS = "redis://127.0.0.1:6379"


@contextmanager
def _api(make_settings: Callable[..., Settings], **overrides: object) -> Iterator[TestClient]:
    settings = make_settings(temporal_address="127.0.0.1:1", **overrides)
    with TestClient(create_app(settings, prepare=False)) as client:
        yield client


def _as(token: Token, sub: str, role: Role = Role.operator) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(role, sub=sub)}"}


def test_a_spent_decision_limit_answers_429_with_the_headers(
    clean_store: Engine, make_settings: Callable[..., Settings], token: Token
) -> None:
    with _api(make_settings, rate_limit_decide="3/minute", rate_limit_read="5/minute") as api:
        alice, bob = _as(token, "alice"), _as(token, "bob")
        remaining = []
        for _ in range(3):
            ok = api.post(DECIDE, json=REQUEST, headers=alice)
            assert ok.status_code == 200
            assert ok.headers["X-RateLimit-Limit"] == "3"
            remaining.append(int(ok.headers["X-RateLimit-Remaining"]))
            assert int(ok.headers["X-RateLimit-Reset"]) > 1_700_000_000  # epoch seconds
        assert remaining == [2, 1, 0]

        refused = api.post(DECIDE, json=REQUEST, headers=alice)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limited"
        assert "3 per 1 minute" in refused.json()["error"]["message"]
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert refused.headers["X-RateLimit-Remaining"] == "0"
        assert refused.headers["X-RateLimit-Limit"] == "3"

        # Another principal, and reads, have their own budgets; health is never limited.
        assert api.post(DECIDE, json=REQUEST, headers=bob).status_code == 200
        assert api.get(READ, headers=alice).status_code == 200
        for _ in range(8):
            health = api.get(f"{BASE}/health")
            assert health.status_code == 200 and "X-RateLimit-Limit" not in health.headers


def test_outcome_reports_have_their_own_larger_budget(
    clean_store: Engine, make_settings: Callable[..., Settings], token: Token
) -> None:
    # A caller reporting outcomes all day must not spend the budget its decisions need.
    report = {"outcomes": [{"nodeId": "stripe_primary_us_east", "success": True, "latencyMs": 90}]}
    with _api(make_settings, rate_limit_decide="2/minute", rate_limit_ingest="4/minute") as api:
        dave = _as(token, "dave")
        for expected in (3, 2, 1, 0):
            ok = api.post(f"{BASE}/outcomes", json=report, headers=dave)
            assert ok.status_code == 202, ok.text
            assert ok.headers["X-RateLimit-Limit"] == "4"
            assert ok.headers["X-RateLimit-Remaining"] == str(expected)
        refused = api.post(f"{BASE}/outcomes", json=report, headers=dave)
        assert refused.status_code == 429
        assert refused.json()["error"]["details"]["routeClass"] == "ingest"
        # The decision budget is untouched by the reports.
        decision = api.post(DECIDE, json=REQUEST, headers=dave)
        assert decision.status_code == 200
        assert decision.headers["X-RateLimit-Remaining"] == "1"


def test_limits_can_be_turned_off(
    clean_store: Engine, make_settings: Callable[..., Settings], token: Token
) -> None:
    with _api(make_settings, rate_limit_decide="1/minute", rate_limit_enabled=False) as api:
        for _ in range(3):
            response = api.post(DECIDE, json=REQUEST, headers=_as(token, "carol"))
            assert response.status_code == 200
            assert "X-RateLimit-Limit" not in response.headers


def test_unusable_limits_fail_at_start_up(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ValueError):
        create_app(make_settings(rate_limit_decide="lots"), prepare=False)
    with pytest.raises(ValueError, match="STRATEGY"):
        create_app(make_settings(rate_limit_strategy="leaky-bucket"), prepare=False)


def _redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not _redis_up(), reason="no Redis on 127.0.0.1:6379")
@pytest.mark.parametrize("strategy", ["fixed-window", "moving-window", "sliding-window-counter"])
def test_redis_shares_the_count_between_api_replicas(
    clean_store: Engine, make_settings: Callable[..., Settings], token: Token, strategy: str
) -> None:
    subject = f"replicated-{uuid.uuid4().hex[:8]}"  # fresh counters in the shared Redis
    limits = {
        "rate_limit_storage": REDIS,
        "rate_limit_strategy": strategy,
        "rate_limit_decide": "3/minute",
    }
    with _api(make_settings, **limits) as first, _api(make_settings, **limits) as second:
        headers = _as(token, subject)
        assert first.post(DECIDE, json=REQUEST, headers=headers).status_code == 200
        assert second.post(DECIDE, json=REQUEST, headers=headers).status_code == 200
        assert first.post(DECIDE, json=REQUEST, headers=headers).status_code == 200
        refused = second.post(DECIDE, json=REQUEST, headers=headers)
        assert refused.status_code == 429
        assert "Retry-After" in refused.headers


def test_an_unreachable_limit_store_lets_requests_through(
    clean_store: Engine, make_settings: Callable[..., Settings], token: Token
) -> None:
    with _api(make_settings, rate_limit_storage="redis://127.0.0.1:1") as api:
        response = api.post(DECIDE, json=REQUEST, headers=_as(token, "dave"))
    assert response.status_code == 200
    assert "X-RateLimit-Limit" not in response.headers


def test_the_memory_limiter_starts_no_thread_per_request(
    clean_store: Engine,
    make_settings: Callable[..., Settings],
    token: Token,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # limits' stock memory storage starts a Timer thread per burst; ours sweeps inline.
    timers: list[threading.Timer] = []
    start = threading.Timer.start

    def counted(timer: threading.Timer) -> None:
        timers.append(timer)
        start(timer)

    monkeypatch.setattr(threading.Timer, "start", counted)
    with _api(make_settings, rate_limit_decide="1000/minute") as api:
        headers = _as(token, "erin")
        created = len(timers)  # the storage's first timer, at start-up
        for _ in range(10):
            assert api.post(DECIDE, json=REQUEST, headers=headers).status_code == 200
            time.sleep(0.02)  # longer than the stock storage's 10 ms timer
        assert len(timers) == created


def test_the_memory_limiter_forgets_spent_windows(make_settings: Callable[..., Settings]) -> None:
    limiter = RateLimiter(make_settings(rate_limit_control="2/second"))
    assert limiter.hit("frank", "POST").remaining == 1  # type: ignore[union-attr]
    assert limiter.hit("frank", "POST").remaining == 0  # type: ignore[union-attr]
    assert limiter.hit("frank", "POST").exceeded  # type: ignore[union-attr]
    time.sleep(1.1)
    state = limiter.hit("frank", "POST")
    assert state is not None and not state.exceeded and state.remaining == 1
    storage = limiter.storage
    assert isinstance(storage, SweepingMemoryStorage)
    assert len(storage.storage) == 1  # the spent window was swept, only the new one is left


BREAKER = f"{BASE}/providers/stripe_backup_eu_west/breaker"


def test_default_limits_carry_a_busy_service_and_hold_back_the_control_plane(
    clean_store: Engine,
    make_settings: Callable[..., Settings],
    token: Token,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The defaults, as a new user meets them. 1,000 decisions from one principal as fast as
    # the test client sends them: more per window than 50 a second for 20 s would be.
    with _api(make_settings) as api:
        refused_before = _refused(api, "control")
        service = _as(token, "checkout")
        statuses = {
            api.post(DECIDE, json=REQUEST, headers=service).status_code for _ in range(1000)
        }
        assert statuses == {200}

        # A burst of control-plane writes (breaker commands) is still held back.
        commander = _as(token, "oncall", Role.incident_commander)
        command = {"state": "AUTO", "reason": "burst"}
        answers = [api.post(BREAKER, json=command, headers=commander) for _ in range(130)]
        refused = [a for a in answers if a.status_code == 429]
        assert len(refused) == 10  # 120 a minute by default
        assert refused[0].json()["error"]["details"]["routeClass"] == "control"

        assert _refused(api, "control") - refused_before == 10
        # One log line for the principal's ten refusals in this minute, not ten.
        lines = [r for r in caplog.records if "rate limit of" in r.getMessage()]
        assert len(lines) == 1 and "oncall" in lines[0].getMessage()


def _refused(api: TestClient, route_class: str) -> float:
    """The /metrics count of 429s for a route class (process-wide, so tests compare deltas)."""
    pattern = rf'^switchyard_rate_limited_total{{route_class="{route_class}"}} (\S+)$'
    found = re.search(pattern, api.get("/metrics").text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_the_old_write_setting_still_limits_the_control_plane(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SWITCHYARD_RATE_LIMIT_WRITE", "7/minute")
    assert Settings().rate_limit_control == "7/minute"
