"""The client's runnable example (clients/python/examples) runs against the real API."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from client_support import DEADLINE, GENEROUS_LIMITS, PRIMARY, SECONDARY, RestartableApi
from sqlalchemy import Engine

from api.app import create_app
from api.auth import Role
from switchyard.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "clients" / "python" / "examples" / "payment_failover.py"


@pytest.fixture
def api(clean_store: Engine, make_settings: Callable[..., Settings]) -> Iterator[RestartableApi]:
    """The API on a clean store, with limits for hundreds of requests."""
    settings = make_settings(**GENEROUS_LIMITS)
    with RestartableApi(lambda: create_app(settings, prepare=False)) as served:
        yield served


def test_the_payment_example_fails_over_and_pays_every_order(
    api: RestartableApi, token: Callable[..., str]
) -> None:
    command = [sys.executable, str(EXAMPLE), "--switchyard", api.url, "--payments", "12"]
    command += ["--fail-after", "4", "--pause", "0.02", "--token", token(Role.operator)]
    command += ["--decision-deadline", str(DEADLINE)]
    # This tree's client, whatever the virtual environment's editable install points at.
    env = {**os.environ, "PYTHONPATH": str(ROOT / "clients" / "python" / "src")}
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert f"payment   4  {PRIMARY} ok" in lines
    assert f"payment   5  {PRIMARY} failed (503) -> {SECONDARY} ok" in lines
    assert "12 of 12 payments paid" in done.stdout
