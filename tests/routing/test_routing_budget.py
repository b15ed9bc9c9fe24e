"""Budget windows and the effective remaining budget."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from routing_builders import NOW, node, snapshot_of

from routing import (
    BudgetBound,
    BudgetPeriod,
    BudgetState,
    EmergencyState,
    RoutingRequest,
    effective_remaining,
    period_end,
    period_start,
)
from routing.budget import budget_bound, caller_remaining

# A Thursday.
AT = datetime(2025, 8, 14, 17, 42, 9, 123, tzinfo=UTC)


@pytest.mark.parametrize(
    ("period", "start", "end"),
    [
        (BudgetPeriod.hourly, datetime(2025, 8, 14, 17), datetime(2025, 8, 14, 18)),
        (BudgetPeriod.daily, datetime(2025, 8, 14), datetime(2025, 8, 15)),
        (BudgetPeriod.weekly, datetime(2025, 8, 11), datetime(2025, 8, 18)),
        (BudgetPeriod.monthly, datetime(2025, 8, 1), datetime(2025, 9, 1)),
    ],
)
def test_period_bounds(period: BudgetPeriod, start: datetime, end: datetime) -> None:
    assert period_start(period, AT) == start.replace(tzinfo=UTC)
    assert period_end(period, AT) == end.replace(tzinfo=UTC)


def test_period_bounds_at_the_edges() -> None:
    new_year = datetime(2025, 12, 31, 23, 59, tzinfo=UTC)
    monday = datetime(2025, 8, 11, tzinfo=UTC)

    assert period_end(BudgetPeriod.monthly, new_year) == datetime(2026, 1, 1, tzinfo=UTC)
    assert period_end(BudgetPeriod.daily, new_year) == datetime(2026, 1, 1, tzinfo=UTC)
    assert period_start(BudgetPeriod.weekly, monday) == monday
    assert period_start(BudgetPeriod.daily, monday) == monday


def test_periods_are_utc() -> None:
    # 01:30 in UTC+2 is 23:30 the previous day in UTC.
    local = datetime(2025, 8, 15, 1, 30, tzinfo=timezone(timedelta(hours=2)))
    naive = datetime(2025, 8, 14, 23, 30)

    assert period_start(BudgetPeriod.daily, local) == datetime(2025, 8, 14, tzinfo=UTC)
    assert period_start(BudgetPeriod.daily, naive) == datetime(2025, 8, 14, tzinfo=UTC)


BUDGET = {"svc": BudgetState("svc", BudgetPeriod.daily, 100.0, 60.0)}
EMERGENCY = {"svc": EmergencyState("svc", "e", "c", 50.0, 20.0, NOW + timedelta(minutes=5))}


def remaining(client: float | None, **snapshot: Any) -> float | None:
    request = RoutingRequest(service="svc", operation="op", remaining_budget=client)
    return effective_remaining(request, snapshot_of(node("a"), **snapshot), NOW)


def test_neither_budget_means_no_limit() -> None:
    assert remaining(None) is None


def test_client_budget_alone() -> None:
    assert remaining(12.5) == 12.5


def test_server_budget_alone() -> None:
    assert remaining(None, budgets=BUDGET) == 40.0


def test_tighter_of_the_two() -> None:
    assert remaining(12.5, budgets=BUDGET) == 12.5
    assert remaining(75.0, budgets=BUDGET) == 40.0


def test_active_emergency_cap_replaces_the_server_budget() -> None:
    # Under an emergency every decision is charged to the emergency: cap 50 - spent 20.
    assert remaining(None, budgets=BUDGET, emergencies=EMERGENCY) == 30.0
    assert remaining(10.0, budgets=BUDGET, emergencies=EMERGENCY) == 10.0


def test_emergency_without_server_budget_still_caps_spend() -> None:
    assert remaining(None, emergencies=EMERGENCY) == 30.0


def test_expired_emergency_adds_nothing() -> None:
    request = RoutingRequest(service="svc", operation="op")
    snapshot = snapshot_of(node("a"), budgets=BUDGET, emergencies=EMERGENCY)

    assert effective_remaining(request, snapshot, NOW + timedelta(minutes=5)) == 40.0


def test_overspent_server_budget_is_zero() -> None:
    overspent = {"svc": BudgetState("svc", BudgetPeriod.daily, 100.0, 130.0)}

    assert remaining(None, budgets=overspent) == 0.0


def bound(
    client: float | None,
    period: BudgetPeriod,
    budgets: dict[str, BudgetState] | None = None,
    emergencies: dict[str, EmergencyState] | None = None,
) -> BudgetBound | None:
    request = RoutingRequest(
        service="svc", operation="op", remaining_budget=client, budget_period=period
    )
    emergency = (emergencies or {}).get("svc")
    active = emergency is not None and emergency.active_at(NOW)
    return budget_bound(request, (budgets or {}).get("svc"), emergency, active)


def test_the_decision_names_the_bound_and_its_period() -> None:
    weekly_server = {"svc": BudgetState("svc", BudgetPeriod.weekly, 100.0, 60.0)}

    assert bound(None, BudgetPeriod.daily) is None
    assert bound(12.5, BudgetPeriod.hourly, budgets=weekly_server) == BudgetBound(
        "caller", BudgetPeriod.hourly, 12.5, 12.5, 40.0
    )
    assert bound(75.0, BudgetPeriod.monthly, budgets=weekly_server) == BudgetBound(
        "server", BudgetPeriod.weekly, 40.0, 75.0, 40.0
    )
    assert bound(35.0, BudgetPeriod.daily, budgets=BUDGET, emergencies=EMERGENCY) == BudgetBound(
        "emergency", None, 30.0, 35.0, 30.0
    )


def test_a_stale_caller_figure_is_bounded_by_what_it_already_spent() -> None:
    # Declared 10, then 0.5 was booked: the same 10 sent again leaves 9.5; a lower figure wins.
    assert caller_remaining(10.0, None) == 10.0
    assert caller_remaining(10.0, 9.5) == 9.5
    assert caller_remaining(4.0, 9.5) == 4.0
    assert caller_remaining(10.0, -1.0) == 0.0
