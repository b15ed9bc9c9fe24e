"""Routing context in Python names on the wire, and the default call classification."""

from __future__ import annotations

import asyncio
from enum import Enum

import httpx
import pytest

from switchyard_client import Classification, default_classify, failure
from switchyard_client.classify import resolve
from switchyard_client.context import MAX_FAILED_PROVIDERS, routing_request


class Priority(Enum):
    CRITICAL = "CRITICAL"


def test_python_names_go_to_their_camel_case_blocks() -> None:
    request = routing_request(
        "stripe",
        "payment_processing",
        {
            "priority": Priority.CRITICAL,
            "business_criticality": "REVENUE_BLOCKING",
            "request_id": "payment_req_12345",
            "remaining_budget": 1000,
            "cost_per_request_limit": 0.1,
            "current_latency": 800,
            "target_latency": 300,
            "error_stream_id": "error_stream_stripe_001",
            "require_backend_agent_sync": True,
            "revenue_impact": 5000,
            "preferred_strategy": None,  # None: left out
        },
    )
    assert request.body == {
        "serviceName": "stripe",
        "operation": "payment_processing",
        "routingContext": {
            "requestMetadata": {
                "priority": "CRITICAL",
                "businessCriticality": "REVENUE_BLOCKING",
                "requestId": "payment_req_12345",
            },
            "budgetConstraints": {"remainingBudget": 1000, "costPerRequestLimit": 0.1},
            "performanceContext": {"currentLatency": 800, "targetLatency": 300},
        },
        "backendAgentContext": {"errorStreamId": "error_stream_stripe_001"},
        "coordinationRequirements": {"requireBackendAgentSync": True},
        "businessContext": {"revenueImpact": 5000},
    }
    assert (request.cost_per_request_limit, request.remaining_budget) == (0.1, 1000.0)
    assert request.request_id == "payment_req_12345"


def test_failed_providers_join_the_callers_own_and_stay_within_the_servers_limit() -> None:
    request = routing_request("stripe", "pay", {"failed_providers": ["a", "b"]}, ["b", "c"])
    assert request.body["routingContext"]["failedProviders"] == ["a", "b", "c"]
    many = routing_request("stripe", "pay", {}, [f"n{i}" for i in range(30)])
    assert len(many.failed_providers) == MAX_FAILED_PROVIDERS
    assert many.failed_providers[-1] == "n29"  # the most recent failures are kept


def test_an_unknown_name_is_refused_before_anything_is_sent() -> None:
    with pytest.raises(TypeError, match="unknown routing context 'priorty'"):
        routing_request("stripe", "pay", {"priorty": "CRITICAL"})
    with pytest.raises(TypeError, match="list of node ids"):
        routing_request("stripe", "pay", {"failed_providers": "stripe_primary_us_east"})


class Answer:
    """A provider SDK's response with a status."""

    def __init__(self, status_code: int) -> None:
        self.status_code = status_code


class DeclinedCard(Exception):
    http_status = 402


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("paid", Classification("success")),
        (Answer(200), Classification("success")),
        (Answer(404), Classification("success")),  # the provider answered: the caller's error
        (Answer(429), Classification("refusal", "429")),
        (Answer(503), Classification("failure", "503")),
        (ConnectionError("refused"), Classification("failure", "ConnectionError")),
        (TimeoutError(), Classification("failure", "timeout")),
        (asyncio.TimeoutError(), Classification("failure", "timeout")),
        (httpx.ReadTimeout("slow"), Classification("failure", "timeout")),
        (DeclinedCard(), Classification("success")),
        (
            httpx.HTTPStatusError(
                "429",
                request=httpx.Request("GET", "http://p"),
                response=httpx.Response(429),
            ),
            Classification("refusal", "429"),
        ),
    ],
)
def test_default_classification(value: object, expected: Classification) -> None:
    assert default_classify(value) == expected


def test_the_callers_hook_decides_and_none_falls_back_to_the_defaults() -> None:
    def payments(value: object) -> Classification | bool | None:
        if isinstance(value, dict):
            return value.get("status") == "succeeded"
        if value == "busy":
            return failure("provider_busy")
        return None

    assert resolve(payments, {"status": "succeeded"}).succeeded
    assert resolve(payments, {"status": "failed"}) == Classification("failure", "error")
    assert resolve(payments, "busy") == Classification("failure", "provider_busy")
    assert resolve(payments, Answer(503)) == Classification("failure", "503")


def test_a_hedge_in_the_answer_is_the_decisions() -> None:
    from switchyard_client import Hedge
    from switchyard_client.decision import server_decision

    routing = {
        "selectedNode": {"nodeId": "samsara_backup", "providerName": "Samsara Backup"},
        "routingStrategy": "AVAILABILITY_FOCUSED",
        "estimatedCost": 0.061,
    }
    answer = {"data": {"coordinationId": "c1", "routingDecision": routing}}
    assert server_decision("samsara", "gps_tracking", answer).hedge is None

    routing["hedge"] = {
        "nodeId": "samsara_secondary_eu",
        "providerName": "Samsara Secondary (EU)",
        "delayMs": 500.0,
    }
    decision = server_decision("samsara", "gps_tracking", answer)
    assert decision.hedge == Hedge("samsara_secondary_eu", "Samsara Secondary (EU)", 500.0)
