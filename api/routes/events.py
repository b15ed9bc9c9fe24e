"""Events: the outbox as a page (`GET /events`, or its newest events with `tail`) and as a
live WebSocket (`/events`).

Both read the same commit-ordered ids (store/events.py), so a client may poll, stream, or
switch between the two, passing the last id it saw as `since`, and miss nothing.
"""

from __future__ import annotations

import asyncio
import re
from typing import Annotated
from urllib.parse import parse_qsl, urlencode

import jwt
from fastapi import APIRouter, Query, Request, WebSocket
from pydantic import ConfigDict

from api.auth import AuthError, Permission, Principal
from api.deps import Reader, RuntimeDep, get_security
from api.errors import ApiError
from api.events_hub import EventFilter, EventHub, outbound
from api.runtime import ApiRuntime
from api.schemas.common import Envelope, ErrorEnvelope, ResponseModel
from api.security import SecurityContext
from store.crypto import FieldCipher
from store.events import event_rows_since, event_rows_tail, latest_event_id

router = APIRouter(tags=["events"])
ERRORS = {code: {"model": ErrorEnvelope} for code in (401, 403, 422)}
MAX_LIMIT = 1000
MAX_TYPES = 50
MAX_ID = 2**62
MAX_SERVICE = 64
_EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_SERVICE = re.compile(r"^[A-Za-z0-9_.:\-]+$")  # as serviceName everywhere else
# The subprotocol a browser offers alongside `bearer.<token>`; the server answers with it.
SUBPROTOCOL = "switchyard.events.v1"
TOKEN_PREFIX = "bearer."
# Close codes before the handshake completes (the server turns them into an HTTP refusal).
CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_RATE_LIMITED = 4429

TypesQuery = Annotated[
    str | None,
    Query(
        max_length=2000,
        description="Comma-separated event types, e.g. `recovery_started,breaker_opened`.",
    ),
]
ServiceQuery = Annotated[
    str | None, Query(max_length=MAX_SERVICE, description="Only events of this service.")
]


class EventView(ResponseModel):
    """One event: its id, type and time, then the fields of its type (as in the contract)."""

    model_config = ConfigDict(extra="allow")

    id: int
    event_type: str
    timestamp: str


class EventPage(ResponseModel):
    """Events after `since`, oldest first; pass `nextSince` to read on."""

    events: list[EventView]
    next_since: int


class FilterError(ValueError):
    """A malformed filter parameter; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def event_filter(types: str | None, service: str | None) -> EventFilter:
    """The filter of `?types=a,b&service=s`; FilterError naming a malformed part."""
    names = frozenset(t.strip() for t in (types or "").split(",") if t.strip())
    if len(names) > MAX_TYPES:
        raise FilterError("types", f"at most {MAX_TYPES} event types")
    malformed = sorted(name for name in names if not _EVENT_TYPE.match(name))
    if malformed:
        raise FilterError("types", f"not an event type: {malformed[0][:64]!r}")
    if service is not None and len(service) > MAX_SERVICE:
        raise FilterError("service", f"service names have at most {MAX_SERVICE} characters")
    # Also keeps out what the database refuses in a string (NUL) and what no catalog names.
    if service and not _SERVICE.match(service):
        raise FilterError("service", f"not a service name: {service[:64]!r}")
    return EventFilter(types=names, service=service or None)


def _page(
    runtime: ApiRuntime,
    cipher: FieldCipher,
    since: int,
    limit: int,
    chosen: EventFilter,
    tail: int | None = None,
) -> EventPage:
    with runtime.sessions() as session:
        # Ids are commit-ordered: nothing at or below `head` can still appear, so a filtered
        # page that comes back short lets the next read start from there.
        head = latest_event_id(session)
        types = chosen.types or None
        if tail is not None:
            rows = event_rows_tail(session, tail, since, types, chosen.service, until=head)
        else:
            rows = event_rows_since(session, since, limit, types, chosen.service, until=head)
        events = [EventView.model_validate(outbound(row, cipher).body) for row in rows]
    if tail is None and len(events) == limit:
        return EventPage(events=events, next_since=events[-1].id)
    # The newest events end at `head`: reading on from there misses nothing.
    return EventPage(events=events, next_since=max(since, head))


@router.get(
    "/events",
    response_model=Envelope[EventPage],
    response_model_by_alias=True,
    responses=ERRORS,  # type: ignore[arg-type]
)
async def get_events(
    request: Request,
    runtime: RuntimeDep,
    _: Reader,
    since: Annotated[int, Query(ge=0, le=MAX_ID, description="Events with a larger id")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    types: TypesQuery = None,
    service: ServiceQuery = None,
    tail: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_LIMIT,
            description="Instead of the oldest events after `since`, the newest this many "
            "(still oldest first; `limit` is not used); `nextSince` is then the newest event "
            "id, to stream or poll on from.",
        ),
    ] = None,
) -> Envelope[EventPage]:
    """Events after `since` (an event id), at most `limit`, oldest first; for polling.

    With `tail=N`: the newest N events instead (what a screen shows when it opens)."""
    try:
        chosen = event_filter(types, service)
    except FilterError as exc:
        raise ApiError(
            422, "validation_error", str(exc), [{"field": exc.field, "message": str(exc)}]
        ) from exc
    cipher = FieldCipher(get_security(request).keyring)
    page = await asyncio.to_thread(_page, runtime, cipher, since, limit, chosen, tail)
    return Envelope(data=page)


@router.websocket("/events")
async def events_socket(websocket: WebSocket) -> None:
    """Live events. Token: `Sec-WebSocket-Protocol: switchyard.events.v1, bearer.<jwt>` or
    `?token=`; `?since=ID` replays what was missed first; `?types=a,b` and `?service=` filter.
    """
    token = _take_token(websocket)
    hub: EventHub = websocket.app.state.events_hub
    security: SecurityContext = websocket.app.state.security
    if not token:
        await websocket.close(CLOSE_UNAUTHORIZED, "missing bearer token")
        return
    try:
        principal = security.verifier.verify(token)
    except AuthError as exc:
        await websocket.close(CLOSE_UNAUTHORIZED, _reason(str(exc)))
        return
    refusal = await _refusal(security, principal)
    if refusal is not None:
        await websocket.close(*refusal)
        return
    params = websocket.query_params
    try:
        since = _since(params.get("since"))
        chosen = event_filter(params.get("types"), params.get("service"))
    except ValueError as exc:
        await websocket.close(CLOSE_BAD_REQUEST, _reason(str(exc)))
        return
    offered = websocket.scope.get("subprotocols", [])
    await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    expires = _expiry(token, security.settings.jwt_leeway_seconds)
    await hub.stream(websocket, chosen, since, expires)


def _take_token(websocket: WebSocket) -> str | None:
    """The token from the subprotocols, else from `?token=`. A query token is cut from the
    scope either way, so the server's access log, which prints the query, never shows it."""
    pairs = parse_qsl(websocket.scope.get("query_string", b"").decode("latin-1"), True)
    queried = [value for name, value in pairs if name == "token"]
    if queried:
        kept = [(name, value) for name, value in pairs if name != "token"]
        websocket.scope["query_string"] = urlencode(kept).encode("latin-1")
    for offered in websocket.scope.get("subprotocols", []):
        if offered.startswith(TOKEN_PREFIX):
            return str(offered[len(TOKEN_PREFIX) :])
    return queried[-1] if queried else None


async def _refusal(security: SecurityContext, principal: Principal) -> tuple[int, str] | None:
    """Why this principal may not stream events (role, rate limit), or None."""
    if not principal.can(Permission.read):
        return CLOSE_FORBIDDEN, "events need the 'read' permission"
    state = await security.limiter.hit_async(principal.subject, "GET")
    if state is not None and state.exceeded:
        return CLOSE_RATE_LIMITED, f"rate limited; retry in {state.retry_after()} s"
    return None


def _since(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    if not value.isdigit() or int(value) > MAX_ID:
        raise ValueError("since must be an event id (a whole number, 0 or more)")
    return int(value)


def _reason(text: str) -> str:
    """A close reason within the protocol's 123 bytes."""
    return text.encode()[:120].decode(errors="ignore")


def _expiry(token: str, leeway: float) -> float | None:
    """When the (already verified) token stops being accepted, in epoch seconds."""
    claims = jwt.decode(token, options={"verify_signature": False})
    exp = claims.get("exp")
    return float(exp) + leeway if isinstance(exp, int | float) else None
