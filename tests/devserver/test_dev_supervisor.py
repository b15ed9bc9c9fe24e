"""`switchyard dev`: healthy within 60 s, Ctrl-C leaves nothing behind, data survives a restart,
and the one health monitor workflow with it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from workflows.health_sweep_types import MONITOR_WORKFLOW_ID

pytestmark = pytest.mark.devserver

ROOT = Path(__file__).resolve().parents[2]
BASE = "/api/v1/enhanced-traffic-coordination"


def free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str, token: str | None = None) -> tuple[int, dict[str, Any]]:
    """GET a JSON document."""
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def post(url: str, body: object, token: str) -> tuple[int, dict[str, Any]]:
    """POST a JSON document."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, json.loads(response.read())


def wait_healthy(api: str, deadline: float) -> dict[str, Any]:
    """Poll health until it says healthy; the last document otherwise."""
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            _, last = get(f"{api}{BASE}/health")
            if last.get("data", {}).get("status") == "healthy":
                return last
        except OSError:
            pass
        time.sleep(0.5)
    return last


def monitor_run(temporal: str) -> tuple[str, str]:
    """The health monitor's current run id and status (nothing decoded: no keys needed)."""

    async def describe() -> tuple[str, str]:
        client = await Client.connect(temporal)
        described = await client.get_workflow_handle(MONITOR_WORKFLOW_ID).describe()
        assert described.status is not None
        return described.run_id, described.status.name

    return asyncio.run(describe())


def descendants(pid: int) -> set[int]:
    """Every live process below `pid`."""
    found: set[int] = set()
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found.add(child)
            frontier.append(child)
    return found


def alive(pids: set[int]) -> set[int]:
    """The pids still running (zombies count as gone)."""
    running = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            running.add(pid)
    return running


def start_dev(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`switchyard dev` the way `make run` starts it."""
    handle = open(log, "ab")  # noqa: SIM115 (the child writes to it)
    return subprocess.Popen(
        [sys.executable, "-m", "switchyard", "dev"],
        cwd=ROOT,
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
    )


def stop_dev(process: subprocess.Popen[bytes]) -> set[int]:
    """Ctrl-C the supervisor; the processes that outlive it."""
    children = descendants(process.pid)
    process.send_signal(signal.SIGINT)
    process.wait(60)
    time.sleep(0.5)
    return alive(children)


def test_dev_is_healthy_stops_cleanly_and_keeps_data(tmp_path: Path) -> None:
    api_port, temporal_port, ui_port = free_port(), free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")},
        "SWITCHYARD_HOME": str(tmp_path / "home"),
        "SWITCHYARD_API_PORT": str(api_port),
        "SWITCHYARD_TEMPORAL_ADDRESS": f"127.0.0.1:{temporal_port}",
        "SWITCHYARD_TEMPORAL_UI_PORT": str(ui_port),
    }
    api = f"http://127.0.0.1:{api_port}"
    log = tmp_path / "dev.log"

    started = time.monotonic()
    dev = start_dev(env, log)
    try:
        health = wait_healthy(api, started + 60)
        assert health.get("data", {}).get("status") == "healthy", (
            health,
            log.read_text()[-3000:],
        )
        ui_status, _ = 0, None
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/", timeout=5) as response:
            ui_status = response.status
        assert ui_status == 200

        token = subprocess.run(
            [sys.executable, "-m", "switchyard", "token", "--role", "admin", "--sub", "t"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        status, body = post(
            f"{api}{BASE}/backend-agent-error",
            {
                "errorType": "rate_limit_exceeded",
                "serviceName": "maps",
                "severity": "high",
                "errorDetails": {"failedProviders": ["mapbox_primary"]},
                "streamId": "dev_s1",
            },
            token,
        )
        assert status == 200, body
        # The worker started the health monitor.
        monitor, state = monitor_run(env["SWITCHYARD_TEMPORAL_ADDRESS"])
        assert state == "RUNNING"
    finally:
        left = stop_dev(dev)
    assert left == set(), f"processes left behind: {left}"

    # Start again: the SQLite store and the Temporal database file kept everything.
    restarted = time.monotonic()
    dev = start_dev(env, log)
    try:
        assert wait_healthy(api, restarted + 60).get("data", {}).get("status") == "healthy"
        status, recovery = get(f"{api}{BASE}/recoveries/recovery:maps:dev_s1", token)
        assert status == 200, recovery
        assert recovery["data"]["selectedNode"] == "google_maps"
        _, analytics = get(f"{api}{BASE}/coordination-analytics", token)
        assert analytics["data"]["totalCoordinations"] >= 1
        # The restarted worker joined the monitor that was running: still one, the same run.
        assert monitor_run(env["SWITCHYARD_TEMPORAL_ADDRESS"]) == (monitor, "RUNNING")
    finally:
        assert stop_dev(dev) == set()
