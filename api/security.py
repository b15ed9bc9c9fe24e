"""The API's security layer: request ids, body limits, media types, CORS for the codec, audit.

One pure-ASGI middleware, outside FastAPI's routing, so it sees every request including the
ones routing refuses (404, 405) and the ones it refuses itself (413, 415):

- `X-Request-ID` is taken from the request when well formed, generated otherwise, and echoed;
- bodies over `SWITCHYARD_MAX_REQUEST_BODY_BYTES` are refused with 413 before they are read
  (declared length) or as soon as they pass the limit (chunked);
- a body that is not JSON is refused with 415;
- rate-limit headers set by the permission check (api/deps.py) are added to the answer;
- a write request's answer is held until its audit entry is written (api/audit.py).
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import FastAPI
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.audit import WRITE_METHODS, AuditWriter, is_audited, record_write
from api.auth import TokenVerifier
from api.errors import document_error_responses, error_response
from api.ratelimit import RateLimiter
from store.crypto import Keyring
from switchyard.settings import Settings

log = logging.getLogger("switchyard.api")
REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,100}$")
CODEC_PREFIX = "/codec"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True)
class SecurityContext:
    """What the security layer holds for the app's life: verifier, limiter, keyring, audit."""

    settings: Settings
    verifier: TokenVerifier
    limiter: RateLimiter
    keyring: Keyring
    audit: AuditWriter

    @classmethod
    def from_settings(cls, settings: Settings) -> SecurityContext:
        """Build everything once; a bad key, algorithm or limit fails here, at start-up."""
        return cls(
            settings=settings,
            verifier=TokenVerifier(settings),
            limiter=RateLimiter(settings),
            keyring=Keyring.parse(settings.encryption_keys),
            audit=AuditWriter(),
        )


def request_id_of(headers: Headers) -> str:
    """The caller's X-Request-ID when it is a sane token, else a fresh one."""
    given = headers.get(REQUEST_ID_HEADER, "")
    return given if _REQUEST_ID.match(given) else uuid.uuid4().hex


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _refusal(method: str, headers: Headers, limit: int) -> tuple[int, str, str] | None:
    """413/415/400 for a request whose declared body is refused before reading it."""
    if method not in _BODY_METHODS:
        return None
    declared = headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            return 400, "bad_request", "Content-Length is not a number"
        if int(declared) > limit:
            return 413, "payload_too_large", f"request body over the {limit}-byte limit"
    has_body = (declared is not None and int(declared) > 0) or "chunked" in headers.get(
        "transfer-encoding", ""
    )
    content_type = headers.get("content-type")
    if has_body and content_type is not None and not _is_json(content_type):
        return 415, "unsupported_media_type", "request bodies must be application/json"
    return None


async def _read_chunked(receive: Receive, limit: int) -> tuple[Receive, bool]:
    """Read a body of undeclared length up to the limit; (replaying receive, within limit)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return receive, False
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    pending: list[Message] = [{"type": "http.request", "body": b"".join(chunks)}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay, True


class _Exchange:
    """Wraps `send`: adds headers, and for writes holds the answer until it is audited."""

    def __init__(self, scope: Scope, send: Send, request_id: str) -> None:
        self.scope = scope
        self.send_downstream = send
        self.request_id = request_id
        self.audit = scope["method"] in WRITE_METHODS
        self.start: Message | None = None
        self.body: list[bytes] = []
        self.audited = False

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = MutableHeaders(scope=message)
            headers[REQUEST_ID_HEADER] = self.request_id
            limits: dict[str, str] = self.scope.get("state", {}).get("rate_limit_headers", {})
            for name, value in limits.items():
                headers[name] = value
            if self.audit:
                self.start = message
                return
        elif message["type"] == "http.response.body" and self.start is not None:
            self.body.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            await self._release()
            return
        await self.send_downstream(message)

    async def _release(self) -> None:
        assert self.start is not None
        start, body = self.start, b"".join(self.body)
        self.start = None
        if not await self.record(start["status"], body) and not _store_down(start, body):
            start, body = self._audit_unavailable()
        await self.send_downstream(start)
        await self.send_downstream({"type": "http.response.body", "body": body})

    async def record(self, status: int, body: bytes) -> bool:
        """Append the audit entry once; False when it could not be written."""
        if self.audited or is_audited(self.scope):
            return True
        self.audited = True
        try:
            await record_write(self.scope, status, body)
        except Exception:
            log.exception("audit log unavailable (request %s)", self.request_id)
            return False
        return True

    def _audit_unavailable(self) -> tuple[Message, bytes]:
        response = error_response(
            503,
            "audit_unavailable",
            "the audit log could not be written; the request may have taken effect: check "
            f"request {self.request_id} before retrying",
            headers={"Retry-After": "2", REQUEST_ID_HEADER: self.request_id},
        )
        start: Message = {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": response.raw_headers,
        }
        return start, bytes(response.body)


def _store_down(start: Message, body: bytes) -> bool:
    """The answer already says the database is down: nothing took effect, and it says so.

    Its entry cannot be written either, but replacing it with `audit_unavailable` ("the
    request may have taken effect") would mislead.
    """
    return start["status"] == 503 and b'"code":"database_unavailable"' in body


class SecurityMiddleware:
    """Request ids, body size and media type limits, rate-limit headers, audit of writes."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        request_id = request_id_of(headers)
        scope.setdefault("state", {})["request_id"] = request_id
        exchange = _Exchange(scope, send, request_id)
        refusal = _refusal(scope["method"], headers, self.max_body_bytes)
        if refusal is None and "content-length" not in headers and scope["method"] in _BODY_METHODS:
            receive, within = await _read_chunked(receive, self.max_body_bytes)
            if not within:
                limit = self.max_body_bytes
                refusal = (413, "payload_too_large", f"request body over the {limit}-byte limit")
        if refusal is not None:
            status, code, message = refusal
            await error_response(status, code, message)(scope, receive, exchange.send)
            return
        try:
            await self.app(scope, receive, exchange.send)
        except Exception:
            # The error handler answers 500 outside this middleware; record it first.
            if exchange.audit:
                await exchange.record(500, b"")
            raise


class PathCORS:
    """CORS for one path prefix only (the codec endpoints the Temporal UI calls)."""

    def __init__(self, app: ASGIApp, prefix: str, origins: list[str]) -> None:
        self.app = app
        self.prefix = prefix
        self.cors = CORSMiddleware(
            app,
            allow_origins=origins,
            allow_methods=["POST"],
            allow_headers=["Authorization", "Content-Type", "X-Namespace"],
            allow_credentials=True,
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefix):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def ui_origins(settings: Settings) -> list[str]:
    """The Temporal UI's origin; on a loopback host, both 127.0.0.1 and localhost."""
    parts = urlsplit(settings.temporal_ui_url)
    origin = f"{parts.scheme}://{parts.netloc}"
    host = parts.hostname or ""
    if host in ("127.0.0.1", "localhost"):
        port = f":{parts.port}" if parts.port else ""
        return [f"{parts.scheme}://127.0.0.1{port}", f"{parts.scheme}://localhost{port}"]
    return [origin]


def install_security(app: FastAPI, settings: Settings) -> None:
    """Attach the security context, CORS for the codec, the middleware and the error docs."""
    app.state.security = SecurityContext.from_settings(settings)
    app.add_middleware(PathCORS, prefix=CODEC_PREFIX, origins=ui_origins(settings))
    # Added last, so it wraps everything else: every answer carries the request id.
    app.add_middleware(SecurityMiddleware, max_body_bytes=settings.max_request_body_bytes)
    document_error_responses(app)
