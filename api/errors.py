"""One error envelope for every 4xx/5xx; no stack trace or SQL ever reaches a client."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.service import RPCError, RPCStatusCode

log = logging.getLogger("switchyard.api")


class ApiError(Exception):
    """An error with a status, a code and a message meant for the caller."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers
        super().__init__(message)


# A 422 names the fields it refuses, but a field path may hold a key the client chose (any
# text, any length, any number of them): the message names a few, escaped and clipped.
MAX_NAMED_FIELDS = 5
MAX_FIELD_CHARS = 64
MAX_VALIDATION_DETAILS = 50


def shown_field(name: str) -> str:
    """A field path as an error shows it: control characters escaped, at most 64 characters."""
    escaped = "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in name
    )
    if len(escaped) <= MAX_FIELD_CHARS:
        return escaped
    return escaped[: MAX_FIELD_CHARS - 1] + "…"


def fields_message(fields: Iterable[str]) -> str:
    """`invalid request: a, b, c, d, e and 7 more`: the first five distinct fields, in order."""
    names = list(dict.fromkeys(shown_field(field) for field in fields)) or ["body"]
    named = ", ".join(names[:MAX_NAMED_FIELDS])
    more = len(names) - MAX_NAMED_FIELDS
    return f"invalid request: {named}" + (f" and {more} more" if more > 0 else "")


def field_error(field: str, message: str) -> ApiError:
    """A 422 naming one field of the request, shaped as FastAPI's own validation errors."""
    return ApiError(
        422, "validation_error", fields_message([field]), [{"field": field, "message": message}]
    )


def temporal_unavailable(what: str) -> ApiError:
    """503 (retry in 5 s): the workflow engine did not answer; `what` says what happened."""
    return ApiError(503, "temporal_unavailable", what, headers={"Retry-After": "5"})


def temporal_error(exc: RPCError, not_found: str) -> ApiError:
    """A Temporal RPC failure: 404 with `not_found` when the workflow is not there, else 503."""
    if exc.status == RPCStatusCode.NOT_FOUND:
        return ApiError(404, "not_found", not_found)
    return temporal_unavailable(
        f"the workflow engine did not answer ({exc.status.name}); retry shortly"
    )


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The JSON error envelope."""
    body = {"success": False, "error": {"code": code, "message": message, "details": details}}
    return JSONResponse(body, status_code=status, headers=headers)


# A store outage is brief (a failover, a restart): the pool reconnects on its own (pre-ping).
STORE_RETRY_AFTER_SECONDS = 2


def store_unavailable(exc: Exception, what: str) -> JSONResponse:
    """503 `database_unavailable`: the request was refused because the store is unreachable."""
    log.warning("%s: %s", what, exc.__class__.__name__)
    return error_response(
        503,
        "database_unavailable",
        f"{what}; retry in {STORE_RETRY_AFTER_SECONDS} s: Switchyard reconnects by itself "
        "once the database is back",
        headers={"Retry-After": str(STORE_RETRY_AFTER_SECONDS)},
    )


def _field_path(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) if parts else "body"


def validation_details(errors: Any) -> list[dict[str, Any]]:
    """Pydantic errors as [{field, message}] with the wire field names (shown as errors show
    them), at most 50."""
    return [
        {"field": shown_field(_field_path(tuple(e.get("loc", ())))), "message": e.get("msg", "")}
        for e in list(errors)[:MAX_VALIDATION_DETAILS]
    ]


def install_error_handlers(app: FastAPI) -> None:
    """Map every failure to the envelope with the right status."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        message = fields_message(sorted({_field_path(tuple(e.get("loc", ()))) for e in errors}))
        return error_response(422, "validation_error", message, validation_details(errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {
            400: "bad_request",
            401: "unauthorized",
            403: "forbidden",
            404: "not_found",
            405: "method_not_allowed",
            413: "payload_too_large",
            415: "unsupported_media_type",
        }
        return error_response(
            exc.status_code,
            code.get(exc.status_code, "http_error"),
            str(exc.detail),
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(OperationalError)
    async def _db_down(_: Request, exc: OperationalError) -> JSONResponse:
        return store_unavailable(exc, "the database is unavailable")

    @app.exception_handler(DBAPIError)
    async def _db_error(_: Request, exc: DBAPIError) -> JSONResponse:
        if exc.connection_invalidated or isinstance(exc, InterfaceError):
            return store_unavailable(exc, "the connection to the database was lost")
        log.exception("database error")
        return error_response(500, "internal_error", "internal error")

    @app.exception_handler(PoolTimeoutError)
    async def _pool_timeout(_: Request, exc: PoolTimeoutError) -> JSONResponse:
        return store_unavailable(exc, "no database connection became free in time")

    # Raised unwrapped by code that drives the driver itself (binary COPY of outcomes).
    @app.exception_handler(psycopg.OperationalError)
    @app.exception_handler(psycopg.InterfaceError)
    async def _driver_down(_: Request, exc: psycopg.Error) -> JSONResponse:
        return store_unavailable(exc, "the connection to the database was lost")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        # Answered outside the security middleware: echo the request id here.
        request_id = request.scope.get("state", {}).get("request_id")
        headers = {"X-Request-ID": request_id} if request_id else None
        return error_response(500, "internal_error", "internal error", headers=headers)


def _error_schema(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}},
    }


# Answers any operation may give, by what the operation has (docs/SECURITY.md).
_ALWAYS = {503: "A dependency (database, Temporal, audit log) is unavailable"}
_AUTHENTICATED = {
    401: "Missing or invalid bearer token (the message says why)",
    403: "The token's roles lack the permission",
    429: "Rate limit exceeded (Retry-After, X-RateLimit-* headers)",
}
_WITH_BODY = {
    400: "Unreadable request body (e.g. not UTF-8)",
    413: "Request body too large",
    415: "Request body is not application/json",
    422: "Invalid request (details name the fields)",
}


def document_error_responses(app: FastAPI) -> None:
    """Declare the envelope answers every operation may give, so the OpenAPI document is exact."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        if "ErrorEnvelope" not in components:
            from api.schemas.common import ErrorEnvelope

            envelope = ErrorEnvelope.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(envelope.pop("$defs", {}))
            components["ErrorEnvelope"] = envelope
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                extra = dict(_ALWAYS)
                if operation.get("security"):
                    extra.update(_AUTHENTICATED)
                if "requestBody" in operation:
                    extra.update(_WITH_BODY)
                responses = operation.setdefault("responses", {})
                for status, description in extra.items():
                    responses.setdefault(str(status), _error_schema(description))
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
