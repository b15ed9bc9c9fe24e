"""The live catalog: read it, replace it, add, change and retire nodes, while everything runs.

Every change is one revision (store/catalog_revisions.py): audited, announced on the event
stream as `catalog_changed`, and picked up by every API replica's snapshot within a second
(this replica's before the answer).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Header, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from api.deps import Admin, Reader, RuntimeDep
from api.errors import ApiError, field_error
from api.runtime import ApiRuntime
from api.schemas.catalog import (
    CatalogChangeView,
    CatalogView,
    NewProvider,
    ProviderPatch,
)
from api.schemas.common import Envelope, ErrorEnvelope
from store.catalog import (
    CatalogEditError,
    CatalogSpec,
    find_node,
    with_node_added,
    with_node_changed,
)
from store.catalog_revisions import (
    Applied,
    CatalogConflict,
    StaleRevision,
    apply_catalog,
    current_revision,
    live_catalog,
)
from store.db import transaction

router = APIRouter(tags=["catalog"])
ERRORS = {code: {"model": ErrorEnvelope} for code in (401, 403, 404, 409, 422, 428)}


def _view(applied: Applied) -> CatalogChangeView:
    revision = applied.revision
    return CatalogChangeView(
        revision=revision.number,
        created_at=revision.created_at,
        author=revision.author,
        summary=revision.summary,
        changes=[str(change) for change in applied.changes],
    )


def _live(session: Session) -> CatalogSpec:
    live = live_catalog(session)
    if live is None:
        raise ApiError(503, "catalog_unavailable", "the store has no catalog yet")
    return live


async def _change(
    runtime: ApiRuntime,
    edit: CatalogSpec | Callable[[CatalogSpec], CatalogSpec],
    *,
    author: str,
    summary: str,
    expected_revision: int | None = None,
) -> CatalogChangeView:
    """Apply `edit` (a catalog, or a function of the live one) as one revision; answer once
    this replica routes with it."""

    def run() -> Applied:
        with transaction(runtime.sessions) as session:
            wanted = edit if isinstance(edit, CatalogSpec) else edit(_live(session))
            return apply_catalog(
                session,
                wanted,
                author=author,
                summary=summary,
                expected_revision=expected_revision,
            )

    started = time.monotonic()
    try:
        applied = await asyncio.to_thread(run)
    except StaleRevision as exc:
        raise ApiError(
            409,
            "catalog_revision_conflict",
            str(exc),
            {"expected": exc.expected, "current": exc.current},
        ) from exc
    except CatalogConflict as exc:
        raise ApiError(409, "catalog_conflict", str(exc)) from exc
    except CatalogEditError as exc:
        raise field_error(exc.field, str(exc)) from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise field_error(where, first["msg"]) from exc
    if applied.changes:
        await asyncio.to_thread(runtime.snapshot.wait_fresh, started)
    return _view(applied)


@router.get(
    "/catalog",
    response_model=Envelope[CatalogView],
    response_model_exclude_defaults=False,
    responses=ERRORS,  # type: ignore[arg-type]
)
def get_catalog(runtime: RuntimeDep, _: Reader, response: Response) -> Envelope[CatalogView]:
    """The live catalog in the format of providers.yaml, with its revision (also the ETag)."""
    with runtime.sessions() as session:
        revision, live = current_revision(session), _live(session)
    if revision is None:
        raise ApiError(503, "catalog_unavailable", "the catalog has no revision yet")
    response.headers["ETag"] = f'"{revision.number}"'
    return Envelope(
        data=CatalogView(
            revision=revision.number,
            created_at=revision.created_at,
            author=revision.author,
            summary=revision.summary,
            catalog=live,
        )
    )


def _expected_revision(if_match: str | None) -> int:
    if if_match is None:
        raise ApiError(
            428,
            "precondition_required",
            "PUT /catalog needs If-Match with the revision it was made from "
            "(GET /catalog gives it, also as the ETag)",
        )
    try:
        return int(if_match.strip().strip('"'))
    except ValueError as exc:
        raise field_error("header.if-match", "must be a catalog revision number") from exc


@router.put(
    "/catalog",
    response_model=Envelope[CatalogChangeView],
    responses=ERRORS,  # type: ignore[arg-type]
)
async def put_catalog(
    body: CatalogSpec,
    runtime: RuntimeDep,
    principal: Admin,
    if_match: Annotated[str | None, Header(max_length=20)] = None,
) -> Envelope[CatalogChangeView]:
    """Replace the whole catalog; If-Match names the revision it was made from (409 if stale)."""
    expected = _expected_revision(if_match)
    view = await _change(
        runtime,
        body,
        author=principal.subject,
        summary="PUT /catalog",
        expected_revision=expected,
    )
    return Envelope(message="Catalog applied", data=view)


@router.post(
    "/providers",
    status_code=201,
    response_model=Envelope[CatalogChangeView],
    responses=ERRORS,  # type: ignore[arg-type]
)
async def post_provider(
    body: NewProvider, runtime: RuntimeDep, principal: Admin
) -> Envelope[CatalogChangeView]:
    """Add a node to a service; it routes (and starts from its catalog figures) at once."""
    view = await _change(
        runtime,
        lambda live: with_node_added(live, body.service_name, body.node),
        author=principal.subject,
        summary=body.summary or f"added node {body.node.id} to {body.service_name}",
    )
    return Envelope(message="Provider node added", data=view)


@router.patch(
    "/providers/{node_id}",
    response_model=Envelope[CatalogChangeView],
    responses=ERRORS,  # type: ignore[arg-type]
)
async def patch_provider(
    node_id: str, body: ProviderPatch, runtime: RuntimeDep, principal: Admin
) -> Envelope[CatalogChangeView]:
    """Change a node's catalog entry (price, enabled, SLOs, tags, weight, ...)."""
    await _require_node(runtime, node_id)
    fields = body.fields()
    view = await _change(
        runtime,
        lambda live: with_node_changed(live, node_id, fields),
        author=principal.subject,
        summary=body.summary or f"changed {', '.join(fields) or 'nothing'} of {node_id}",
    )
    return Envelope(message="Provider node changed", data=view)


@router.delete(
    "/providers/{node_id}",
    response_model=Envelope[CatalogChangeView],
    responses=ERRORS,  # type: ignore[arg-type]
)
async def delete_provider(
    node_id: str, runtime: RuntimeDep, principal: Admin
) -> Envelope[CatalogChangeView]:
    """Retire a node: it is disabled and its history kept. 409 when a running recovery or
    emergency holds it, or when it is its service's last enabled node."""
    await _require_node(runtime, node_id)
    view = await _change(
        runtime,
        lambda live: with_node_changed(live, node_id, {"enabled": False}),
        author=principal.subject,
        summary=f"retired node {node_id}",
    )
    return Envelope(message="Provider node disabled", data=view)


async def _require_node(runtime: ApiRuntime, node_id: str) -> None:
    """404 for a node the catalog does not have."""

    def find() -> None:
        with runtime.sessions() as session:
            find_node(_live(session), node_id)

    try:
        await asyncio.to_thread(find)
    except CatalogEditError as exc:
        raise ApiError(404, "not_found", f"no provider node {node_id!r}") from exc
