"""FastAPI dependencies: the runtime, sessions, the principal and permission checks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from temporalio.client import Client

from api.auth import AuthError, Permission, Principal, verify_token
from api.errors import ApiError
from api.runtime import ApiRuntime

_bearer = HTTPBearer(auto_error=False)


def get_runtime(request: Request) -> ApiRuntime:
    """The process's runtime, set by the lifespan."""
    runtime: ApiRuntime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[ApiRuntime, Depends(get_runtime)]


def get_session(runtime: RuntimeDep) -> Iterator[Session]:
    """One session per request; routes open their own transaction."""
    with runtime.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


async def get_temporal(runtime: RuntimeDep) -> Client:
    """The Temporal client, or 503 when Temporal cannot be reached."""
    try:
        return await runtime.temporal()
    except Exception as exc:
        raise ApiError(
            503,
            "temporal_unavailable",
            "the workflow engine (Temporal) is unreachable; nothing was started, retry shortly",
            headers={"Retry-After": "5"},
        ) from exc


TemporalDep = Annotated[Client, Depends(get_temporal)]


def get_principal(
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller from the bearer token, or 401 with the reason."""
    if credentials is None or not credentials.credentials:
        raise ApiError(
            401,
            "unauthorized",
            "missing bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    try:
        return verify_token(runtime.settings, credentials.credentials)
    except AuthError as exc:
        raise ApiError(
            401,
            "unauthorized",
            str(exc),
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        ) from exc


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require(permission: Permission) -> Callable[[Principal], Principal]:
    """A dependency that lets only principals holding `permission` through (else 403)."""

    def check(principal: PrincipalDep) -> Principal:
        if not principal.can(permission):
            roles = ", ".join(sorted(r.value for r in principal.roles)) or "none"
            raise ApiError(
                403,
                "forbidden",
                f"this action needs the {permission.value!r} permission; your roles: {roles}",
            )
        return principal

    return check


Reader = Annotated[Principal, Depends(require(Permission.read))]
Operator = Annotated[Principal, Depends(require(Permission.operate))]
Commander = Annotated[Principal, Depends(require(Permission.command))]
Admin = Annotated[Principal, Depends(require(Permission.administer))]
