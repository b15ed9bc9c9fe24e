"""A routing decision as the caller sees it, whether Switchyard or the client made it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Hedge:
    """A second request Switchyard suggests: to `node_id`, if the first has not answered
    within `delay_ms` (an idempotent operation under a recovery's redundancy plan). Send the
    same request there and take the first answer; `estimated_cost` already counts it."""

    node_id: str
    provider_name: str
    delay_ms: float


@dataclass(frozen=True)
class Decision:
    """Where one request goes: the node, by which strategy, and who decided."""

    service: str
    operation: str
    node_id: str
    provider_name: str
    strategy: str
    # Switchyard's id of the recorded decision; None for a decision made locally.
    coordination_id: str | None
    decided_locally: bool
    reason: str
    estimated_cost: float | None = None
    hedge: Hedge | None = None
    # Switchyard's `data` object as it answered it, or the local decision's own account.
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)


class MalformedAnswer(ValueError):
    """A 2xx answer that is not an execute-coordination result (a proxy's page, say)."""


def server_decision(service: str, operation: str, answer: Any) -> Decision:
    """The decision in execute-coordination's answer envelope."""
    try:
        data = answer["data"]
        routing = data["routingDecision"]
        node = routing["selectedNode"]
        return Decision(
            service=service,
            operation=operation,
            node_id=str(node["nodeId"]),
            provider_name=str(node.get("providerName", node["nodeId"])),
            strategy=str(routing["routingStrategy"]),
            coordination_id=str(data["coordinationId"]),
            decided_locally=False,
            reason=str(routing.get("decisionReason", "")),
            estimated_cost=routing.get("estimatedCost"),
            hedge=_hedge(routing.get("hedge")),
            raw=data,
        )
    except (KeyError, TypeError) as exc:
        raise MalformedAnswer(f"not an execute-coordination answer: missing {exc}") from None


def _hedge(block: Any) -> Hedge | None:
    if not block:
        return None
    return Hedge(
        node_id=str(block["nodeId"]),
        provider_name=str(block.get("providerName", block["nodeId"])),
        delay_ms=float(block["delayMs"]),
    )
