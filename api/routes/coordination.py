"""POST execute-coordination."""

from __future__ import annotations

from fastapi import APIRouter

from api.coordinator import execute_coordination
from api.deps import Operator, RuntimeDep
from api.schemas.common import Envelope, ErrorEnvelope
from api.schemas.coordination import CoordinationRequest, CoordinationResult

router = APIRouter(tags=["coordination"])


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
def post_execute_coordination(
    body: CoordinationRequest, runtime: RuntimeDep, _: Operator
) -> Envelope[CoordinationResult]:
    """Pick a provider node for one request, record the decision and its spend, explain it."""
    result = execute_coordination(runtime, body)
    return Envelope(message="Enhanced traffic coordination completed successfully", data=result)
