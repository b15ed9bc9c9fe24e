"""`.env.example` and docker-compose.yml name only real settings, and document every one;
production refuses to start on generated secrets."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from switchyard.settings import Environment, SecretsError, Settings

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "SWITCHYARD_"
# `NAME=value` (set) or `# NAME=value` (documented default).
ENV_LINE = re.compile(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$")
FIELDS = {f"{PREFIX}{name.upper()}" for name in Settings.model_fields}


def env_example() -> dict[str, tuple[bool, str]]:
    """Every variable of .env.example: name -> (set, value)."""
    found: dict[str, tuple[bool, str]] = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = ENV_LINE.match(line.strip())
        if match:
            found[match.group(2)] = (match.group(1) is None, match.group(3))
    return found


def compose_variables() -> set[str]:
    """SWITCHYARD_ variables docker-compose.yml sets in any service."""
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    names: set[str] = set()
    for service in document["services"].values():
        environment = service.get("environment", {})
        names.update(k for k in environment if k.startswith(PREFIX))
    return names


def test_compose_sets_only_real_settings() -> None:
    names = compose_variables()
    assert names, "the compose file wires the Switchyard containers through SWITCHYARD_ vars"
    assert names - FIELDS == set()


def test_env_example_names_only_real_settings() -> None:
    names = {n for n in env_example() if n.startswith(PREFIX)}
    assert names - FIELDS == set()


def test_env_example_documents_every_setting() -> None:
    names = {n for n in env_example() if n.startswith(PREFIX)}
    assert FIELDS - names == set()


def test_env_example_runs_production_with_secrets_left_to_fill() -> None:
    example = env_example()
    assert example["SWITCHYARD_ENV"] == (True, "production")
    assert example["SWITCHYARD_JWT_SECRET"] == (True, "")
    assert example["SWITCHYARD_ENCRYPTION_KEYS"] == (True, "")
    assert example["POSTGRES_PASSWORD"] == (True, "")


def test_production_refuses_generated_secrets(tmp_path: Path) -> None:
    settings = Settings(
        env=Environment.production, home=tmp_path, jwt_secret="", encryption_keys=""
    )
    with pytest.raises(SecretsError) as refused:
        settings.with_secrets()
    assert "SWITCHYARD_JWT_SECRET" in str(refused.value)
    assert "SWITCHYARD_ENCRYPTION_KEYS" in str(refused.value)
    assert not (tmp_path / "secrets").exists()  # nothing was generated on the way

    one_missing = Settings(
        env=Environment.production, home=tmp_path, jwt_secret="s" * 48, encryption_keys=""
    )
    with pytest.raises(SecretsError, match="SWITCHYARD_ENCRYPTION_KEYS"):
        one_missing.with_secrets()

    complete = Settings(
        env=Environment.production,
        home=tmp_path,
        jwt_secret="s" * 48,
        encryption_keys="k1:" + "A" * 43 + "=",
    )
    assert complete.with_secrets() is complete


def test_development_generates_secrets_once(tmp_path: Path) -> None:
    first = Settings(home=tmp_path, jwt_secret="", encryption_keys="").with_secrets()
    second = Settings(home=tmp_path, jwt_secret="", encryption_keys="").with_secrets()
    assert first.jwt_secret and first.jwt_secret == second.jwt_secret
    assert first.encryption_keys == second.encryption_keys


@pytest.mark.parametrize("command", [["api"], ["worker"], ["migrate"]])
def test_processes_refuse_to_start_in_production_without_secrets(
    command: list[str], tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX)}
    env.update(
        {
            "SWITCHYARD_ENV": "production",
            "SWITCHYARD_HOME": str(tmp_path / "home"),
            "SWITCHYARD_DATABASE_URL": f"sqlite:///{tmp_path / 'never.db'}",
        }
    )
    result = subprocess.run(
        [sys.executable, "-m", "switchyard", *command],
        cwd=tmp_path,  # no .env here to fill the secrets in
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "SWITCHYARD_JWT_SECRET" in result.stderr
    assert "production" in result.stderr
    assert not (tmp_path / "home" / "secrets").exists()
    assert not (tmp_path / "never.db").exists()  # refused before touching the store
