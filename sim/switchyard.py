"""Switchyard under simulation: the real routing/ code, wired as the live system wires it.

- Every attempt is decided by `routing.decide` on the API replica's snapshot; a retry is a
  new execute-coordination with the failed node in `failedProviders`.
- Callers report outcomes in a batch every second (POST /outcomes); each batch moves health,
  breakers and predictions with `routing.health.assess` (sim/monitor.py).
- The replica reloads its snapshot when the store notifies (a breaker that moved, a material
  drift, an override or emergency change) and every 5 s regardless (api/snapshot.py).
- The health monitor sweeps every 10 s and starts a recovery for each degraded node that has none,
  unless its hold would leave the service no node (`routing.recovery.strands_service`); the
  recovery plans its route with `routing.recovery.choose_recovery` and `plan_recovery` and
  then runs ErrorRecoveryWorkflow's timers (sim/recovery.py).
- An emergency override (EmergencyOverrideWorkflow) puts an `EmergencyState` in the snapshot
  until its deadline, or until its 30 s spend poll finds the cap spent.
- While the scenario's incident is open and its blast radius holds the service, every
  decision first passes `routing.incidents.protection_refusal` with the service's retry
  window, as api/incident_guard.py admits it: a refusal (`retry_budget_exhausted`,
  `shed_for_incident`) is the caller's 503, and the request ends without an answer.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from routing.decide import decide
from routing.headroom import Headroom
from routing.health import Degradation, MonitoringConfig
from routing.incidents import ProtectionConfig, RetryWindow, protection_refusal
from routing.recovery import Severity, choose_recovery, plan_recovery, strands_service
from routing.retry import decide_retry
from routing.types import (
    BudgetState,
    EmergencyState,
    ExclusionReason,
    IncidentGuard,
    NoEligibleNode,
    RoutingOverride,
    RoutingRequest,
    RoutingSnapshot,
)
from sim.cascade import OUT_OF_BUDGET, Traffic
from sim.monitor import Monitor, NodeState, fresh_state, without_prediction
from sim.policy import Call
from sim.recovery import Effect, RecoveryRun
from sim.scenario import Emergency, RequestProfile
from sim.world import Attempt, AttemptKind, Catalog, SimNode
from workflows.emergency_types import DEFAULT_POLL_SECONDS
from workflows.recovery_types import RecoveryConfig

# Virtual time 0; any fixed instant works, this one is the seed document's.
EPOCH = datetime(2025, 8, 16, 10, 0, tzinfo=UTC)
# api/snapshot.SAFETY_RELOAD_SECONDS: a replica reloads this often even without a NOTIFY.
SNAPSHOT_RELOAD_SECONDS = 5.0
# Settings.health_sweep_interval_seconds: the health monitor's interval.
SWEEP_INTERVAL_SECONDS = 10.0


def at(t: float) -> datetime:
    """The wall-clock instant of virtual time t."""
    return EPOCH + timedelta(seconds=t)


@dataclass
class _OverrideRow:
    override: RoutingOverride
    updated: int  # store order of updated_at


@dataclass
class _EmergencyRow:
    spec: Emergency
    state: EmergencyState
    next_poll: float
    ended: bool = False


class SwitchyardPolicy:
    """Switchyard's routing, monitoring, recoveries and emergencies for one service."""

    def __init__(
        self,
        catalog: Catalog,
        request: RequestProfile,
        prices: dict[str, SimNode],
        emergencies: tuple[Emergency, ...] = (),
        *,
        prediction: bool = True,
        config: MonitoringConfig | None = None,
        recovery: RecoveryConfig | None = None,
        strand_guard: bool = True,
        traffic: Traffic | None = None,
        protection: ProtectionConfig | None = ProtectionConfig(),
    ) -> None:
        self.name = "switchyard" if prediction else "switchyard-no-prediction"
        if not strand_guard:
            # Not the live system: the monitor before its strand guard and routing before
            # recovery holds yielded, an ablation that keeps the finding reproducible
            # (docs/SIMULATION.md).
            self.name += "-unguarded"
        if protection is None:
            # Not the live system either: no cascade prevention during an incident.
            self.name += "-unprotected"
        self.strand_guard = strand_guard
        self.traffic = traffic
        self.protection = protection
        incident = traffic.incident if traffic is not None else None
        self.incident = incident
        self.guard = (
            IncidentGuard(incident.incident_id, at(incident.start))
            if incident is not None
            else None
        )
        self._incident_open = False
        self._retry_window = RetryWindow((protection or ProtectionConfig()).retry_window_seconds)
        # Requests refused without an answer: a protection, or no node the budget pays for.
        self.refusals: dict[int, str] = {}
        self.service = catalog.service
        self.catalog = catalog
        self.profile = request
        self._prices = prices
        self._price_times = sorted({c for n in prices.values() for c in n.price_changes()})
        config = config or MonitoringConfig()
        self.monitor = Monitor(
            {n.node_id: fresh_state(n) for n in catalog.nodes},
            config if prediction else without_prediction(config),
            prediction=prediction,
        )
        self.recovery_config = recovery or RecoveryConfig()
        self.recoveries: dict[str, RecoveryRun] = {}
        self._overrides: dict[str, _OverrideRow] = {}
        self._override_updates = 0
        self._pending_emergencies = sorted(emergencies, key=lambda e: e.at)
        self._emergency: _EmergencyRow | None = None
        self._nodes = {n.node_id: n for n in catalog.nodes}
        self._budget_spent = 0.0
        self._snapshot = self._load()
        self._reloaded_at = 0.0
        self.headroom = Headroom()  # the replica's per-second counts (routing/headroom.py)
        self._next_sweep = SWEEP_INTERVAL_SECONDS
        self._used_emergency = False

    # ---- the hot path ----

    def choose(self, call: Call) -> str | None:
        """The node `routing.decide` picks for this attempt on the replica's snapshot, or None
        (no eligible node, or refused by the incident's protections)."""
        profile = self.traffic.profile(call.request) if self.traffic else self.profile
        request = RoutingRequest(
            service=self.service,
            operation=profile.operation,
            request_id=f"sim-{call.request}",
            priority=profile.priority,
            business_criticality=profile.business_criticality,
            remaining_budget=profile.remaining_budget,
            cost_per_request_limit=profile.cost_per_request_limit,
            failed_providers=frozenset(call.tried),
        )
        snapshot = self.headroom.view(self._decision_snapshot(call), at(call.t))
        if self._refused(request, snapshot, call):
            return None
        # The ablation has neither protection against stranding: no strand guard, and
        # recovery holds that never yield.
        yields = self.strand_guard
        try:
            if call.tried:
                decision = decide_retry(request, snapshot, at(call.t), hold_yields=yields)
            else:
                decision = decide(request, snapshot, at(call.t), hold_yields=yields)
        except NoEligibleNode as exc:
            if any(e.reason is ExclusionReason.BUDGET_EXHAUSTED for e in exc.exclusions):
                self.refusals[call.request] = OUT_OF_BUDGET
            return None
        self._used_emergency = decision.emergency_applied
        self.headroom.sent(snapshot, decision.node.node_id, at(call.t))
        return decision.node.node_id

    def _refused(self, request: RoutingRequest, snapshot: RoutingSnapshot, call: Call) -> bool:
        """IncidentProtector.admit: refuse the request, or count it in the retry window."""
        config = self.protection
        if config is None or self.service not in snapshot.incidents:
            return False
        budget = snapshot.budgets.get(self.service)
        refusal = protection_refusal(request, budget, self._retry_window, call.t, config)
        if refusal is None:
            self._retry_window.count(call.t, retry=bool(request.failed_providers))
            return False
        self.refusals[call.request] = refusal[0].value
        return True

    def covers(self, cost: float, t: float) -> bool:
        """Charge the emergency (store/coordinations.charge_budget) when it applied."""
        row = self._emergency
        if not self._used_emergency or row is None or row.ended:
            return False
        state = row.state
        if state.spent + cost > state.max_budget_override:
            return False
        row.state = replace(state, spent=state.spent + cost)
        return True

    def observe(self, node_id: str, attempt: Attempt, t: float) -> None:
        """The caller's outcome report, counted at the next batch (a 429 reported as one)."""
        limited = attempt.kind is AttemptKind.RATE_LIMITED
        self.monitor.record(
            node_id, at(t), attempt.success, attempt.latency_ms, rate_limited=limited
        )

    # ---- the control plane ----

    def tick(self, t: float) -> None:
        """One second of the live system: prices, emergencies, ingestion, sweep, recoveries."""
        now = at(t)
        changed = self._update_prices(t)
        changed |= self._run_emergency(t)
        changed |= self._open_or_close_incident(t)
        changed |= self.monitor.ingest(now, t)
        if t >= self._next_sweep:
            self._next_sweep += SWEEP_INTERVAL_SECONDS
            material, degraded = self.monitor.sweep(now, t)
            changed |= material
            changed |= self._start_recoveries(degraded, t)
        changed |= self._run_recoveries(t)
        if changed or t - self._reloaded_at >= SNAPSHOT_RELOAD_SECONDS:
            self._snapshot = self._load()
            self._reloaded_at = t

    def _open_or_close_incident(self, t: float) -> bool:
        """The incident's row claimed or ended: the replicas reload at once (NOTIFY)."""
        incident = self.incident
        open_now = incident is not None and incident.protects(self.service, t)
        if open_now == self._incident_open:
            return False
        self._incident_open = open_now
        return True

    def _update_prices(self, t: float) -> bool:
        """A provider's new price, published in the catalog the moment it applies."""
        if not self._price_times or self._price_times[0] > t:
            return False
        while self._price_times and self._price_times[0] <= t:
            self._price_times.pop(0)
        for node_id, node in list(self._nodes.items()):
            self._nodes[node_id] = replace(node, cost_per_request=self._prices[node_id].price(t))
            self.monitor.states[node_id].node = self._nodes[node_id]
        return True

    def _start_recoveries(self, degraded: list[Degradation], t: float) -> bool:
        """monitoring.start_recoveries: one recovery per degraded node that has none running.

        As the activity does, the nodes go one after the other against the snapshot read at
        the start of the sweep, and a node is skipped ("would_strand") when its hold, with the
        running holds and the nodes this sweep already held out, would leave the service no
        node.
        """
        started = False
        snapshot = self._load()
        held: set[str] = set()  # nodes this sweep already holds out
        for degradation in degraded:
            workflow_id = f"recovery:{self.service}:monitor_{degradation.node_id}"
            running = self.recoveries.get(workflow_id)
            if running is not None and running.running:
                continue
            failed = frozenset({degradation.node_id})
            if self.strand_guard and strands_service(
                self.service, frozenset(held) | failed, snapshot, at(t)
            ):
                continue
            choice = choose_recovery(
                degradation.error_type, Severity(degradation.severity), 0.0, ""
            )
            try:
                plan = plan_recovery(choice, self.service, failed, self._load(), at(t))
            except NoEligibleNode:
                plan = None
            run = RecoveryRun(workflow_id, failed, plan, t, self.recovery_config)
            self.recoveries[workflow_id] = run
            if plan is not None:
                self._apply(run, Effect(restore_fraction=0.0))
                held.add(degradation.node_id)
                started = True
        return started

    def _run_recoveries(self, t: float) -> bool:
        changed = False
        for run in self.recoveries.values():
            if not run.due(t):
                continue
            healthy = all(self.monitor.states[n].healthy() for n in run.failed)
            effect = run.advance(t, healthy)
            if effect is not None:
                self._apply(run, effect, at(t))
                changed = True
        return changed

    def _apply(self, run: RecoveryRun, effect: Effect, now: datetime | None = None) -> None:
        """The recovery's store effects: upsert or delete its override, hold breakers."""
        if effect.finished:
            self._overrides.pop(run.workflow_id, None)
            if effect.hold_open and now is not None:
                self.monitor.force_open(effect.hold_open, now)
            return
        assert run.plan is not None and effect.restore_fraction is not None
        self._override_updates += 1
        self._overrides[run.workflow_id] = _OverrideRow(
            RoutingOverride(
                service=self.service,
                workflow_id=run.workflow_id,
                excluded_nodes=run.plan.excluded_nodes,
                strategy=run.plan.strategy,
                restore_fraction=effect.restore_fraction,
            ),
            self._override_updates,
        )

    def _run_emergency(self, t: float) -> bool:
        """Activate a scheduled emergency; end it at its deadline or when its cap is spent."""
        changed = False
        row = self._emergency
        if row is not None and not row.ended:
            if at(t) >= row.state.deadline:
                row.ended, changed = True, True
            elif t >= row.next_poll:
                row.next_poll = t + DEFAULT_POLL_SECONDS
                left = row.state.max_budget_override - row.state.spent
                cheapest = min(n.cost_per_request for n in self._nodes.values() if n.enabled)
                if left <= 0 or left < cheapest:
                    row.ended, changed = True, True
        if self._pending_emergencies and self._pending_emergencies[0].at <= t:
            spec = self._pending_emergencies.pop(0)
            if row is None or row.ended:
                self._emergency = _EmergencyRow(
                    spec=spec,
                    state=EmergencyState(
                        service=self.service,
                        workflow_id=f"emergency:{self.service}",
                        coordination_id=f"emergency_sim_{int(spec.at)}",
                        max_budget_override=spec.max_budget_override,
                        spent=0.0,
                        deadline=at(spec.at + spec.duration_minutes * 60.0),
                    ),
                    next_poll=t + DEFAULT_POLL_SECONDS,
                )
                changed = True
        return changed

    # ---- snapshots ----

    def _load(self) -> RoutingSnapshot:
        """The store as store/snapshot.load_snapshot reads it (budgets are set per decision)."""
        states: dict[str, NodeState] = self.monitor.states
        emergency = self._emergency
        return RoutingSnapshot(
            nodes={self.service: tuple(self._nodes[n.node_id] for n in self.catalog.nodes)},
            health={node_id: s.health() for node_id, s in states.items()},
            overrides=self._merged_overrides(),
            emergencies={self.service: emergency.state}
            if emergency is not None and not emergency.ended
            else {},
            budgets={self.service: self._budget(self._budget_spent)},
            incidents={self.service: self.guard}
            if self.guard is not None and self._incident_open
            else {},
        )

    def _budget(self, spent: float) -> BudgetState:
        catalog = self.catalog
        return BudgetState(self.service, catalog.budget_period, catalog.budget_limit, spent)

    def _merged_overrides(self) -> dict[str, RoutingOverride]:
        """store/snapshot.load_overrides: exclusions add up, the slowest restore wins."""
        rows = sorted(self._overrides.values(), key=lambda r: r.updated)
        if not rows:
            return {}
        latest = rows[-1].override
        merged = RoutingOverride(
            service=self.service,
            workflow_id=latest.workflow_id,
            excluded_nodes=frozenset(n for r in rows for n in r.override.excluded_nodes),
            strategy=latest.strategy,
            restore_fraction=min(r.override.restore_fraction for r in rows),
        )
        return {self.service: merged}

    def _decision_snapshot(self, call: Call) -> RoutingSnapshot:
        """The replica's snapshot with the budget and emergency spend as the store has them now.

        The coordinator charges the budget atomically and decides again with the store's
        figure when its snapshot was stale, so a decision never spends what is not there.
        """
        emergencies = self._snapshot.emergencies
        row = self._emergency
        if row is not None and not row.ended and emergencies:
            emergencies = {self.service: row.state}
        if call.budget_remaining is not None:
            self._budget_spent = self.catalog.budget_limit - call.budget_remaining
        budgets = {self.service: self._budget(self._budget_spent)}
        return replace(self._snapshot, budgets=budgets, emergencies=emergencies)
