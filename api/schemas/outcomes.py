"""Request and response models of POST outcomes."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from api.schemas.common import ResponseModel, WireModel

MAX_BATCH = 1000


class OutcomeIn(WireModel):
    """One call the client made to a node, reported after it completed."""

    coordination_id: str | None = Field(default=None, min_length=1, max_length=100)
    node_id: str = Field(min_length=1, max_length=100)
    success: bool
    latency_ms: float = Field(ge=0, le=3_600_000, description="Milliseconds; never negative.")
    cost: float | None = Field(default=None, ge=0, le=1e6)
    error_code: str | None = Field(default=None, max_length=100)
    observed_at: datetime | None = Field(
        default=None, description="When the call completed; the receive time when absent."
    )


class OutcomeBatch(WireModel):
    """Body of POST outcomes: 1 to 1000 reports."""

    outcomes: list[OutcomeIn] = Field(min_length=1, max_length=MAX_BATCH)


class OutcomeNode(ResponseModel):
    """A node's live figures after the batch."""

    node_id: str
    reported: int
    health_score: float
    success_rate: float
    latency_p50_ms: float
    latency_p95_ms: float
    observations: int
    breaker_state: str
    failure_probability: float
    # Share of first attempts routing offers the node while it refuses for rate limiting
    # (1: all of them); see docs/ROUTING.md, "A rate-limited node's admitted share".
    admitted_share: float = 1.0
    # Calls per second the node was seen to take while refusing (None: not known).
    rate_capacity: float | None = None


class BreakerTransitionOut(ResponseModel):
    """A breaker the batch moved."""

    node_id: str
    service_name: str
    previous_state: str
    state: str
    reason: str


class OutcomeBatchResult(ResponseModel):
    """What the batch changed; a replay with the same Idempotency-Key answers the same."""

    accepted: int
    failed: int
    nodes: list[OutcomeNode]
    breaker_transitions: list[BreakerTransitionOut]
