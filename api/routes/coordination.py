"""POST execute-coordination."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request, Response

from api import metrics
from api.coordinator import ANSWER_MESSAGE, execute_coordination
from api.deps import Decider
from api.direct_route import DirectRoute
from api.runtime import ApiRuntime
from api.schemas.common import Envelope, ErrorEnvelope
from api.schemas.coordination import CoordinationRequest, CoordinationResult

router = APIRouter(tags=["coordination"], route_class=DirectRoute)


@router.post(
    "/execute-coordination",
    response_model=Envelope[CoordinationResult],
    response_model_by_alias=True,
    responses={
        401: {"model": ErrorEnvelope},
        403: {"model": ErrorEnvelope},
        409: {"model": ErrorEnvelope},
        422: {"model": ErrorEnvelope},
        503: {"model": ErrorEnvelope},
    },
)
async def post_execute_coordination(
    body: CoordinationRequest, principal: Decider, request: Request
) -> Response:
    """Pick a provider node for one request, record the decision and its spend, explain it."""
    return await _answer(request, body, principal.subject)


async def _answer(request: Request, body: CoordinationRequest, caller: str) -> Response:
    runtime: ApiRuntime = request.app.state.runtime  # not a dependency: the hot path's cost
    data = await execute_coordination(runtime, body, audit_scope=request.scope, caller=caller)
    # Already in wire form (built from CoordinationResult): encoded once, not re-validated.
    envelope = {"success": True, "message": ANSWER_MESSAGE, "data": data}
    metrics.observe_decision(body.service_name, data)
    return Response(orjson.dumps(envelope), media_type="application/json")
