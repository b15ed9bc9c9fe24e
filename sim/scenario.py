"""Scenario files: one service's traffic and how each of its nodes behaves over time.

A node's behaviour starts from its catalog figures (providers.yaml) and changes at the points
its timeline lists; a point either steps to its values or, with `ramp: true`, moves to them
linearly from the previous point. Times are seconds from the scenario's start.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from routing.types import BusinessCriticality, Priority

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
# The fields a node timeline may change; rate_limit is requests per second (None: unlimited).
NODE_FIELDS = ("success_rate", "latency_ms", "latency_sigma", "rate_limit", "cost")


class ScenarioError(ValueError):
    """A scenario file is missing or malformed; the message names the file and the field."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodePoint(_Model):
    """One change of a node's behaviour at `at` seconds."""

    at: float = Field(ge=0)
    ramp: bool = False
    success_rate: float | None = Field(default=None, ge=0, le=100)
    latency_ms: float | None = Field(default=None, gt=0)
    latency_sigma: float | None = Field(default=None, ge=0, le=3)
    rate_limit: float | None = Field(default=None, ge=0)
    cost: float | None = Field(default=None, ge=0)


class TrafficPoint(_Model):
    """The request rate (per second) from `at` on, or ramping to it with `ramp: true`."""

    at: float = Field(ge=0)
    rate: float = Field(ge=0)
    ramp: bool = False


class Incident(_Model):
    """A window in which a node is in trouble: fail-over and restore times are measured on it."""

    node: str
    start: float = Field(ge=0)
    end: float = Field(gt=0)


class Flap(_Model):
    """A node that alternates between `down` behaviour and its catalog behaviour."""

    node: str
    start: float = Field(ge=0)
    end: float = Field(gt=0)
    down_seconds: float = Field(gt=0)
    up_seconds: float = Field(gt=0)
    down: NodePoint


class Emergency(_Model):
    """An incident commander's emergency override (POST /emergency-override) at `at`."""

    at: float = Field(ge=0)
    max_budget_override: float = Field(gt=0)
    duration_minutes: float = Field(gt=0)


class RequestProfile(_Model):
    """What the callers send with each request (execute-coordination's routing context)."""

    operation: str = "call"
    priority: Priority = Priority.NORMAL
    business_criticality: BusinessCriticality = BusinessCriticality.STANDARD
    cost_per_request_limit: float | None = Field(default=None, gt=0)
    remaining_budget: float | None = Field(default=None, ge=0)


class TrafficClass(RequestProfile):
    """One class of the scenario's traffic: its share of arrivals, what its callers send, and
    the internal service (a consumer of the catalog) that sends it, if any."""

    share: float = Field(gt=0)
    consumer: str | None = None


class Cascade(_Model):
    """A dependency of the traffic's consumers fails: each consumer job whose call to it fails
    is retried by the consumer, and every attempt of the job calls the scenario's service."""

    dependency: str  # the failing provider service (e.g. samsara)
    start: float = Field(ge=0)
    end: float = Field(gt=0)
    failure_rate: float = Field(default=100.0, ge=0, le=100)  # percent of its calls failing
    job_retries: int = Field(default=3, ge=0, le=10)
    retry_delay_seconds: float = Field(default=1.0, gt=0)


class ClientProfile(_Model):
    """The callers' client, the same for every policy: its timeout and retries."""

    timeout_ms: float = Field(default=10_000, gt=0)
    retries: int = Field(default=1, ge=0, le=3)


class BudgetSpec(_Model):
    """The service's money for the scenario's period; None fields take the catalog budget."""

    limit: float | None = Field(default=None, gt=0)
    spent: float = Field(default=0.0, ge=0)


class Scenario(_Model):
    """A whole scenario file."""

    name: str
    title: str
    description: str = ""
    service: str
    duration_seconds: float = Field(gt=0, le=24 * 3600)
    latency_sigma: float = Field(default=0.25, ge=0, le=3)
    traffic: tuple[TrafficPoint, ...] = Field(min_length=1)
    request: RequestProfile = RequestProfile()
    client: ClientProfile = ClientProfile()
    budget: BudgetSpec = BudgetSpec()
    nodes: dict[str, tuple[NodePoint, ...]] = Field(default_factory=dict)
    flaps: tuple[Flap, ...] = ()
    incidents: tuple[Incident, ...] = ()
    emergencies: tuple[Emergency, ...] = ()
    # Optional: a mix of request classes instead of `request` alone, and a cascade.
    mix: tuple[TrafficClass, ...] = ()
    cascade: Cascade | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Scenario:
        timelines: list[tuple[str, Sequence[TrafficPoint | NodePoint]]] = [
            ("traffic", self.traffic),
            *self.nodes.items(),
        ]
        for label, points in timelines:
            times = [p.at for p in points]
            if times != sorted(times):
                raise ValueError(f"{label}: points must be in time order")
        if self.cascade is not None and not any(c.consumer for c in self.mix):
            raise ValueError("cascade: needs a mix with a class sent by a consumer")
        windows: list[Incident | Flap | Cascade] = [*self.incidents, *self.flaps]
        if self.cascade is not None:
            windows.append(self.cascade)
        for window in windows:
            if window.end <= window.start:
                label = window.dependency if isinstance(window, Cascade) else window.node
                raise ValueError(f"{label}: end must be after start")
        return self

    def truncated(self, duration: float) -> Scenario:
        """The same scenario cut (or extended) to `duration` seconds."""
        return self.model_copy(update={"duration_seconds": duration})

    def with_client(self, retries: int | None = None) -> Scenario:
        """The same scenario with another number of client retries."""
        if retries is None:
            return self
        client = self.client.model_copy(update={"retries": retries})
        return self.model_copy(update={"client": client})

    def healthy(self) -> Scenario:
        """The same traffic with every node at its catalog figures: no incident at all."""
        return self.model_copy(
            update={
                "nodes": {},
                "flaps": (),
                "incidents": (),
                "emergencies": (),
                "cascade": None,
                "name": "healthy",
            }
        )

    def all_incidents(self) -> tuple[Incident, ...]:
        """Declared incidents plus one per down period of every flap, by start time."""
        windows = list(self.incidents)
        for flap in self.flaps:
            windows.extend(
                Incident(node=flap.node, start=start, end=end) for start, end in _flap_periods(flap)
            )
        return tuple(sorted(windows, key=lambda w: (w.start, w.node)))

    def node_points(self, node_id: str) -> tuple[NodePoint, ...]:
        """The node's timeline with its flaps expanded, in time order."""
        points = list(self.nodes.get(node_id, ()))
        for flap in self.flaps:
            if flap.node != node_id:
                continue
            changed = flap.down.model_fields_set - {"at", "ramp"}
            for start, end in _flap_periods(flap):
                points.append(flap.down.model_copy(update={"at": start, "ramp": False}))
                # Back to the catalog behaviour: a point that sets the changed fields to None
                # means "the catalog value" (see NodeTimeline).
                points.append(NodePoint.model_validate({"at": end, **dict.fromkeys(changed)}))
        points.sort(key=lambda p: p.at)
        return tuple(points)


def _flap_periods(flap: Flap) -> Iterable[tuple[float, float]]:
    start = flap.start
    while start < flap.end:
        end = min(start + flap.down_seconds, flap.end)
        yield start, end
        start = end + flap.up_seconds


def load_scenario(source: str | Path) -> Scenario:
    """A scenario from a file path, or by name from sim/scenarios/ (`stripe_error_rate`)."""
    path = Path(source)
    if not path.exists() and not path.suffix:
        path = SCENARIO_DIR / f"{source}.yaml"
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        names = ", ".join(scenario_names())
        raise ScenarioError(f"{source}: no such scenario file (built in: {names})") from exc
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "top level"
        raise ScenarioError(f"{path}: {where}: {first['msg']}") from exc


def scenario_names() -> list[str]:
    """Names of the scenarios shipped in sim/scenarios/, sorted."""
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))


@dataclass(frozen=True, slots=True)
class _Segment:
    start: float
    value: float | None
    ramp_to: float | None  # value reached at the next breakpoint when that point ramps
    end: float


class Timeline:
    """A piecewise function of time: steps, or linear ramps into points marked `ramp`."""

    __slots__ = ("_segments", "_starts")

    def __init__(self, initial: float | None, points: Sequence[tuple[float, float | None, bool]]):
        breaks: list[tuple[float, float | None, bool]] = [(0.0, initial, False), *points]
        segments = []
        for index, (start, value, _) in enumerate(breaks):
            following = breaks[index + 1] if index + 1 < len(breaks) else None
            end = following[0] if following is not None else float("inf")
            ramp_to = following[1] if following is not None and following[2] else None
            segments.append(_Segment(start, value, ramp_to, end))
        self._segments = segments
        self._starts = [s.start for s in segments]

    def at(self, t: float) -> float | None:
        """The value at time t."""
        segment = self._segments[bisect_right(self._starts, t) - 1]
        if segment.ramp_to is None or segment.value is None or segment.end <= segment.start:
            return segment.value
        share = (t - segment.start) / (segment.end - segment.start)
        return segment.value + (segment.ramp_to - segment.value) * share

    def changes(self) -> list[float]:
        """The times after 0 at which the value changes or starts to ramp."""
        return self._starts[1:]


def node_timelines(
    points: Sequence[NodePoint], catalog: dict[str, float | None]
) -> dict[str, Timeline]:
    """One Timeline per node field; a point's None for a field it sets means the catalog value."""
    timelines = {}
    for name in NODE_FIELDS:
        relevant = [
            (p.at, _or_catalog(getattr(p, name), catalog[name]), p.ramp)
            for p in points
            if name in p.model_fields_set
        ]
        timelines[name] = Timeline(catalog[name], relevant)
    return timelines


def _or_catalog(value: float | None, catalog: float | None) -> float | None:
    return catalog if value is None else value


def traffic_timeline(scenario: Scenario) -> Timeline:
    """The request rate over time (requests per second)."""
    first, rest = scenario.traffic[0], scenario.traffic[1:]
    return Timeline(first.rate, [(p.at, p.rate, p.ramp) for p in rest])
