"""switchyard_client.Switchyard against the real API served by uvicorn: retries, reports that
move health and breakers, fail-open while the API is stopped, rejections raised at once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta

import httpx
import pytest
from client_support import (
    BASE,
    DEADLINE,
    GENEROUS_LIMITS,
    PREMIUM,
    PRIMARY,
    SECONDARY,
    ProviderDown,
    RestartableApi,
    failing,
    outcomes_stored,
    paying,
    wait_until,
)
from conftest import TEST_KEYS
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from switchyard_client import Decision, Hooks, RequestRejected, Switchyard, attempts_of

from api.app import create_app
from api.auth import Role
from store.base import utcnow
from store.crypto import FieldCipher
from store.db import transaction
from store.emergencies import open_emergency
from switchyard.settings import Settings

PAY = ("stripe", "payment_processing")
CRITICAL = {"priority": "CRITICAL", "business_criticality": "REVENUE_BLOCKING"}


@pytest.fixture
def api(clean_store: Engine, make_settings: Callable[..., Settings]) -> Iterator[RestartableApi]:
    """The API on a clean store, with limits for hundreds of requests."""
    settings = make_settings(**GENEROUS_LIMITS)
    with RestartableApi(lambda: create_app(settings, prepare=False)) as served:
        yield served


@pytest.fixture
def operator(token: Callable[..., str]) -> str:
    """The token a calling service holds."""
    return token(Role.operator, sub="checkout-service")


@pytest.fixture
def viewer(token: Callable[..., str]) -> str:
    """A token for reading GET /providers."""
    return token(Role.viewer, sub="dashboard")


def test_a_call_whose_first_node_fails_is_retried_on_another_node(
    api: RestartableApi, operator: str
) -> None:
    decisions: list[Decision] = []
    handlers = {PRIMARY: failing(PRIMARY), SECONDARY: paying(SECONDARY)}
    with Switchyard(
        api.url, operator, hooks=Hooks(on_decision=decisions.append), decision_deadline=DEADLINE
    ) as sy:
        assert sy.call(*PAY, handlers, "order-1", **CRITICAL) == f"paid by {SECONDARY} for order-1"
        assert sy.counters.retries == 1
    assert [(d.node_id, d.decided_locally) for d in decisions] == [
        (PRIMARY, False),
        (SECONDARY, False),
    ]
    # The retry was Switchyard's decision for a request that failed on the primary.
    assert decisions[1].raw["routingDecision"]["excludedNodes"][0] == {
        "nodeId": PRIMARY,
        "reason": "failed_provider",
        "detail": "reported as failed by the caller (failedProviders)",
    }


def test_reported_outcomes_move_the_providers_figures(
    api: RestartableApi, operator: str, viewer: str, sessions: sessionmaker[Session]
) -> None:
    before = api.provider(PRIMARY, viewer)["health"]
    calls = iter(range(10))

    def sometimes(*_: object) -> str:
        if next(calls) % 4 == 3:  # calls 3 and 7 fail
            raise ProviderDown("card processor unavailable")
        return "paid"

    handlers = {PRIMARY: sometimes, SECONDARY: paying(SECONDARY)}
    # Nothing is sent before flush(): every first attempt is decided on the same figures.
    with Switchyard(api.url, operator, report_interval=60.0, decision_deadline=DEADLINE) as sy:
        for _ in range(8):
            sy.call(*PAY, handlers, **CRITICAL)
        assert sy.counters.reports_sent == 0
        assert sy.flush(timeout=30)
        assert sy.counters.reports_sent == 10
    after = api.provider(PRIMARY, viewer)["health"]
    assert (before["observations"], after["observations"]) == (0, 8)
    assert after["successRate"] < before["successRate"]
    assert after["healthScore"] < before["healthScore"]
    assert api.provider(SECONDARY, viewer)["health"]["observations"] == 2
    assert outcomes_stored(sessions, PRIMARY) == 8


def test_a_burst_of_failures_opens_the_breaker_and_later_decisions_avoid_it(
    api: RestartableApi, operator: str, viewer: str
) -> None:
    handlers = {PRIMARY: failing(PRIMARY), SECONDARY: paying(SECONDARY)}
    with Switchyard(api.url, operator, report_interval=60.0, decision_deadline=DEADLINE) as sy:
        for _ in range(5):  # BREAKER_CONSECUTIVE_FAILURES
            assert sy.call(*PAY, handlers, **CRITICAL) == f"paid by {SECONDARY}"
        assert sy.flush(timeout=30)
        assert api.provider(PRIMARY, viewer)["breaker"]["state"] == "OPEN"
        # The API reloads its snapshot with the breaker; from then on the primary is avoided.
        wait_until(lambda: sy.decide(*PAY, **CRITICAL).node_id == SECONDARY, what="a reload")
        decision = sy.decide(*PAY, **CRITICAL)
        excluded = {
            e["nodeId"]: e["reason"] for e in decision.raw["routingDecision"]["excludedNodes"]
        }
        assert excluded[PRIMARY] == "breaker_open"
        assert sy.call(*PAY, handlers, **CRITICAL) == f"paid by {SECONDARY}"
        # The outcomes' answer told the client's catalog copy too: local decisions avoid it.
        assert sy.catalog is not None
        primary = next(n for n in sy.catalog.services["stripe"] if n.node_id == PRIMARY)
        assert primary.breaker_state == "OPEN"


def test_with_the_api_stopped_calls_go_on_locally_and_reports_arrive_when_it_is_back(
    api: RestartableApi, operator: str, sessions: sessionmaker[Session]
) -> None:
    decisions: list[Decision] = []
    handlers = {PRIMARY: paying(PRIMARY), SECONDARY: paying(SECONDARY)}
    hooks = Hooks(on_decision=decisions.append)
    with Switchyard(
        api.url, operator, catalog_refresh_interval=0.2, hooks=hooks, decision_deadline=DEADLINE
    ) as sy:
        wait_until(lambda: sy.catalog is not None, what="the first catalog copy")
        for n in range(5):
            assert sy.call(*PAY, handlers, n, **CRITICAL) == f"paid by {PRIMARY} for {n}"
        api.stop()
        results = [sy.call(*PAY, handlers, n, **CRITICAL) for n in range(5, 15)]
        assert results == [f"paid by {PRIMARY} for {n}" for n in range(5, 15)]
        assert [d.decided_locally for d in decisions] == [False] * 5 + [True] * 10
        assert sy.counters.local_decisions == 10
        assert "ConnectError" in decisions[5].reason
        api.start()
        assert sy.flush(timeout=30)
        assert outcomes_stored(sessions, PRIMARY) == 15
        assert sy.counters.snapshot()["reports_sent"] == 15
        wait_until(lambda: not sy.decide(*PAY).decided_locally, what="Switchyard to decide")


def test_a_bad_token_raises_at_once_with_the_servers_message(
    api: RestartableApi, viewer: str
) -> None:
    answer = httpx.post(
        api.url + BASE + "/execute-coordination",
        json={"serviceName": "stripe", "operation": "payment_processing"},
        headers={"Authorization": "Bearer not-a-token"},
    ).json()["error"]
    called: list[str] = []
    with Switchyard(api.url, "not-a-token", decision_deadline=DEADLINE) as sy:
        with pytest.raises(RequestRejected) as raised:
            sy.call(*PAY, {PRIMARY: called.append})
        assert (raised.value.status, raised.value.code) == (401, "unauthorized")
        assert raised.value.message == answer["message"]
        assert called == [] and sy.counters.local_decisions == 0
    with (
        Switchyard(api.url, viewer, decision_deadline=DEADLINE) as sy,
        pytest.raises(RequestRejected) as forbidden,
    ):
        sy.decide(*PAY)
    assert (forbidden.value.status, forbidden.value.code) == (403, "forbidden")
    assert "operate" in forbidden.value.message


def test_switchyards_refusal_is_raised_not_decided_around(
    api: RestartableApi, operator: str
) -> None:
    with Switchyard(api.url, operator, decision_deadline=DEADLINE) as sy:
        with pytest.raises(RequestRejected) as raised:
            sy.call(*PAY, {PRIMARY: paying(PRIMARY)}, cost_per_request_limit=0.001)
        assert (raised.value.status, raised.value.code) == (503, "no_eligible_node")
        reasons = {e["reason"] for e in raised.value.details["excludedNodes"]}
        assert "cost_above_limit" in reasons
        assert sy.counters.local_decisions == 0
        with pytest.raises(RequestRejected) as invalid:
            sy.decide("no-such-service", "x")
        assert (invalid.value.status, invalid.value.code) == (422, "validation_error")
        assert invalid.value.details[0]["field"] == "serviceName"


class LoseFirstOutcomesAnswer(httpx.HTTPTransport):
    """Delivers every request, but drops the connection as the first POST /outcomes answer
    comes back: Switchyard committed the batch, the client never heard."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: list[str] = []
        self.replayed: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.url.path.endswith("/outcomes"):
            self.keys.append(request.headers["Idempotency-Key"])
            self.replayed.append(response.headers.get("Idempotent-Replayed", "false"))
            if len(self.keys) == 1:
                response.close()
                raise httpx.ReadError("connection reset", request=request)
        return response


def test_a_batch_whose_answer_was_lost_is_sent_again_and_counted_once(
    api: RestartableApi, operator: str, sessions: sessionmaker[Session]
) -> None:
    transport = LoseFirstOutcomesAnswer()
    handlers = {PRIMARY: paying(PRIMARY)}
    with Switchyard(
        api.url, operator, report_interval=60.0, transport=transport, decision_deadline=DEADLINE
    ) as sy:
        for _ in range(3):
            sy.call(*PAY, handlers, **CRITICAL)
        assert sy.flush(timeout=30)
    assert len(transport.keys) == 2 and transport.keys[0] == transport.keys[1]
    assert transport.replayed == ["false", "true"]
    assert outcomes_stored(sessions, PRIMARY) == 3


def test_locally_emergency_only_nodes_serve_only_under_an_emergency_it_knows_of(
    api: RestartableApi, operator: str, sessions: sessionmaker[Session]
) -> None:
    with Switchyard(
        api.url, operator, catalog_refresh_interval=0.2, decision_deadline=DEADLINE
    ) as sy:
        wait_until(lambda: sy.catalog is not None, what="the first catalog copy")
        started = utcnow()
        with transaction(sessions) as session:
            open_emergency(
                session=session,
                workflow_id="emergency:stripe",
                coordination_id="emergency_client_test",
                service="stripe",
                operation="payment_processing",
                emergency_reason="card processor outage",
                business_justification="checkout is down",
                max_budget_override=5000.0,
                started_at=started,
                deadline=started + timedelta(minutes=30),
                cipher=FieldCipher.from_keys(TEST_KEYS),
            )
        wait_until(
            lambda: sy.catalog is not None and "stripe" in sy.catalog.emergencies,
            what="the copy to know the emergency",
        )
        api.stop()
        decision = sy.decide(*PAY)
        assert (decision.node_id, decision.decided_locally) == (PREMIUM, True)
        # Samsara has no emergency: its regular nodes only.
        assert sy.decide("samsara", "gps_tracking").node_id == "samsara_primary"


def test_every_attempt_rides_on_the_last_error(api: RestartableApi, operator: str) -> None:
    handlers = {PRIMARY: failing(PRIMARY), SECONDARY: failing(SECONDARY)}
    with (
        Switchyard(api.url, operator, max_attempts=2, decision_deadline=DEADLINE) as sy,
        pytest.raises(ProviderDown, match=SECONDARY) as raised,
    ):
        sy.call(*PAY, handlers, **CRITICAL)
    attempts = attempts_of(raised.value)
    assert [(a.number, a.node_id, type(a.error)) for a in attempts] == [
        (1, PRIMARY, ProviderDown),
        (2, SECONDARY, ProviderDown),
    ]
    assert all(a.coordination_id for a in attempts)
