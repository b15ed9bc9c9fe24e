"""Replay recorded HealthMonitorWorkflow histories: a change that breaks determinism fails here.

Re-record after an intended change with
`SWITCHYARD_RECORD_HISTORIES=1 .venv/bin/pytest tests/workflows/test_health_monitor.py`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.health_monitor import HealthMonitorWorkflow

HISTORIES = sorted((Path(__file__).parent / "histories").glob("health_monitor_*.json"))
HISTORY_TEXT = {path: path.read_text() for path in HISTORIES}


def test_histories_are_recorded() -> None:
    assert {p.stem for p in HISTORIES} >= {
        "health_monitor_continued",
        "health_monitor_failed_sweep",
        "health_monitor_paused",
    }


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_replay(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, HISTORY_TEXT[path])
    replayer = Replayer(workflows=[HealthMonitorWorkflow], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None
