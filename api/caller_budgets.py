"""What each caller has left of the budget it declares, per service and budget period.

A caller sends `remainingBudget` with its `budgetPeriod`. The API process remembers, per
(caller, service, period, start of the current period), what the caller declared less what it
booked since; a later request in the same period is bounded by the smaller of its own figure
and that (routing.budget.caller_remaining), so a stale figure sent again cannot overspend. A
new period starts from the caller's figure again. The figures live in the API process (a
caller spread over N replicas is tracked by each of them).
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime

from routing.budget import caller_remaining, period_start
from routing.types import BudgetPeriod

# Tracked (caller, service, period) windows kept per process; the least recently used go first.
MAX_TRACKED = 100_000

CallerKey = tuple[str, str, BudgetPeriod, datetime]


class CallerBudgets:
    """Per caller, service and budget period: the budget left after what was booked."""

    def __init__(self, max_tracked: int = MAX_TRACKED) -> None:
        self._left: OrderedDict[CallerKey, float] = OrderedDict()
        self._max = max_tracked

    @staticmethod
    def key(caller: str, service: str, period: BudgetPeriod, now: datetime) -> CallerKey:
        """The window a request made at `now` falls in."""
        return (caller, service, period, period_start(period, now))

    def remaining(self, key: CallerKey, declared: float) -> float:
        """The caller's budget for this request: its figure, never above what is tracked."""
        return caller_remaining(declared, self._left.get(key))

    def book(self, key: CallerKey, remaining: float, amount: float) -> None:
        """Record that a decision bounded by `remaining` spends `amount` in the window.

        Called as soon as the decision is made, before the store books it, so concurrent
        requests of one caller see each other's spend; `refund` takes it back if the store
        refuses the decision.
        """
        self._left[key] = max(0.0, remaining - amount)
        self._left.move_to_end(key)
        while len(self._left) > self._max:
            self._left.popitem(last=False)

    def refund(self, key: CallerKey, amount: float) -> None:
        """Give back a spend the store refused."""
        if key in self._left:
            self._left[key] += amount
