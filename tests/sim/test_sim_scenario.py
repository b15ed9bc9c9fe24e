"""Scenario files: validation, timelines (steps and ramps), flaps, and the shipped scenarios."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.scenario import (
    NodePoint,
    Scenario,
    ScenarioError,
    Timeline,
    load_scenario,
    node_timelines,
    scenario_names,
)
from sim.world import arrivals, load_catalog

BASE = {
    "name": "t",
    "title": "T",
    "service": "stripe",
    "duration_seconds": 600,
    "traffic": [{"at": 0, "rate": 10}],
}


def test_every_shipped_scenario_loads_and_names_catalog_nodes() -> None:
    names = scenario_names()

    assert {
        "stripe_error_rate",
        "samsara_latency_ramp",
        "mapbox_rate_limit",
        "stripe_full_outage",
        "avalara_flapping",
        "twilio_budget_squeeze",
    } <= set(names)
    for name in names:
        scenario = load_scenario(name)
        catalog = {n.node_id for n in load_catalog(scenario.service).nodes}
        assert scenario.name == name
        assert set(scenario.nodes) <= catalog
        assert {i.node for i in scenario.all_incidents()} <= catalog
        # What a scenario measures: its nodes' incidents, or a dependency's cascade.
        measured = scenario.all_incidents() or scenario.cascade is not None
        assert measured, f"{name} measures no incident"


def test_timeline_steps_and_ramps() -> None:
    line = Timeline(200.0, [(100.0, 200.0, False), (200.0, 1200.0, True), (300.0, 50.0, False)])

    assert line.at(0.0) == 200.0
    assert line.at(99.9) == 200.0
    assert line.at(150.0) == pytest.approx(700.0)  # halfway up the ramp to 1200
    assert line.at(200.0) == 1200.0
    assert line.at(299.0) == 1200.0
    assert line.at(300.0) == 50.0
    assert line.changes() == [100.0, 200.0, 300.0]


def test_node_fields_keep_catalog_values_until_a_point_sets_them() -> None:
    points = (
        NodePoint(at=60, success_rate=85.0),
        NodePoint(at=120, rate_limit=5.0),
        NodePoint.model_validate({"at": 180, "success_rate": None, "rate_limit": None}),
    )
    catalog: dict[str, float | None] = {
        "success_rate": 99.8,
        "latency_ms": 150.0,
        "latency_sigma": 0.25,
        "rate_limit": None,
        "cost": 0.029,
    }

    lines = node_timelines(points, catalog)

    assert [lines["success_rate"].at(t) for t in (0, 60, 120, 180)] == [99.8, 85.0, 85.0, 99.8]
    assert [lines["rate_limit"].at(t) for t in (0, 119, 120, 180)] == [None, None, 5.0, None]
    assert lines["latency_ms"].at(500) == 150.0


def test_flaps_expand_into_down_and_up_points_and_incidents() -> None:
    scenario = Scenario.model_validate(
        {
            **BASE,
            "flaps": [
                {
                    "node": "stripe_primary_us_east",
                    "start": 100,
                    "end": 400,
                    "down_seconds": 50,
                    "up_seconds": 100,
                    "down": {"at": 0, "success_rate": 0},
                }
            ],
        }
    )

    incidents = [(i.start, i.end) for i in scenario.all_incidents()]
    points = [(p.at, p.success_rate) for p in scenario.node_points("stripe_primary_us_east")]

    assert incidents == [(100, 150), (250, 300)]
    assert points == [(100, 0.0), (150, None), (250, 0.0), (300, None)]


def test_arrivals_follow_the_traffic_rate() -> None:
    scenario = Scenario.model_validate(
        {**BASE, "traffic": [{"at": 0, "rate": 5}, {"at": 300, "rate": 20}]}
    )

    times = arrivals(scenario, seed=4)
    early = sum(1 for t in times if t < 300)
    late = len(times) - early

    assert times == sorted(times) and times[-1] < 600
    assert 1300 <= early <= 1700  # 5/s for 300 s
    assert 5400 <= late <= 6600  # 20/s for 300 s


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("name: x\n", "title"),
        (
            "name: x\ntitle: X\nservice: stripe\nduration_seconds: 10\n"
            "traffic: [{at: 0, rate: -1}]\n",
            "traffic.0.rate",
        ),
        (
            "name: x\ntitle: X\nservice: stripe\nduration_seconds: 10\n"
            "traffic: [{at: 5, rate: 1}, {at: 1, rate: 2}]\n",
            "time order",
        ),
    ],
)
def test_malformed_files_name_the_field(tmp_path: Path, body: str, field: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(body)

    with pytest.raises(ScenarioError, match=field.replace(".", r"\.")):
        load_scenario(path)


def test_unknown_scenario_lists_the_shipped_ones() -> None:
    with pytest.raises(ScenarioError, match="stripe_error_rate"):
        load_scenario("no_such_scenario")
