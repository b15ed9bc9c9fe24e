"""Budget windows and the budget a request may still spend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from routing.types import (
    BudgetBound,
    BudgetPeriod,
    BudgetState,
    EmergencyState,
    RoutingRequest,
    RoutingSnapshot,
)


def _as_utc(now: datetime) -> datetime:
    # A naive datetime is taken as UTC: converting it through the local zone would make the
    # result depend on the machine, which a pure function must not.
    if now.tzinfo is None:
        return now.replace(tzinfo=UTC)
    return now.astimezone(UTC)


def period_start(period: BudgetPeriod, now: datetime) -> datetime:
    """The UTC start of the hour, day, ISO week (Monday) or month that contains ``now``."""
    at = _as_utc(now)
    if period is BudgetPeriod.hourly:
        return at.replace(minute=0, second=0, microsecond=0)
    day = at.replace(hour=0, minute=0, second=0, microsecond=0)
    if period is BudgetPeriod.daily:
        return day
    if period is BudgetPeriod.weekly:
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def period_end(period: BudgetPeriod, now: datetime) -> datetime:
    """The UTC start of the period after the one that contains ``now`` (exclusive end)."""
    start = period_start(period, now)
    if period is BudgetPeriod.hourly:
        return start + timedelta(hours=1)
    if period is BudgetPeriod.daily:
        return start + timedelta(days=1)
    if period is BudgetPeriod.weekly:
        return start + timedelta(weeks=1)
    if start.month == 12:
        return start.replace(year=start.year + 1, month=1)
    return start.replace(month=start.month + 1)


def server_remaining(
    budget: BudgetState | None, emergency: EmergencyState | None, emergency_active: bool
) -> float | None:
    """The server budget left for a service; an active emergency's cap replaces the budget.

    While an emergency is active every decision for the service is charged to the emergency
    (store.coordinations.charge_budget), so what is left is the cap minus its spend.
    """
    if emergency is not None and emergency_active:
        return max(0.0, emergency.max_budget_override - emergency.spent)
    if budget is None:
        return None
    return budget.remaining


def tighter(client: float | None, server: float | None) -> float | None:
    """The smaller of two optional budgets; None when neither is given."""
    if client is None:
        return server
    if server is None:
        return client
    return client if client < server else server


def caller_remaining(declared: float, tracked: float | None) -> float:
    """The caller's budget left in its period: what it declares, but never more than what it
    declared earlier in the same period less what was booked since (``tracked``), so a stale
    figure sent again cannot be spent twice."""
    if tracked is None:
        return declared
    return min(declared, max(0.0, tracked))


def budget_bound(
    request: RoutingRequest,
    budget: BudgetState | None,
    emergency: EmergencyState | None,
    emergency_active: bool,
) -> BudgetBound | None:
    """Which budget bounds the request: the tighter of the caller's remainingBudget (for its
    budgetPeriod) and the server's (the service's budget for its period, or an active
    emergency's cap); the caller's on a tie. None when neither exists."""
    client = request.remaining_budget
    server = server_remaining(budget, emergency, emergency_active)
    if client is None and server is None:
        return None
    if server is None or (client is not None and client <= server):
        assert client is not None
        return BudgetBound("caller", request.budget_period, client, client, server)
    if emergency is not None and emergency_active:
        return BudgetBound("emergency", None, server, client, server)
    return BudgetBound("server", budget.period if budget else None, server, client, server)


def effective_remaining(
    request: RoutingRequest, snapshot: RoutingSnapshot, now: datetime
) -> float | None:
    """The tighter of the client's remaining budget and the server's (or the emergency cap)."""
    emergency = snapshot.emergencies.get(request.service)
    active = emergency is not None and emergency.active_at(now)
    server = server_remaining(snapshot.budgets.get(request.service), emergency, active)
    return tighter(request.remaining_budget, server)
