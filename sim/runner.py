"""Run a scenario for a set of policies on one seed and collect their figures."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from sim.baselines import EnvoyOutlierEjection, LiteLLMCooldown, PrimaryOnly, RoundRobin
from sim.cascade import ClassFigures, ClassSeries, class_figures, class_series, scenario_traffic
from sim.engine import Engine, ProgressCallback, RunRecord
from sim.metrics import Series, Summary, series, summarize
from sim.oracle import Oracle
from sim.policy import Policy
from sim.scenario import Scenario
from sim.switchyard import SwitchyardPolicy
from sim.world import DEFAULT_CATALOG, Catalog, SimNode, World, arrivals, load_catalog

PolicyFactory = Callable[[World, dict[str, SimNode]], Policy]

POLICIES: dict[str, PolicyFactory] = {
    "primary-only": lambda world, nodes: PrimaryOnly(world.catalog.regular),
    "round-robin": lambda world, nodes: RoundRobin(world.catalog.regular),
    "litellm-cooldown": lambda world, nodes: LiteLLMCooldown(world.catalog.regular),
    "envoy-outlier": lambda world, nodes: EnvoyOutlierEjection(world.catalog.regular),
    "switchyard-no-prediction": lambda world, nodes: SwitchyardPolicy(
        world.catalog,
        world.scenario.request,
        nodes,
        world.scenario.emergencies,
        prediction=False,
        traffic=world.traffic,
    ),
    "switchyard": lambda world, nodes: SwitchyardPolicy(
        world.catalog,
        world.scenario.request,
        nodes,
        world.scenario.emergencies,
        traffic=world.traffic,
    ),
    # The bound every table is read against: knows the state, not the luck (sim/oracle.py).
    "oracle": lambda world, nodes: Oracle(world.catalog, world.scenario, nodes),
}
# Not run by default and not the live system: Switchyard without a piece the product has,
# to show what that piece does (the monitor's strand guard: docs/SIMULATION.md).
ABLATIONS: dict[str, PolicyFactory] = {
    "switchyard-unguarded": lambda world, nodes: SwitchyardPolicy(
        world.catalog,
        world.scenario.request,
        nodes,
        world.scenario.emergencies,
        strand_guard=False,
        traffic=world.traffic,
    ),
    # Switchyard without cascade prevention: no retry budget, no reservation for CRITICAL
    # and HIGH traffic while an incident is open (docs/INCIDENTS.md).
    "switchyard-unprotected": lambda world, nodes: SwitchyardPolicy(
        world.catalog,
        world.scenario.request,
        nodes,
        world.scenario.emergencies,
        traffic=world.traffic,
        protection=None,
    ),
}
SWITCHYARD = "switchyard"
ORACLE = "oracle"
BUCKET_COUNT = 90  # points per line in the plots


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    """Every policy's figures and time series on one scenario and seed."""

    scenario: Scenario
    seed: int
    summaries: tuple[Summary, ...]
    series: dict[str, Series]
    healthy: Summary  # primary-only on the same traffic with no incident
    # Per policy, its figures per priority class (scenarios with a mix of classes only).
    classes: dict[str, tuple[ClassFigures, ...]] = field(default_factory=dict)
    class_series: dict[str, ClassSeries] = field(default_factory=dict)

    def summary(self, policy: str) -> Summary:
        """The figures of one policy."""
        return next(s for s in self.summaries if s.policy == policy)

    @property
    def requests(self) -> int:
        """Simulated requests, every policy and the healthy baseline included."""
        return sum(s.requests for s in self.summaries) + self.healthy.requests

    @property
    def wall_seconds(self) -> float:
        """Wall time spent simulating, every policy and the healthy baseline included."""
        return sum(s.wall_seconds for s in self.summaries) + self.healthy.wall_seconds


def scenario_catalog(scenario: Scenario, path: Path = DEFAULT_CATALOG) -> Catalog:
    """The service's catalog, with the scenario's budget limit when it sets one."""
    catalog = load_catalog(scenario.service, path)
    if scenario.budget.limit is not None:
        catalog = replace(catalog, budget_limit=scenario.budget.limit)
    return catalog


def planned_requests(scenario: Scenario, seed: int, policies: int) -> int:
    """How many requests a run will simulate (for a progress bar): the healthy run too.

    Raises KeyError naming the field when the scenario names a consumer or a dependency the
    catalog does not have.
    """
    jobs = arrivals(scenario, seed)
    consumers = scenario_catalog(scenario).consumers
    # A cascade's consumer retries are requests of every policy's run, not the healthy one's.
    return len(scenario_traffic(scenario, consumers, jobs, seed).times) * policies + len(jobs)


def run_policy(
    world: World, factory: PolicyFactory, progress: ProgressCallback | None = None
) -> RunRecord:
    """One policy's run on the world, with the requests its protections refused."""
    nodes = world.nodes()
    policy = factory(world, nodes)
    record = Engine(world, policy, nodes).run(progress)
    if isinstance(policy, SwitchyardPolicy):
        record.refusals.update(policy.refusals)
    return record


def run_scenario(
    scenario: Scenario,
    policies: Sequence[str] = tuple(POLICIES),
    seed: int = 1,
    progress: ProgressCallback | None = None,
    catalog_path: Path = DEFAULT_CATALOG,
) -> ScenarioResult:
    """Run every policy on the scenario with the same seeded traffic and provider behaviour."""
    factories = {**POLICIES, **ABLATIONS}
    unknown = [p for p in policies if p not in factories]
    if unknown:
        raise KeyError(f"unknown policies {unknown}; known: {', '.join(factories)}")
    catalog = scenario_catalog(scenario, catalog_path)
    world = World(scenario, catalog, seed)
    incidents = scenario.all_incidents()
    duration = scenario.duration_seconds
    bucket = max(10.0, duration / BUCKET_COUNT)
    summaries = []
    timelines = {}
    classes = {}
    class_timelines = {}
    for name in policies:
        record = run_policy(world, factories[name], progress)
        summaries.append(summarize(record, incidents, duration))
        timelines[name] = series(record, duration, bucket)
        if scenario.mix:
            classes[name] = class_figures(record.success, record.refusals, world.traffic)
            class_timelines[name] = class_series(
                record.success, record.cost, record.budget_left, world.traffic, duration, bucket
            )
    healthy_world = World(scenario.healthy(), catalog, seed)
    nodes = healthy_world.nodes()
    baseline = Engine(healthy_world, POLICIES["primary-only"](healthy_world, nodes), nodes)
    healthy = summarize(baseline.run(progress), (), duration)
    return ScenarioResult(
        scenario, seed, tuple(summaries), timelines, healthy, classes, class_timelines
    )
