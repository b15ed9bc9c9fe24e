"""The dashboard in headless Chromium: sign in and see the newest events so far, report an
error through the API, watch the recovery appear with its Temporal UI link and its events
arrive live. API + worker + the real Temporal dev server; the screenshot goes to
test-output/browser/dashboard.png."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from browser_support import Chromium, ServedApi, chromium_path
from conftest import ROOT
from harness import live_worker
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from api.auth import Role
from switchyard.settings import Settings

pytestmark = pytest.mark.devserver

BASE = "/api/v1/enhanced-traffic-coordination"
SCREENSHOT = ROOT / "test-output" / "browser" / "dashboard.png"
UI = "http://127.0.0.1:8233"


COORDINATION = {
    "serviceName": "stripe",
    "operation": "payment_processing",
    "routingContext": {
        "requestMetadata": {"priority": "CRITICAL", "businessCriticality": "REVENUE_BLOCKING"},
        "budgetConstraints": {"remainingBudget": 1000, "costPerRequestLimit": 0.1},
        "performanceContext": {"currentLatency": 800, "targetLatency": 300},
    },
}


def _error_report(stream_id: str) -> dict[str, Any]:
    return {
        "errorType": "performance_degradation",
        "serviceName": "samsara",
        "operation": "gps_tracking",
        "severity": "high",
        "errorMessage": "GPS tracking response time exceeded 2000ms threshold",
        "businessImpact": {
            "revenueAtRisk": 2000,
            "customerImpact": "moderate",
            "timeToResolution": 15,
        },
        "errorDetails": {"failedProviders": ["samsara_primary"], "retryAttempts": 2},
        "streamId": stream_id,
    }


def _js(value: object) -> str:
    return json.dumps(value)


def _drive(settings: Settings, browser_path: str, work: Path, viewer: str, operator: str) -> None:
    stream_id = f"error_stream_dashboard_{uuid.uuid4().hex[:8]}"
    with (
        ServedApi(create_app(settings, prepare=False)) as api,
        Chromium(browser_path, work / "profile", work / "chromium.log") as browser,
    ):
        for _ in range(3):
            decided = httpx.post(
                f"{api.base}{BASE}/execute-coordination",
                json=COORDINATION,
                headers={"Authorization": f"Bearer {operator}"},
                timeout=30,
            )
            assert decided.status_code == 200, decided.text
        browser.open(f"{api.base}/dashboard")
        # It asks for a token first and shows nothing else.
        assert browser.evaluate("document.getElementById('board').hidden") is True
        browser.evaluate(
            f"document.getElementById('token-input').value = {_js(viewer)};"
            "document.getElementById('token-form').requestSubmit(); true"
        )
        browser.wait_for("document.getElementById('connection').dataset.state === 'live'")
        # The feed opens with the newest events so far: the coordinations made before sign-in.
        earlier = browser.wait_for(
            "(() => { const types = [...document.querySelectorAll('#event-list li.earlier')]"
            ".map(li => li.dataset.eventType);"
            " return types.length >= 3 && types; })()"
        )
        assert earlier.count("enhanced_coordination_completed") == 3
        assert browser.evaluate("document.getElementById('feed-empty').hidden") is True
        nodes = browser.wait_for("document.querySelectorAll('#services tr[data-node-id]').length")
        assert nodes >= 10  # every catalog node, with health, breaker, cost, prediction
        breaker = browser.evaluate(
            "document.querySelector('tr[data-node-id=\"samsara_primary\"] .badge').textContent"
        )
        assert breaker == "CLOSED"
        # Kept for the tab only.
        assert browser.evaluate("sessionStorage.getItem('switchyard.token')") == viewer
        assert browser.evaluate("localStorage.length") == 0

        answer = httpx.post(
            f"{api.base}{BASE}/backend-agent-error",
            json=_error_report(stream_id),
            headers={"Authorization": f"Bearer {operator}"},
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        workflow_id = answer.json()["data"]["backendAgentResponse"]["workflowId"]
        assert workflow_id == f"recovery:samsara:{stream_id}"

        row = _js(f'#active-table tr[data-workflow-id="{workflow_id}"]')
        shown = browser.wait_for(
            f"(() => {{ const r = document.querySelector({row}); return r && "
            "{phase: r.querySelector('.phase').textContent, age: r.querySelector('.age')"
            ".textContent, link: r.querySelector('a').href, kind: r.dataset.kind}; })()"
        )
        assert shown["kind"] == "recovery" and shown["phase"] in ("recovering", "escalated")
        assert shown["age"].endswith(("s", "m"))
        assert shown["link"] == f"{UI}/namespaces/default/workflows/{quote(workflow_id, safe='')}"

        feed = browser.wait_for(
            "(() => { const types = [...document.querySelectorAll('#event-list li')]"
            ".map(li => li.dataset.eventType);"
            " return types.includes('recovery_started') && types.includes("
            "'recovery_route_applied') && types; })()"
        )
        assert "recovery_started" in feed
        # The error opened an incident: the incidents panel lists it, open, with its stream.
        incident_id = answer.json()["data"]["backendAgentResponse"]["incidentId"]
        incident = _js(f'#incident-table tr[data-incident-id="{incident_id}"]')
        listed = browser.wait_for(
            f"(() => {{ const r = document.querySelector({incident}); return r && "
            "r.cells[4].textContent === '1' && {open: r.dataset.open, "
            "services: r.cells[2].textContent, phase: r.querySelector('.phase').textContent}; })()"
        )
        assert listed == {"open": "true", "services": "samsara", "phase": "recovering"}
        # The coordinations made before sign-in are in the totals and the charts.
        assert browser.evaluate("document.querySelector('#totals dd').textContent") == "3"
        assert browser.evaluate(
            "document.querySelector('#chart-success circle, #chart-success polyline') !== null"
        )
        browser.screenshot(SCREENSHOT)

        httpx.post(
            f"{api.base}{BASE}/recoveries/{quote(workflow_id, safe='')}/cancel",
            json={"reason": "browser test done"},
            headers={"Authorization": f"Bearer {operator}"},
            timeout=60,
        )


async def test_dashboard_shows_a_new_recovery_and_its_events_live(
    dev_env: WorkflowEnvironment,
    clean_store: Engine,
    sessions: sessionmaker[Session],
    make_settings: Callable[..., Settings],
    token: Callable[..., str],
    tmp_path: Path,
) -> None:
    browser_path = chromium_path()
    if browser_path is None:
        pytest.skip("chromium is not installed (make test installs it)")
    settings = make_settings(
        temporal_address=dev_env.client.service_client.config.target_host,
        temporal_ui_url=UI,
    )
    SCREENSHOT.unlink(missing_ok=True)
    async with live_worker(dev_env.client, sessions, settings.temporal_task_queue):
        # Off the event loop: the worker runs on it while the browser is driven.
        await asyncio.to_thread(
            _drive, settings, browser_path, tmp_path, token(Role.viewer), token(Role.operator)
        )
    assert SCREENSHOT.read_bytes().startswith(b"\x89PNG")
    assert SCREENSHOT.stat().st_size > 10_000
