"""Workflows call activities through typed interfaces, and the worker implements each one."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import cast

import pytest
from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.client import Client

from activities.emergency import EmergencyActivities
from activities.incident import IncidentActivities
from activities.monitoring import MonitoringActivities
from activities.recovery import RecoveryActivities
from switchyard.settings import Settings
from worker.main import all_activities
from workflows.emergency_types import EmergencySteps
from workflows.health_sweep_types import SweepSteps
from workflows.incident_types import IncidentSteps
from workflows.recovery_types import RecoverySteps

WORKFLOWS = Path(__file__).parents[2] / "workflows"
PAIRS = [
    (RecoverySteps, RecoveryActivities),
    (EmergencySteps, EmergencyActivities),
    (SweepSteps, MonitoringActivities),
    (IncidentSteps, IncidentActivities),
]


def definitions(cls: type) -> dict[str, tuple[str | None, type | None]]:
    """Method name -> (activity name, result type) of every activity defined on `cls`."""
    found = {}
    for name, member in inspect.getmembers(cls, inspect.isfunction):
        defn = getattr(member, "__temporal_activity_definition", None)
        if isinstance(defn, activity._Definition):
            found[name] = (defn.name, defn.ret_type)
    return found


@pytest.mark.parametrize(("interface", "implementation"), PAIRS)
def test_each_interface_activity_is_implemented_under_its_name(
    interface: type, implementation: type
) -> None:
    declared = definitions(interface)
    assert declared, f"{interface.__name__} declares no activity"
    for method, (name, result) in declared.items():
        own = implementation.__dict__.get(method)
        assert own is not None, f"{implementation.__name__} does not implement {method}"
        defn = getattr(own, "__temporal_activity_definition", None)
        assert isinstance(defn, activity._Definition), f"{method} is not an activity"
        assert (defn.name, defn.ret_type) == (name, result), method


def test_the_worker_registers_every_declared_activity(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    client = cast(Client, object())  # the activities only keep it
    names = {
        getattr(fn, "__temporal_activity_definition").name
        for fn in all_activities(sessions, settings, client)
    }
    declared = {name for interface, _ in PAIRS for name, _ in definitions(interface).values()}
    assert names == declared


def activity_calls(tree: ast.AST) -> list[ast.Call]:
    """Every workflow.execute_*activity*/start_*activity* call in a module."""
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and "activity" in node.func.attr
        and node.func.attr.startswith(("execute_", "start_"))
    ]


def test_no_workflow_calls_an_activity_by_a_string() -> None:
    interfaces = {interface.__name__ for interface, _ in PAIRS}
    checked = 0
    for path in sorted(WORKFLOWS.glob("*.py")):
        for call in activity_calls(ast.parse(path.read_text())):
            checked += 1
            where = f"{path.name}:{call.lineno}"
            assert isinstance(call.func, ast.Attribute)
            assert call.func.attr.endswith("_method"), f"{where}: not called by method reference"
            target = call.args[0]
            assert isinstance(target, ast.Attribute), f"{where}: activity given by a value"
            assert isinstance(target.value, ast.Name) and target.value.id in interfaces, where
    assert checked >= 13  # the recovery's five, the emergency's four, the sweep's two, ...
