"""FastAPI dependencies: the runtime, sessions, the principal and permission checks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from temporalio.client import Client

from api.auth import AuthError, Permission, Principal
from api.errors import ApiError
from api.runtime import ApiRuntime

if TYPE_CHECKING:
    from api.security import SecurityContext

_bearer = HTTPBearer(auto_error=False)
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
CheckT = TypeVar("CheckT", bound=Callable[..., Principal])


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


def get_security(request: Request) -> SecurityContext:
    """The app's security context (token verifier, rate limiter, keyring)."""
    security: SecurityContext = request.app.state.security
    return security


def get_principal(request: Request, credentials: BearerDep) -> Principal:
    """The caller from the bearer token, or 401 with the reason."""
    if credentials is None or not credentials.credentials:
        raise ApiError(
            401,
            "unauthorized",
            "missing bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    try:
        principal = get_security(request).verifier.verify(credentials.credentials)
    except AuthError as exc:
        raise ApiError(
            401,
            "unauthorized",
            str(exc),
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        ) from exc
    request.state.principal = principal  # for the audit entry, even when refused below
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def enforce_rate_limit(request: Request, principal: Principal) -> None:
    """Count the request against the principal's limit; 429 with Retry-After when spent."""
    limiter = get_security(request).limiter
    state = limiter.hit(principal.subject, request.method)
    if state is None:
        return
    request.state.rate_limit_headers = state.headers()
    if state.exceeded:
        raise ApiError(
            429,
            "rate_limited",
            f"rate limit of {limiter.describe(state.route_class)} for {state.route_class} "
            f"requests exceeded; retry in {state.retry_after()} s",
            {"routeClass": state.route_class, "limit": state.limit},
            headers=state.headers(),
        )


# Each permission check and what it requires: the auth matrix test reads every route's
# permission from here, so a new route is covered without being listed anywhere.
_REQUIRED: dict[Callable[..., Principal], Permission] = {}


def require(permission: Permission) -> Callable[..., Principal]:
    """A dependency that lets only principals holding `permission` through (else 403)."""

    def check(request: Request, principal: PrincipalDep) -> Principal:
        # Counted before the role check, so probing with the wrong role is limited too.
        enforce_rate_limit(request, principal)
        if not principal.can(permission):
            roles = ", ".join(sorted(r.value for r in principal.roles)) or "none"
            raise ApiError(
                403,
                "forbidden",
                f"this action needs the {permission.value!r} permission; your roles: {roles}",
            )
        return principal

    _REQUIRED[check] = permission
    return check


def requires(permission: Permission) -> Callable[[CheckT], CheckT]:
    """Register a hand-written permission dependency, so the auth matrix knows what it needs."""

    def register(check: CheckT) -> CheckT:
        _REQUIRED[check] = permission
        return check

    return register


def required_permission(call: Callable[..., Any]) -> Permission | None:
    """The permission a dependency made by require() or marked by requires() checks."""
    return _REQUIRED.get(call)


Reader = Annotated[Principal, Depends(require(Permission.read))]
Operator = Annotated[Principal, Depends(require(Permission.operate))]
Commander = Annotated[Principal, Depends(require(Permission.command))]
Admin = Annotated[Principal, Depends(require(Permission.administer))]
