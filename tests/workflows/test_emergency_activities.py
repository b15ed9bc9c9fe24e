"""EmergencyActivities on the test store, run in ActivityEnvironment: effects applied once."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import Session, sessionmaker
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.emergency import EmergencyActivities
from routing.decide import decide
from routing.types import EmergencyRequired, RoutingDecision, RoutingRequest, Strategy
from store.base import utcnow
from store.db import transaction
from store.models import Coordination, Emergency, Event, IncidentRow, RoutingOverrideRow
from store.snapshot import load_snapshot
from switchyard.settings import Settings
from workflows.emergency_types import (
    ActivateInput,
    DeactivateInput,
    EndReason,
    ExtendInput,
    SpendInput,
)

PREMIUM = "stripe_premium_emergency"
REQUESTS = [
    RoutingRequest(service="stripe", operation="payment"),
    RoutingRequest(service="stripe", operation="payment", cost_per_request_limit=0.2),
    RoutingRequest(service="stripe", operation="payment", require_emergency_override=True),
]


def _env(workflow_id: str = "emergency:stripe") -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id=workflow_id)
    return env


def _activate_input(started: datetime, minutes: int = 30, **overrides: object) -> ActivateInput:
    values: dict[str, object] = {
        "step_key": "c1:activate",
        "service": "stripe",
        "operation": "payment_processing",
        "coordination_id": f"emergency_test_{uuid.uuid4().hex[:8]}",
        "emergency_reason": "Critical payment processing outage",
        "business_justification": "Revenue protection during Black Friday peak traffic",
        "max_budget_override": 5000.0,
        "duration_minutes": minutes,
        "started_at": started,
        "deadline": started + timedelta(minutes=minutes),
    }
    values.update(overrides)
    return ActivateInput.model_validate(values)


def _decisions(sessions: sessionmaker[Session], at: datetime) -> list[tuple[str, Strategy | None]]:
    """Each request's node and strategy; a request requiring an emergency when none is
    active is refused (`emergency_required`)."""
    with sessions() as session:
        snapshot = load_snapshot(session, at)
    decided: list[tuple[str, Strategy | None]] = []
    for request in REQUESTS:
        try:
            decision: RoutingDecision = decide(request, snapshot, at)
        except EmergencyRequired:
            decided.append(("emergency_required", None))
        else:
            decided.append((decision.node.node_id, decision.strategy))
    return decided


def _count(sessions: sessionmaker[Session], model: type, **where: object) -> int:
    with sessions() as session:
        query = select(func.count()).select_from(model)
        for name, value in where.items():
            query = query.where(getattr(model, name) == value)
        return int(session.scalar(query) or 0)


def test_activate_routes_with_the_emergency_and_is_applied_once(
    clean_store: Engine, sessions: sessionmaker[Session], settings: Settings
) -> None:
    activities = EmergencyActivities(sessions, settings)
    data = _activate_input(utcnow())
    first = _env().run(activities.activate, data)
    again = _env().run(activities.activate, data)
    assert again == first
    assert first.selected_node.node_id == PREMIUM
    assert first.selected_node.provider_name == "Stripe Premium Emergency"
    assert (first.selected_node.success_rate, first.selected_node.cost_per_request) == (99.9, 0.15)
    assert (first.routing_strategy, first.confidence_score) == ("HYBRID_OPTIMIZATION", 98)
    assert first.estimated_cost == 0.15
    assert _count(sessions, Emergency) == 1
    assert _count(sessions, Coordination, kind="emergency") == 1
    assert _count(sessions, Event, event_type="emergency_mode_activated") == 1
    with sessions() as session:
        event = session.scalars(select(Event)).one()
    assert event.payload["eventType"] == "emergency_mode_activated"
    assert {k: event.payload[k] for k in ("coordinationId", "serviceName", "selectedProvider")} == {
        "coordinationId": data.coordination_id,
        "serviceName": "stripe",
        "selectedProvider": "Stripe Premium Emergency",
    }
    assert event.payload["maxBudgetOverride"] == 5000
    # Stored encrypted (store/crypto.py); event readers open them.
    published = activities.cipher.open_event(event.event_type, data.coordination_id, event.payload)
    assert published["emergencyReason"] == data.emergency_reason
    assert published["businessJustification"] == data.business_justification


def test_unknown_service_and_second_emergency_are_refused(
    clean_store: Engine, sessions: sessionmaker[Session], settings: Settings
) -> None:
    activities = EmergencyActivities(sessions, settings)
    with pytest.raises(ApplicationError) as unknown:
        _env().run(activities.activate, _activate_input(utcnow(), service="nope"))
    assert unknown.value.type == "UnknownService" and unknown.value.non_retryable
    _env().run(activities.activate, _activate_input(utcnow()))
    with pytest.raises(ApplicationError) as second:
        _env().run(activities.activate, _activate_input(utcnow(), step_key="c2:activate"))
    assert second.value.type == "EmergencyAlreadyActive"
    assert _count(sessions, Emergency) == 1


def test_a_stale_active_row_is_closed_by_the_next_emergency(
    clean_store: Engine, sessions: sessionmaker[Session], settings: Settings
) -> None:
    # A workflow terminated by an operator leaves its row active; once past its deadline it
    # never routes, and the next emergency closes it.
    activities = EmergencyActivities(sessions, settings)
    stale = _activate_input(utcnow() - timedelta(hours=2))
    _env().run(activities.activate, stale)
    fresh = _env().run(activities.activate, _activate_input(utcnow(), step_key="c2:activate"))
    assert fresh.selected_node.node_id == PREMIUM
    with sessions() as session:
        old = session.get(Emergency, stale.coordination_id)
        assert old is not None and (old.status, old.end_reason) == ("ended", "expired")


def test_extend_read_spend_and_deactivate(
    clean_store: Engine, sessions: sessionmaker[Session], settings: Settings
) -> None:
    activities = EmergencyActivities(sessions, settings)
    started = utcnow()
    before = _decisions(sessions, started)
    data = _activate_input(started)
    _env().run(activities.activate, data)
    assert _decisions(sessions, started)[0][0] == PREMIUM

    extension = ExtendInput(
        step_key="c1:extend-1",
        coordination_id=data.coordination_id,
        previous_deadline=data.deadline,
        deadline=data.deadline + timedelta(minutes=10),
        minutes=10,
        total_minutes=40,
        extensions=1,
        reason="still down",
    )
    _env().run(activities.extend, extension)
    _env().run(activities.extend, extension)
    with sessions() as session:
        row = session.get(Emergency, data.coordination_id)
        assert row is not None and row.deadline == extension.deadline
    assert _count(sessions, Event, event_type="emergency_mode_extended") == 1

    reading = _env().run(activities.read_spend, SpendInput(coordination_id=data.coordination_id))
    assert (reading.spent, reading.max_budget_override, reading.cheapest_cost) == (
        0.0,
        5000.0,
        0.029,
    )
    assert not reading.cap_spent()

    end = DeactivateInput(
        step_key="c1:deactivate",
        coordination_id=data.coordination_id,
        end_reason=EndReason.cancelled,
        ended_at=utcnow(),
        detail="recovered",
    )
    first = _env().run(activities.deactivate, end)
    assert _env().run(activities.deactivate, end) == first
    assert first.end_reason is EndReason.cancelled
    assert _count(sessions, Event, event_type="emergency_mode_ended") == 1
    # After the end routing is exactly as before the emergency, for every kind of request.
    assert _decisions(sessions, started) == before
    assert all(node != PREMIUM for node, _ in before)
    assert before[2] == ("emergency_required", None)
    with pytest.raises(ApplicationError) as ended:
        _env().run(activities.extend, extension.model_copy(update={"step_key": "c1:extend-2"}))
    assert ended.value.type == "EmergencyEnded"


def test_an_expired_override_never_routes_before_its_deactivation(
    clean_store: Engine, sessions: sessionmaker[Session], settings: Settings
) -> None:
    # Between the deadline and the worker's deactivation the row is still 'active'.
    activities = EmergencyActivities(sessions, settings)
    started = utcnow() - timedelta(minutes=31)
    data = _activate_input(started)
    _env().run(activities.activate, data)
    with sessions() as session:
        row = session.get(Emergency, data.coordination_id)
        assert row is not None and row.status == "active"
        during = load_snapshot(session, data.deadline - timedelta(seconds=1))
        after = load_snapshot(session, data.deadline + timedelta(seconds=1))
    request = REQUESTS[0]
    assert decide(request, during, data.deadline - timedelta(seconds=1)).node.node_id == PREMIUM
    # A snapshot taken before the deadline but used after it: EmergencyState.active_at.
    stale = decide(request, during, data.deadline)
    assert stale.node.node_id != PREMIUM and not stale.emergency_applied
    # A snapshot loaded after the deadline does not hold the emergency at all.
    assert "stripe" not in after.emergencies
    assert decide(request, after, utcnow()).node.node_id != PREMIUM


def test_cap_spent_rule() -> None:
    from workflows.emergency_types import SpendReading

    assert SpendReading(spent=5000, max_budget_override=5000).cap_spent()
    assert SpendReading(spent=4999.99, max_budget_override=5000, cheapest_cost=0.029).cap_spent()
    assert not SpendReading(spent=4999.9, max_budget_override=5000, cheapest_cost=0.029).cap_spent()
    assert not SpendReading(spent=0, max_budget_override=5000, cheapest_cost=None).cap_spent()


def test_applied_optimizations_are_what_the_activation_applied(
    clean_store: Engine, sessions: sessionmaker[Session], settings: Settings
) -> None:
    activities = EmergencyActivities(sessions, settings)
    plain = _env().run(activities.activate, _activate_input(utcnow()))
    assert plain.applied_optimizations == [
        "intelligent_routing",
        "backend_agent_coordination",
        "emergency_override",
    ]
    # A recovery holds the premium node out and an open incident guards stripe: the next
    # activation is shaped by both, and says so.
    now = utcnow()
    with transaction(sessions) as session:
        session.execute(delete(Emergency))
        session.add(
            RoutingOverrideRow(
                workflow_id="recovery:stripe:held",
                service="stripe",
                excluded_nodes=[PREMIUM],
                strategy="AVAILABILITY_FOCUSED",
                restore_fraction=0.0,
                revision=1,
                created_at=now,
                updated_at=now,
            )
        )
        session.add(
            IncidentRow(
                incident_id="incident_guarding_stripe",
                workflow_id="incident:incident_guarding_stripe",
                status="open",
                phase="recovering",
                opened_at=now - timedelta(minutes=2),
                last_error_at=now - timedelta(minutes=2),
                services=["stripe"],
                blast_radius=["stripe"],
            )
        )
    shaped = _env().run(activities.activate, _activate_input(utcnow(), step_key="c2:activate"))
    assert shaped.selected_node.node_id != PREMIUM
    assert shaped.applied_optimizations == [
        "intelligent_routing",
        "backend_agent_coordination",
        "cascade_protection",
        "emergency_override",
        "recovery_override",
    ]
