"""The `switchyard` command line."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

import typer

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


def _logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Bind address")] = None,
    port: Annotated[int | None, typer.Option(help="Port")] = None,
) -> None:
    """Run the HTTP API (migrates the store first)."""
    import uvicorn

    from api.app import create_app

    settings = _settings()
    _logging()
    uvicorn.run(
        create_app(settings),
        host=host or settings.api_host,
        port=port or settings.api_port,
        log_level="info",
        timeout_graceful_shutdown=10,
    )


@app.command()
def worker() -> None:
    """Run the Temporal worker (migrates the store first)."""
    from worker.main import run_worker

    settings = _settings()
    _logging()
    asyncio.run(run_worker(settings))


@app.command()
def migrate() -> None:
    """Bring the database schema up to date and load the catalog if the store is empty."""
    from api.app import prepare_store
    from store.catalog import CatalogError

    settings = _settings()
    try:
        prepare_store(settings)
    except CatalogError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"store is up to date ({settings.database_url.split('@')[-1]})")


@app.command()
def token(
    role: Annotated[
        list[str], typer.Option("--role", help="viewer, operator, incident_commander, admin")
    ],
    sub: Annotated[str, typer.Option("--sub", help="Subject (who the token is for)")],
    ttl: Annotated[int, typer.Option("--ttl", help="Lifetime in seconds")] = 3600,
) -> None:
    """Print a JWT the local API accepts."""
    from api.auth import Role, issue_token

    try:
        roles = [Role(r) for r in role]
    except ValueError as exc:
        allowed = ", ".join(r.value for r in Role)
        typer.secho(f"error: unknown role; use one of {allowed}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    typer.echo(issue_token(_settings(), subject=sub, roles=roles, ttl=ttl))


@app.command()
def dev() -> None:
    """Start the Temporal dev server (UI :8233), the worker and the API; Ctrl-C stops all."""
    from switchyard.dev import Supervisor

    settings = _settings()
    _logging()
    raise typer.Exit(Supervisor(settings).run())


if __name__ == "__main__":
    app()
