"""The discrete-event loop: requests arrive, attempts complete, the control plane ticks.

Virtual time only: request arrivals come from the world (the same for every policy), each
attempt completes after its simulated latency (a heap of completion events), and the
policy's control plane runs once per simulated second, after every completion due by then.

The client is the same for every policy: a failed attempt is retried at once, up to
`client.retries` times, on the node the policy picks for the retry (told which nodes the
request already tried). The service's budget is a hard limit for every policy: a call that
would spend more than is left is refused without reaching the provider; a policy's
emergency override may pay for it instead.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sim.cascade import OUT_OF_BUDGET
from sim.policy import Call, Policy
from sim.world import Attempt, SimNode, World

ProgressCallback = Callable[[int], None]
# Progress is reported every this many arrivals.
PROGRESS_EVERY = 500


@dataclass
class RunRecord:
    """Per-request results of one policy on one scenario, in arrival order."""

    policy: str
    arrivals: list[float]
    first_node: list[str | None] = field(default_factory=list)
    first_ok: list[bool] = field(default_factory=list)
    success: list[bool] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    cost: list[float] = field(default_factory=list)
    wall_seconds: float = 0.0
    # Requests refused without an answer, and why (the budget limit; a policy's protections).
    refusals: dict[int, str] = field(default_factory=dict)
    budget_left: float = 0.0  # the service's money left at the end


class Engine:
    """Runs one policy over the world's scenario."""

    def __init__(self, world: World, policy: Policy, nodes: dict[str, SimNode]) -> None:
        self.world = world
        self.policy = policy
        self.nodes = nodes
        scenario = world.scenario
        self.timeout_ms = scenario.client.timeout_ms
        self.retries = scenario.client.retries
        self.budget_left = world.catalog.budget_limit - scenario.budget.spent
        count = len(world.arrivals)
        self.record = RunRecord(
            policy=policy.name,
            arrivals=world.arrivals,
            first_node=[None] * count,
            first_ok=[False] * count,
            success=[False] * count,
            latency_ms=[0.0] * count,
            cost=[0.0] * count,
        )
        self._tried: list[tuple[str, ...]] = [()] * count
        self._events: list[tuple[float, int, int, str, Attempt]] = []
        self._sequence = 0
        self._next_tick = 0.0

    def run(self, progress: ProgressCallback | None = None) -> RunRecord:
        """Simulate every arrival and drain the attempts still in flight."""
        started = time.perf_counter()
        for request, t in enumerate(self.world.arrivals):
            self._advance(t)
            self._attempt(request, t)
            if progress is not None and (request + 1) % PROGRESS_EVERY == 0:
                progress(PROGRESS_EVERY)
        if progress is not None:
            progress(len(self.world.arrivals) % PROGRESS_EVERY)
        longest = (self.retries + 1) * self.timeout_ms / 1000.0
        self._advance(self.world.scenario.duration_seconds + longest + 1.0)
        self.record.budget_left = self.budget_left
        self.record.wall_seconds = time.perf_counter() - started
        return self.record

    def _advance(self, until: float) -> None:
        """Handle completions and control-plane ticks due by `until`, in time order."""
        events = self._events
        while True:
            due = events[0][0] if events else float("inf")
            if due <= until and due <= self._next_tick:
                t, _, request, node_id, attempt = heapq.heappop(events)
                self._complete(request, node_id, attempt, t)
            elif self._next_tick <= until:
                self.policy.tick(self._next_tick)
                self._next_tick += 1.0
            else:
                return

    def _attempt(self, request: int, t: float) -> None:
        """Place the request's next attempt at time t, or end it as failed."""
        tried = self._tried[request]
        record = self.record
        while True:
            call = Call(request, t, tried, self.budget_left)
            node_id = self.policy.choose(call)
            if node_id is None:
                self._finish(request, t, success=False)
                return
            if not tried:
                record.first_node[request] = node_id
            node = self.nodes[node_id]
            price = node.price(t)
            # An emergency override is charged per decision, as the coordinator charges it.
            covered = self.policy.covers(price, t)
            if not covered and price > self.budget_left:
                # Refused before reaching the provider: the budget is spent.
                tried = (*tried, node_id)
                self._tried[request] = tried
                if len(tried) > self.retries:
                    record.refusals[request] = OUT_OF_BUDGET
                    self._finish(request, t, success=False)
                    return
                continue
            attempt = node.call(request, tried.count(node_id), t, self.timeout_ms)
            if not covered:
                self.budget_left -= attempt.billed
            record.cost[request] += attempt.billed
            self._tried[request] = (*tried, node_id)
            self._sequence += 1
            heapq.heappush(
                self._events,
                (t + attempt.latency_ms / 1000.0, self._sequence, request, node_id, attempt),
            )
            return

    def _complete(self, request: int, node_id: str, attempt: Attempt, t: float) -> None:
        self.policy.observe(node_id, attempt, t)
        tried = self._tried[request]
        if len(tried) == 1:
            self.record.first_ok[request] = attempt.success
        if attempt.success:
            self._finish(request, t, success=True)
        elif len(tried) > self.retries:
            self._finish(request, t, success=False)
        else:
            self._attempt(request, t)

    def _finish(self, request: int, t: float, *, success: bool) -> None:
        record = self.record
        record.success[request] = success
        record.latency_ms[request] = (t - record.arrivals[request]) * 1000.0
