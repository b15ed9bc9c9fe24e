"""Real processes for fault tests: a Temporal dev server on a database file, `switchyard worker`
and `switchyard api` processes, and (on PostgreSQL) the outage proxy in front of the database.

Every process is a child of the test with its own log; a fault is a SIGKILL, a stop or a
restart of one of them. Children die with the test process (PR_SET_PDEATHSIG), so a killed
test run leaves nothing behind on a shared machine.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fault_proxy import TcpProxy
from sqlalchemy.engine import make_url
from temporalio.client import Client

from api.auth import Role, issue_token
from switchyard.settings import Settings
from temporal_client.client import connect
from workflows.search import SEARCH_ATTRIBUTES

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
BASE = "/api/v1/enhanced-traffic-coordination"
READY_SECONDS = 90.0
_PR_SET_PDEATHSIG = 1

# Short recovery timers: a recovery whose providers are healthy resolves a few seconds after
# its last error, so a test sees every workflow end. Rate limits off: the load is the point.
FAST_SETTINGS: dict[str, object] = {
    "recovery_check_interval_seconds": 0.5,
    "recovery_healthy_checks": 1,
    "recovery_monitoring_seconds": 3,
    "recovery_stage_hold_seconds": 0.5,
    "health_sweep_interval_seconds": 5,
    "rate_limit_enabled": False,
    "db_pool_size": 4,
    "snapshot_poll_seconds": 0.2,
}


def free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Child:
    """One process the test owns: start, SIGKILL, stop (SIGTERM) and start again."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> Child:
        """Start the process (again); output appends to its log."""
        assert not self.running, f"{self.name} is already running"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as handle:
            handle.write(f"\n--- start #{self.starts + 1} of {self.name}\n".encode())
            handle.flush()
            self.process = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        self.starts += 1
        return self

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, in-flight work is lost mid-way."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM and wait; SIGKILL when it does not stop in time."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def tail(self, chars: int = 3000) -> str:
        """The end of the log, for assertion messages."""
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def temporal_dev_server(db_file: Path, port: int, log: Path) -> Child:
    """`temporal server start-dev` on `db_file`, on fixed ports so that restarts reuse them."""
    argv = [
        str(BIN / "temporal"),
        "server",
        "start-dev",
        "--db-filename",
        str(db_file),
        "--port",
        str(port),
        "--http-port",
        str(free_port()),
        "--metrics-port",
        str(free_port()),
        "--headless",
        "--log-level",
        "error",
    ]
    for key in SEARCH_ATTRIBUTES:
        argv += ["--search-attribute", f"{key.name}=Keyword"]
    return Child("temporal", argv, dict(os.environ), log)


def settings_env(settings: Settings, overrides: dict[str, object]) -> dict[str, str]:
    """The environment of a `switchyard` child: these settings as SWITCHYARD_* variables."""
    values: dict[str, object] = {
        "env": settings.env.value,
        "home": settings.home,
        "database_url": settings.database_url,
        "temporal_address": settings.temporal_address,
        "temporal_task_queue": settings.temporal_task_queue,
        "jwt_secret": settings.jwt_secret,
        "encryption_keys": settings.encryption_keys,
        "catalog_path": settings.catalog_path,
        **overrides,
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    for name, value in values.items():
        if value is not None:
            env[f"SWITCHYARD_{name.upper()}"] = str(value)
    return env


@dataclass
class ApiProcess:
    """A `switchyard api` child and its address."""

    child: Child
    port: int

    @property
    def url(self) -> str:
        """The API's base URL."""
        return f"http://127.0.0.1:{self.port}"


@dataclass
class FaultStack:
    """Temporal, workers and API processes on one store, with the outage proxy on PostgreSQL."""

    settings: Settings
    directory: Path
    overrides: dict[str, object] = field(default_factory=dict)
    proxy: TcpProxy | None = None
    temporal: Child | None = None
    workers: list[Child] = field(default_factory=list)
    apis: list[ApiProcess] = field(default_factory=list)

    @property
    def on_postgresql(self) -> bool:
        """True when the store is PostgreSQL (the proxy is then in the path)."""
        return self.settings.database_url.startswith("postgresql")

    def child_database_url(self) -> str:
        """The URL children use: through the proxy on PostgreSQL, the file itself on SQLite."""
        if self.proxy is None:
            return self.settings.database_url
        url = make_url(self.settings.database_url).set(host="127.0.0.1", port=self.proxy.port)
        return url.render_as_string(hide_password=False)

    def env(self) -> dict[str, str]:
        """SWITCHYARD_* for every child."""
        settings = self.settings.model_copy(update={"database_url": self.child_database_url()})
        return settings_env(settings, {**FAST_SETTINGS, **self.overrides})

    def start_proxy(self) -> None:
        """Put the outage proxy between the children and PostgreSQL."""
        if not self.on_postgresql:
            return
        url = make_url(self.settings.database_url)
        self.proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
        self.proxy.start()

    def start_temporal(self) -> Child:
        """The dev server on this stack's database file and port."""
        if self.temporal is None:
            port = int(self.settings.temporal_address.rsplit(":", 1)[1])
            self.temporal = temporal_dev_server(
                self.directory / "temporal.db", port, self.directory / "temporal.log"
            )
        return self.temporal.start()

    def add_worker(self) -> Child:
        """Start one more `switchyard worker`."""
        number = len(self.workers) + 1
        child = Child(
            f"worker{number}",
            [sys.executable, "-m", "switchyard", "worker"],
            self.env(),
            self.directory / f"worker{number}.log",
        )
        self.workers.append(child.start())
        return child

    def add_api(self) -> ApiProcess:
        """Start one more `switchyard api` on a free port."""
        number, port = len(self.apis) + 1, free_port()
        child = Child(
            f"api{number}",
            [sys.executable, "-m", "switchyard", "api", "--host", "127.0.0.1", "--port", str(port)],
            self.env(),
            self.directory / f"api{number}.log",
        )
        api = ApiProcess(child.start(), port)
        self.apis.append(api)
        return api

    async def client(self) -> Client:
        """A Temporal client like the API's (same payload codec), once the server answers."""
        deadline = time.monotonic() + READY_SECONDS
        while True:
            try:
                return await connect(self.settings)
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.3)

    async def wait_healthy(self, api: ApiProcess, within: float = READY_SECONDS) -> float:
        """Seconds until the API reports database, Temporal and a worker all up."""
        started = time.monotonic()
        last: Any = None
        while time.monotonic() - started < within:
            if not api.child.running:
                raise AssertionError(f"{api.child.name} exited:\n{api.child.tail()}")
            last = await asyncio.to_thread(get_json, f"{api.url}{BASE}/health")
            if isinstance(last, dict) and last.get("data", {}).get("status") == "healthy":
                return time.monotonic() - started
            await asyncio.sleep(0.3)
        logs = "\n".join(c.tail(1500) for c in self.children())
        raise AssertionError(f"{api.child.name} not healthy after {within:g} s: {last}\n{logs}")

    def children(self) -> list[Child]:
        """Every process of the stack."""
        found = [api.child for api in self.apis] + list(self.workers)
        return found + ([self.temporal] if self.temporal is not None else [])

    def close(self) -> None:
        """Stop every child (API first, Temporal last) and the proxy."""
        for child in [api.child for api in self.apis] + list(self.workers):
            child.stop()
        if self.temporal is not None:
            self.temporal.stop()
        if self.proxy is not None:
            self.proxy.close()


def get_json(url: str, timeout: float = 5.0) -> Any:
    """GET a JSON document (any status); None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        return json.loads(error.read() or b"null")
    except (OSError, ValueError):
        return None


def bearer(*roles: Role, sub: str = "fault-load", secret: str) -> dict[str, str]:
    """Authorization header for a long-lived test token."""
    settings = Settings(jwt_secret=secret)
    token = issue_token(settings, subject=sub, roles=list(roles), ttl=3600)
    return {"Authorization": f"Bearer {token}"}


@asynccontextmanager
async def running_stack(
    make_settings: Callable[..., Settings],
    directory: Path,
    *,
    apis: int = 1,
    workers: int = 1,
    **overrides: object,
) -> AsyncIterator[FaultStack]:
    """Temporal + workers + APIs (healthy) on the test store; everything stopped afterwards."""
    # Incidents look at their members every second: they end soon after their recoveries.
    settings = make_settings(temporal_address=f"127.0.0.1:{free_port()}", incident_poll_seconds=1.0)
    stack = FaultStack(settings, directory, overrides=dict(overrides))
    try:
        stack.start_proxy()
        stack.start_temporal()
        await stack.client()
        for _ in range(workers):
            stack.add_worker()
        for _ in range(apis):
            stack.add_api()
        for api in stack.apis:
            await stack.wait_healthy(api)
        yield stack
    finally:
        await asyncio.to_thread(stack.close)
