"""Replay recorded incident histories: a change that breaks determinism fails here.

Re-record after an intended change with
`SWITCHYARD_RECORD_HISTORIES=1 .venv/bin/pytest tests/workflows/test_incident_workflow.py`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.incident import IncidentWorkflow

HISTORIES = sorted((Path(__file__).parent / "histories").glob("incident_*.json"))
HISTORY_TEXT = {path: path.read_text() for path in HISTORIES}


def test_histories_are_recorded() -> None:
    # Members ending, an operator resolving, and both runs of a continue-as-new.
    assert {p.stem for p in HISTORIES} >= {
        "incident_members_end",
        "incident_resolved_by_operator",
        "incident_continue_as_new",
        "incident_continued",
    }


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_replay(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, HISTORY_TEXT[path])
    replayer = Replayer(workflows=[IncidentWorkflow], data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)
