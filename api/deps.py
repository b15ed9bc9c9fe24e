"""FastAPI dependencies: the runtime, sessions, the principal and permission checks."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from temporalio.client import Client

from api import metrics
from api.auth import AuthError, Permission, Principal
from api.errors import ApiError, temporal_unavailable
from api.ratelimit import RouteClass
from api.runtime import ApiRuntime

if TYPE_CHECKING:
    from api.security import SecurityContext

log = logging.getLogger("switchyard.api")
# The bearer credentials, or None: the permission checks answer 401 themselves.
bearer = HTTPBearer(auto_error=False)
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
# A permission check: a dependency answering the principal (async, or sync when hand-written).
Check = Callable[..., Any]
CheckT = TypeVar("CheckT", bound=Check)


async def get_runtime(request: Request) -> ApiRuntime:
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
        raise temporal_unavailable(
            "the workflow engine (Temporal) is unreachable; nothing was started, retry shortly"
        ) from exc


TemporalDep = Annotated[Client, Depends(get_temporal)]


def get_security(request: Request) -> SecurityContext:
    """The app's security context (token verifier, rate limiter, keyring)."""
    security: SecurityContext = request.app.state.security
    return security


async def get_principal(request: Request, credentials: BearerDep) -> Principal:
    """The caller from the bearer token, or 401 with the reason.

    Dependencies here are async on purpose: a sync one costs a hop to the thread pool.
    """
    return principal_of(request, credentials)


def principal_of(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Principal:
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


async def enforce_rate_limit(
    request: Request, principal: Principal, route_class: RouteClass | None = None
) -> None:
    """Count the request against the principal's limit; 429 with Retry-After when spent."""
    limiter = get_security(request).limiter
    state = await limiter.hit_async(principal.subject, request.method, route_class)
    if state is None:
        return
    request.state.rate_limit_headers = state.headers()
    if state.exceeded:
        metrics.rate_limited(state.route_class)
        if limiter.should_log_refusal(principal.subject, state.route_class):
            log.warning(
                "rate limit of %s for %s requests spent by %s; refusing with 429 "
                "(logged once a minute per principal)",
                limiter.describe(state.route_class),
                state.route_class.value,
                principal.subject,
            )
        raise ApiError(
            429,
            "rate_limited",
            f"rate limit of {limiter.describe(state.route_class)} for {state.route_class.value} "
            f"requests exceeded; retry in {state.retry_after()} s",
            {"routeClass": state.route_class, "limit": state.limit},
            headers=state.headers(),
        )


# Each permission check and what it requires: the auth matrix test reads every route's
# permission from here, so a new route is covered without being listed anywhere.
_REQUIRED: dict[Check, Permission] = {}


def require(
    permission: Permission, route_class: RouteClass | None = None
) -> Callable[..., Awaitable[Principal]]:
    """A dependency that lets only principals holding `permission` through (else 403).

    Requests count against the principal's rate limit of `route_class` (by default read for
    GET, control for other methods).
    """

    async def check(request: Request, credentials: BearerDep) -> Principal:
        # The token is read here rather than through PrincipalDep: each dependency level costs
        # FastAPI tens of microseconds per request, and this runs on every call.
        principal = principal_of(request, credentials)
        # Counted before the role check, so probing with the wrong role is limited too.
        await enforce_rate_limit(request, principal, route_class)
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
Decider = Annotated[Principal, Depends(require(Permission.operate, RouteClass.decide))]
Reporter = Annotated[Principal, Depends(require(Permission.operate, RouteClass.ingest))]
Commander = Annotated[Principal, Depends(require(Permission.command))]
Admin = Annotated[Principal, Depends(require(Permission.administer))]
