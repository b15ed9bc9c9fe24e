"""docker-compose.yml against the compose specification's JSON schema, and the cluster's shape.

No Docker engine runs here, so the file is checked the way `docker compose config` would
check its structure: the compose specification's own JSON schema (shipped by the
check-jsonschema package), plus what Switchyard needs of it: two API replicas and two
workers, every dependency waiting on a health check or a finished one-shot, and commands
that exist in the `switchyard` CLI.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import validators

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
APP_SERVICES = ("migrate", "api", "worker")


@cache
def compose_schema() -> dict[str, Any]:
    """The compose specification's schema as vendored by check-jsonschema."""
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema: dict[str, Any] = json.loads((vendor / "compose-spec.json").read_text())
    return schema


def compose() -> dict[str, Any]:
    """docker-compose.yml with YAML anchors and merge keys resolved, as compose reads it."""
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def schema_errors(document: dict[str, Any]) -> list[str]:
    """Every violation of the compose specification, with where it is."""
    schema = compose_schema()
    validator = validators.validator_for(schema)(schema)
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def test_compose_file_follows_the_compose_specification() -> None:
    assert schema_errors(compose()) == []


@pytest.mark.parametrize(
    "break_it",
    [
        lambda d: d["services"]["api"].update(depend_on=["postgres"]),  # misspelt key
        lambda d: d["services"]["api"]["depends_on"]["postgres"].update(condition="ready"),
        lambda d: d["services"]["api"].update(ports="3000:3000"),  # not a list
        lambda d: d["services"]["postgres"]["healthcheck"].update(interval=5),
    ],
)
def test_the_schema_check_catches_a_broken_file(break_it: Any) -> None:
    document = copy.deepcopy(compose())
    break_it(document)
    assert schema_errors(document) != []


def test_api_and_worker_run_two_replicas_each() -> None:
    services = compose()["services"]
    assert services["api"]["deploy"]["replicas"] == 2
    assert services["worker"]["deploy"]["replicas"] == 2


def test_every_dependency_waits_for_health_or_completion() -> None:
    services = compose()["services"]
    for name, service in services.items():
        for target, rule in service.get("depends_on", {}).items():
            assert target in services, f"{name} depends on unknown {target}"
            condition = rule["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits on {target}'s health"
            else:
                assert condition == "service_completed_successfully", (name, target, condition)
                assert services[target].get("restart") == "no", f"{target} is a one-shot"
    # Everything long-running that others wait on proves it is up.
    for name in ("postgres", "redis", "temporal", "api", "worker"):
        assert "healthcheck" in services[name], name


def test_temporal_runs_the_official_server_on_postgresql_with_ui_and_codec() -> None:
    services = compose()["services"]
    temporal = services["temporal"]
    assert temporal["image"].startswith("temporalio/server:")
    assert temporal["environment"]["DB"] == "postgres12"
    assert temporal["environment"]["POSTGRES_SEEDS"] == "postgres"
    schema_job = services["temporal-schema"]
    assert schema_job["image"].startswith("temporalio/admin-tools:")
    assert "update-schema" in schema_job["command"][0]
    assert temporal["depends_on"]["temporal-schema"]["condition"] == (
        "service_completed_successfully"
    )
    ui = services["temporal-ui"]
    assert ui["image"].startswith("temporalio/ui:")
    assert ui["environment"]["TEMPORAL_CODEC_ENDPOINT"].rstrip("}").endswith("/codec")


def test_switchyard_processes_share_the_store_temporal_and_redis() -> None:
    services = compose()["services"]
    for name in APP_SERVICES:
        env = services[name]["environment"]
        assert env["SWITCHYARD_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["SWITCHYARD_DATABASE_URL"].endswith("@postgres:5432/switchyard")
        assert env["SWITCHYARD_TEMPORAL_ADDRESS"] == "temporal:7233"
        assert env["SWITCHYARD_RATE_LIMIT_STORAGE"].startswith("redis://redis:")
        assert services[name]["env_file"] == ".env"
    assert services["worker"]["environment"]["SWITCHYARD_WORKER_METRICS_ADDRESS"].endswith(":9464")


def test_app_service_commands_exist_in_the_cli() -> None:
    services = compose()["services"]
    for name in APP_SERVICES:
        command = services[name]["command"]
        result = subprocess.run(
            [sys.executable, "-m", "switchyard", *command, "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, (name, command, result.stderr[-2000:])
