"""`switchyard catalog diff|apply|export`: the live catalog, changed while everything runs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from switchyard.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from store.catalog import CatalogSpec

# The store is imported by the commands that use it, not by `switchyard --help`.

catalog_app = typer.Typer(
    help="The live provider catalog: compare a file with it, apply a file, export it.",
    no_args_is_help=True,
)
FileArgument = Annotated[Path, typer.Argument(help="A catalog file (the format of providers.yaml)")]


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def _read(path: Path) -> CatalogSpec:
    from store.catalog import CatalogError, load_catalog_file

    try:
        return load_catalog_file(path)
    except CatalogError as exc:
        raise _fail(str(exc)) from exc


@contextmanager
def _store(settings: Settings) -> Iterator[Session]:
    from store.db import make_engine, make_session_factory, transaction

    engine = make_engine(settings.database_url)
    try:
        with transaction(make_session_factory(engine)) as session:
            yield session
    finally:
        engine.dispose()


def _live(session: Session) -> CatalogSpec:
    from store.catalog_revisions import live_catalog

    live = live_catalog(session)
    if live is None:
        raise _fail("the store has no catalog yet: run `switchyard migrate` first")
    return live


def _settings() -> Settings:
    from switchyard.cli import _settings as cli_settings

    return cli_settings()


@catalog_app.command("diff")
def diff(path: FileArgument) -> None:
    """What applying FILE would change; exits 0 when nothing, 1 when something would change."""
    from store.catalog import catalog_changes
    from store.catalog_revisions import revision_number

    wanted = _read(path)
    with _store(_settings()) as session:
        number, changes = revision_number(session), catalog_changes(_live(session), wanted)
    if not changes:
        typer.echo(f"{path} matches the live catalog (revision {number})")
        return
    typer.echo(f"{path} against the live catalog (revision {number}):")
    for change in changes:
        typer.echo(f"  {change}")
    raise typer.Exit(1)


@catalog_app.command("apply")
def apply(
    path: FileArgument,
    yes: Annotated[bool, typer.Option("--yes", help="Apply without asking")] = False,
    summary: Annotated[str, typer.Option(help="Why: recorded with the revision")] = "",
) -> None:
    """Make FILE the live catalog, in one transaction, as a new audited revision."""
    import getpass

    from store.audit import AuditRecord
    from store.audit import append as append_audit
    from store.catalog import catalog_changes
    from store.catalog_revisions import CatalogConflict, apply_catalog, revision_number

    wanted = _read(path)
    settings = _settings()
    with _store(settings) as session:
        number, changes = revision_number(session), catalog_changes(_live(session), wanted)
    if not changes:
        typer.echo(f"nothing to apply: {path} matches the live catalog (revision {number})")
        return
    typer.echo(f"{path} against the live catalog (revision {number}):")
    for change in changes:
        typer.echo(f"  {change}")
    if not yes and not typer.confirm(f"apply these {len(changes)} change(s)?"):
        raise typer.Exit(1)
    try:
        author = f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        author = "cli:unknown"
    try:
        with _store(settings) as session:
            applied = apply_catalog(
                session,
                wanted,
                author=author,
                summary=summary or f"applied {path.name}",
                expected_revision=number,
            )
            append_audit(
                session,
                [
                    AuditRecord(
                        principal=author,
                        role="admin",
                        action="catalog apply",
                        resource=str(path),
                        request_id=uuid.uuid4().hex,
                        outcome="applied",
                        detail={
                            "revision": applied.revision.number,
                            "changes": len(applied.changes),
                        },
                    )
                ],
            )
    except CatalogConflict as exc:
        raise _fail(str(exc), 1) from exc
    typer.echo(f"applied: revision {applied.revision.number} ({len(applied.changes)} change(s))")


@catalog_app.command("export")
def export(
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write to this file, not stdout")
    ] = None,
) -> None:
    """Write the live catalog as YAML that `apply` accepts unchanged."""
    from store.catalog import to_yaml
    from store.catalog_revisions import revision_number

    with _store(_settings()) as session:
        number, text = revision_number(session), to_yaml(_live(session))
    header = f"# Switchyard provider catalog, revision {number} (switchyard catalog export)\n"
    if output is None:
        typer.echo(header + text, nl=False)
        return
    output.write_text(header + text)
    typer.echo(f"wrote revision {number} to {output}")
