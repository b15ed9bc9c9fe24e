"""Switchyard's answers as the unit tests need them, and a scripted stand-in behind httpx's
MockTransport (the tests against the real API live in the repository's tests/clients)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

PRIMARY = "stripe_primary_us_east"
SECONDARY = "stripe_secondary_us_west"
PREMIUM = "stripe_premium_emergency"
PREFIX = "/api/v1/enhanced-traffic-coordination"


def provider(
    node_id: str,
    service: str = "stripe",
    *,
    health: float = 95.0,
    success: float = 99.8,
    cost: float = 0.029,
    state: str = "CLOSED",
    forced: str | None = None,
    seconds_to_half_open: float | None = None,
    enabled: bool = True,
    emergency_only: bool = False,
    share: float = 1.0,
) -> dict[str, Any]:
    """One entry of GET /providers, shaped as api/schemas/providers.py answers it."""
    return {
        "nodeId": node_id,
        "serviceName": service,
        "providerName": node_id.replace("_", " ").title(),
        "region": "us-east-1",
        "enabled": enabled,
        "emergencyOnly": emergency_only,
        "catalog": {
            "successRate": success,
            "costPerRequest": cost,
            "latencyMs": 150.0,
            "healthScore": health,
            "latencySloMs": 2000.0,
            "errorRateSlo": 5.0,
        },
        "health": {
            "healthScore": health,
            "successRate": success,
            "latencyP50Ms": 150.0,
            "latencyP95Ms": 150.0,
            "observations": 0,
            "admittedShare": share,
        },
        "breaker": {
            "state": state,
            "forced": forced,
            "trips": 0,
            "secondsToHalfOpen": seconds_to_half_open,
        },
        "prediction": {"failureProbability": 0.0, "threshold": 0.8},
    }


def stripe(**overrides: dict[str, Any]) -> list[dict[str, Any]]:
    """The default catalog's stripe nodes; `overrides` by node id."""
    nodes = [
        provider(PRIMARY, health=95.0, success=99.8, cost=0.029),
        provider(SECONDARY, health=90.0, success=99.5, cost=0.032),
        provider(PREMIUM, health=98.0, success=99.9, cost=0.15, emergency_only=True),
    ]
    return [
        provider(n["nodeId"], **overrides[n["nodeId"]]) if n["nodeId"] in overrides else n
        for n in nodes
    ]


def providers_answer(nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """The envelope of GET /providers."""
    return {"success": True, "data": {"providers": nodes}}


def emergency_answer(
    service: str, started: str, deadline: str, age_seconds: float
) -> dict[str, Any]:
    """GET /active-coordinations with one active emergency."""
    item = {
        "workflowId": f"emergency:{service}",
        "kind": "emergency",
        "serviceName": service,
        "phase": "active",
        "startedAt": started,
        "ageSeconds": age_seconds,
        "temporalUiUrl": "http://ui",
        "deadline": deadline,
    }
    return {"success": True, "data": {"coordinations": [item]}}


def decision_answer(node_id: str, strategy: str = "HEALTH_BASED") -> dict[str, Any]:
    """An execute-coordination answer choosing `node_id`."""
    return {
        "success": True,
        "data": {
            "coordinationId": f"coordination_1_{node_id}",
            "routingDecision": {
                "selectedNode": {"nodeId": node_id, "providerName": node_id},
                "routingStrategy": strategy,
                "decisionReason": f"Selected {node_id}",
                "estimatedCost": 0.029,
            },
        },
    }


def error_answer(code: str, message: str, details: Any = None) -> dict[str, Any]:
    """Switchyard's error envelope."""
    return {"success": False, "error": {"code": code, "message": message, "details": details}}


Script = Callable[[httpx.Request], httpx.Response]


@dataclass
class FakeSwitchyard:
    """Answers per path from scripted functions; records every request it got."""

    routes: dict[str, Script] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.routes.setdefault("GET /providers", lambda _: reply(200, providers_answer(stripe())))
        self.routes.setdefault(
            "GET /active-coordinations",
            lambda _: reply(200, {"success": True, "data": {"coordinations": []}}),
        )
        self.routes.setdefault("POST /outcomes", lambda _: reply(202, {"data": {"nodes": []}}))

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path.removeprefix(PREFIX)
        script = self.routes.get(f"{request.method} {path}")
        if script is None:
            return reply(404, error_answer("not_found", path))
        return script(request)

    def sent(self, method: str, path: str) -> list[httpx.Request]:
        """The requests made to one route."""
        return [
            r
            for r in self.requests
            if r.method == method and r.url.path.removeprefix(PREFIX) == path
        ]

    def bodies(self, method: str, path: str) -> list[Any]:
        """The JSON bodies sent to one route."""
        return [json.loads(r.content) for r in self.sent(method, path)]


def reply(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    """A JSON answer."""
    return httpx.Response(status, json=body, headers=headers)
