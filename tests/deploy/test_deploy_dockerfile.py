"""The Dockerfile: slim base, non-root user, and commands the package really has."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    found: list[tuple[str, str]] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        found.append((keyword.upper(), rest.strip()))
        pending = ""
    return found


def exec_form(name: str) -> list[str]:
    """The last ENTRYPOINT or CMD, which must be in exec form (so SIGTERM reaches the app)."""
    values = [rest for keyword, rest in instructions() if keyword == name]
    assert values, f"no {name}"
    parsed = json.loads(values[-1])
    assert isinstance(parsed, list) and all(isinstance(p, str) for p in parsed), values[-1]
    return parsed


def test_image_is_slim_and_runs_as_a_non_root_user() -> None:
    steps = instructions()
    bases = [rest for keyword, rest in steps if keyword == "FROM"]
    assert bases and all("slim" in base for base in bases)
    users = [rest for keyword, rest in steps if keyword == "USER"]
    assert users and users[-1] not in ("root", "0")
    final_stage = steps[max(i for i, (k, _) in enumerate(steps) if k == "FROM") :]
    assert ("ENV", "") not in final_stage
    env = " ".join(rest for keyword, rest in final_stage if keyword == "ENV")
    assert "SWITCHYARD_ENV=production" in env  # generated secrets are refused in the image


def test_entrypoint_and_command_are_real_cli_commands() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    entrypoint, command = exec_form("ENTRYPOINT"), exec_form("CMD")
    assert entrypoint[0] in scripts, f"{entrypoint[0]} is not a console script"
    module = scripts[entrypoint[0]].split(":")[0].rsplit(".", 1)[0]
    result = subprocess.run(
        [sys.executable, "-m", module, *entrypoint[1:], *command, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_install_step_names_a_real_extra_and_copied_files_exist() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    runs = " ".join(rest for keyword, rest in instructions() if keyword == "RUN")
    assert "pip install '.[otel]'" in runs and "otel" in extras
    for keyword, rest in instructions():
        if keyword == "COPY" and not rest.startswith("--from"):
            *sources, _target = shlex.split(rest)
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the build context"


def test_build_context_leaves_out_secrets_and_local_state() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".env", ".venv", ".switchyard", ".git"} <= ignored
