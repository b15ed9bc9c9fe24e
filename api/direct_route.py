"""Routes on the volume paths that check, parse and answer by themselves, by FastAPI's rules.

FastAPI's per-request dependency solving (a generic walk over a route's dependencies and
parameters) cost a sixth of a decision's CPU and a comparable share of an outcome batch's. A
route declared with `route_class=DirectRoute` is still declared as usual, so OpenAPI, the
security scheme and the permission matrix read it as before; only its request handler is this
one. The endpoint takes exactly `body` (a pydantic model), `principal` (an
`Annotated[Principal, Depends(check)]` alias such as `Decider`) and `request`: the declared
permission check runs first, then the body is validated from its JSON bytes by the declared
model, errors located under `body` as FastAPI would. Headers the endpoint reads come from
`request` (declare them with `openapi_extra` so the document still shows them).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, get_args, get_type_hints

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

from api.deps import bearer

Endpoint = Callable[..., Awaitable[Response]]


class DirectRoute(APIRoute):
    """An APIRoute whose handler runs the permission check, parses the body and calls the
    endpoint, without FastAPI's dependency solving."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        hints = get_type_hints(self.endpoint, include_extras=True)
        model: type[BaseModel] = hints["body"]
        check = _declared_check(hints["principal"])
        endpoint: Endpoint = self.endpoint

        async def handle(request: Request) -> Response:
            principal = await check(request, await bearer(request))
            try:
                body = model.model_validate_json(await request.body())
            except ValidationError as exc:
                raise RequestValidationError(
                    [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
                ) from None
            return await endpoint(body=body, principal=principal, request=request)

        return handle


def _declared_check(annotation: Any) -> Callable[..., Awaitable[Any]]:
    """The dependency function an `Annotated[..., Depends(check)]` alias names."""
    depends = get_args(annotation)[1]
    check: Callable[..., Awaitable[Any]] = depends.dependency
    return check
