"""Replays recorded EmergencyOverrideWorkflow histories: a change that breaks determinism fails.

Re-record after an intended, compatible change (then commit the files):
    SWITCHYARD_RECORD_HISTORIES=1 .venv/bin/pytest tests/workflows/test_emergency_workflow.py \
        tests/workflows/test_emergency_handlers.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer
from test_emergency_support import HISTORIES

from workflows.emergency import EmergencyOverrideWorkflow

RECORDED = sorted(HISTORIES.glob("emergency_*.json"))


def _history(path: Path) -> WorkflowHistory:
    workflow_id = path.stem
    return WorkflowHistory.from_json(workflow_id, json.loads(path.read_text()))


def test_histories_are_recorded() -> None:
    names = {path.stem for path in RECORDED}
    assert {
        "emergency_expiry",
        "emergency_extend",
        "emergency_cancel",
        "emergency_cap_spent",
    } <= names


@pytest.mark.parametrize("path", RECORDED, ids=[p.stem for p in RECORDED])
async def test_replays_without_nondeterminism(path: Path) -> None:
    replayer = Replayer(
        workflows=[EmergencyOverrideWorkflow], data_converter=pydantic_data_converter
    )
    result = await replayer.replay_workflow(_history(path), raise_on_replay_failure=True)
    assert result.replay_failure is None
