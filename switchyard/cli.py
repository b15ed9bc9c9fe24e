"""The `switchyard` command line."""

from __future__ import annotations

import asyncio
import os
from typing import Annotated

import typer

from switchyard.catalog_cli import catalog_app
from switchyard.settings import SecretsError, Settings, get_settings

app = typer.Typer(
    help="Switchyard: routing and durable recovery for external API providers.",
    no_args_is_help=True,
)


def _settings() -> Settings:
    try:
        return get_settings()
    except SecretsError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc


def _logging(settings: Settings) -> None:
    from switchyard.logs import configure_logging

    configure_logging(settings)


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Bind address")] = None,
    port: Annotated[int | None, typer.Option(help="Port")] = None,
) -> None:
    """Run the HTTP API (migrates the store first)."""
    import uvicorn

    from api.app import create_app
    from api.event_frames import websocket_server_options

    settings = _settings()
    _logging(settings)
    uvicorn.run(
        create_app(settings),
        host=host or settings.api_host,
        port=port or settings.api_port,
        # Logging is configured above (structured); uvicorn's loggers propagate to it.
        log_config=None,
        log_level=settings.log_level.lower(),
        access_log=settings.access_log,
        # SIGTERM: stop accepting, let in-flight requests finish for this long, then stop.
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
        # Event frames are built once for every client (docs/EVENTS.md).
        **websocket_server_options(settings.events_compression),
    )


@app.command()
def worker() -> None:
    """Run the Temporal worker (migrates the store first)."""
    from worker.main import run_worker

    settings = _settings()
    _logging(settings)
    asyncio.run(run_worker(settings))


@app.command()
def migrate() -> None:
    """Bring the database schema up to date and load the catalog if the store is empty."""
    from store.catalog import CatalogError
    from store.prepare import prepare_store

    settings = _settings()
    try:
        drift = prepare_store(settings)
    except CatalogError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"store is up to date ({settings.database_url.split('@')[-1]})")
    if drift:
        path = settings.catalog_path
        typer.secho(
            f"{path} differs from the live catalog and was not applied ({len(drift)} change(s)):",
            fg=typer.colors.YELLOW,
        )
        for line in drift[:20]:
            typer.echo(f"  {line}")
        typer.echo(f"apply it with: switchyard catalog apply {path}")


@app.command()
def token(
    role: Annotated[
        list[str], typer.Option("--role", help="viewer, operator, incident_commander, admin")
    ],
    sub: Annotated[str, typer.Option("--sub", help="Subject (who the token is for)")],
    ttl: Annotated[int, typer.Option("--ttl", help="Lifetime in seconds")] = 3600,
) -> None:
    """Print a JWT the local API accepts."""
    from api.auth import AuthConfigError, Role, issue_token

    try:
        roles = [Role(r) for r in role]
    except ValueError as exc:
        allowed = ", ".join(r.value for r in Role)
        typer.secho(f"error: unknown role; use one of {allowed}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    try:
        typer.echo(issue_token(_settings(), subject=sub, roles=roles, ttl=ttl))
    except AuthConfigError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc


audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)
keys_app = typer.Typer(help="Encryption keys (SWITCHYARD_ENCRYPTION_KEYS).", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
app.add_typer(keys_app, name="keys")
app.add_typer(catalog_app, name="catalog")


def _os_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in some containers
        return "unknown"


@audit_app.command("verify")
def audit_verify() -> None:
    """Re-compute the audit chain; name the first broken entry and exit 1 if there is one."""
    from store.audit import verify_chain
    from store.db import make_engine, make_session_factory
    from store.receipts import pending_receipts

    engine = make_engine(_settings().database_url)
    try:
        with make_session_factory(engine)() as session:
            report = verify_chain(session)
            pending = pending_receipts(session)
    finally:
        engine.dispose()
    if report.broken is not None:
        typer.secho(
            f"audit chain broken at entry {report.broken.entry_id}: {report.broken.reason} "
            f"({report.checked} entries before it verified)",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(1)
    typer.echo(f"audit chain verified: {report.checked} entries, head {report.head_hash}")
    if pending:
        typer.echo(f"{pending} receipt(s) of outcome batches wait to be sealed into it")


@keys_app.command("rotate")
def keys_rotate(
    encrypt_plaintext: Annotated[
        bool,
        typer.Option(help="Also encrypt values stored in plaintext before encryption existed."),
    ] = False,
) -> None:
    """Re-encrypt every stored value with the current (first) key; safe to run again."""
    import json
    import uuid

    from store.audit import AuditRecord, append_entry
    from store.crypto import FieldCipher, KeyringError
    from store.db import make_engine, make_session_factory
    from store.rotation import rotate_keys

    settings = _settings()
    try:
        cipher = FieldCipher.from_keys(settings.encryption_keys)
    except KeyringError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    engine = make_engine(settings.database_url)
    try:
        sessions = make_session_factory(engine)
        counts = [
            c.as_dict() for c in rotate_keys(sessions, cipher, encrypt_plaintext=encrypt_plaintext)
        ]
        failed = sum(c["failed"] for c in counts)
        append_entry(
            sessions,
            AuditRecord(
                principal=f"cli:{_os_user()}",
                role="admin",
                action="keys rotate",
                resource="encryption_keys",
                request_id=uuid.uuid4().hex,
                outcome="failed" if failed else "ok",
                detail={"currentKey": cipher.keyring.current_kid, "columns": counts},
            ),
        )
    finally:
        engine.dispose()
    typer.echo(json.dumps({"currentKey": cipher.keyring.current_kid, "columns": counts}, indent=2))
    if failed:
        typer.secho(f"{failed} value(s) could not be re-encrypted", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)


@app.command()
def dev() -> None:
    """Start the Temporal dev server (UI :8233), the worker and the API; Ctrl-C stops all."""
    from switchyard.dev import Supervisor

    # Lines for people, not collectors; the worker and API inherit it. An explicit value wins.
    os.environ.setdefault("SWITCHYARD_LOG_FORMAT", "console")
    settings = _settings()
    _logging(settings)
    raise typer.Exit(Supervisor(settings).run())


@app.command()
def simulate(
    scenario: Annotated[
        str, typer.Argument(help="A scenario in sim/scenarios (stripe_error_rate, ...) or a file")
    ],
    policy: Annotated[
        list[str] | None,
        typer.Option("--policy", help="Policy to run (repeatable; default: all of them)"),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the traffic and provider behaviour")] = 1,
    duration: Annotated[
        float | None, typer.Option(help="Cut the scenario to this many seconds")
    ] = None,
    retries: Annotated[
        int | None, typer.Option(help="Client retries per request (default: the scenario's)")
    ] = None,
    plot: Annotated[
        str | None, typer.Option("--plot", help="Draw success rate and cost over time to a PNG")
    ] = None,
    markdown: Annotated[bool, typer.Option(help="Print the table as Markdown")] = False,
) -> None:
    """Replay a provider-trouble scenario in virtual time against Switchyard and the baselines."""
    from pathlib import Path

    from sim.cli import simulate_command

    status = simulate_command(
        scenario, policy, seed, duration, retries, Path(plot) if plot else None, markdown
    )
    raise typer.Exit(status)


if __name__ == "__main__":
    app()
