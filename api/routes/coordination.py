"""POST execute-coordination."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, get_args

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import ValidationError

from api import metrics
from api.coordinator import ANSWER_MESSAGE, execute_coordination
from api.deps import Decider, bearer
from api.runtime import ApiRuntime
from api.schemas.common import Envelope, ErrorEnvelope
from api.schemas.coordination import CoordinationRequest, CoordinationResult


class DirectRoute(APIRoute):
    """A route that checks, parses and answers by itself, with the same rules as FastAPI.

    The hot path of the product: FastAPI's per-request dependency solving (a generic walk
    over the route's dependencies and parameters) cost a sixth of a decision's CPU. The route
    is still declared as usual, so OpenAPI, the security scheme and the permission matrix
    read it as before; only the request handler is this one: the declared permission check
    (the very function `Decider` names), then the body validated from its JSON bytes by the
    declared model, errors located under `body` as FastAPI would.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        check = _declared_check(Decider)

        async def handle(request: Request) -> Response:
            await check(request, await bearer(request))
            try:
                body = CoordinationRequest.model_validate_json(await request.body())
            except ValidationError as exc:
                raise RequestValidationError(
                    [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
                ) from None
            return await _answer(request, body)

        return handle


def _declared_check(annotation: Any) -> Callable[..., Awaitable[Any]]:
    """The dependency function an `Annotated[..., Depends(check)]` alias names."""
    depends = get_args(annotation)[1]
    check: Callable[..., Awaitable[Any]] = depends.dependency
    return check


router = APIRouter(tags=["coordination"], route_class=DirectRoute)


@router.post(
    "/execute-coordination",
    response_model=Envelope[CoordinationResult],
    response_model_by_alias=True,
    responses={
        401: {"model": ErrorEnvelope},
        403: {"model": ErrorEnvelope},
        422: {"model": ErrorEnvelope},
        503: {"model": ErrorEnvelope},
    },
)
async def post_execute_coordination(
    body: CoordinationRequest, _: Decider, request: Request
) -> Response:
    """Pick a provider node for one request, record the decision and its spend, explain it."""
    return await _answer(request, body)


async def _answer(request: Request, body: CoordinationRequest) -> Response:
    runtime: ApiRuntime = request.app.state.runtime  # not a dependency: the hot path's cost
    data = await execute_coordination(runtime, body, audit_scope=request.scope)
    # Already in wire form (built from CoordinationResult): encoded once, not re-validated.
    envelope = {"success": True, "message": ANSWER_MESSAGE, "data": data}
    metrics.observe_decision(body.service_name, data)
    return Response(orjson.dumps(envelope), media_type="application/json")
