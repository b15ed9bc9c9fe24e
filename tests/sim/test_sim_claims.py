"""The seed's Stripe claim on the full scenario: at least 99.5 % success, cost within 10 %."""

from __future__ import annotations

from sim.runner import run_scenario
from sim.scenario import load_scenario


def test_seed_stripe_claim_holds() -> None:
    result = run_scenario(load_scenario("stripe_error_rate"), ["primary-only", "switchyard"])
    primary, switchyard = result.summaries
    healthy = result.healthy.cost_per_success
    cost = switchyard.cost_per_success

    assert healthy is not None and cost is not None
    assert switchyard.success_rate >= 99.5
    assert cost <= 1.10 * healthy
    assert switchyard.success_rate > primary.success_rate
    failover = switchyard.shifts.mean_failover()
    assert failover is not None and failover <= 10.0
