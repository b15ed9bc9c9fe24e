"""Temporal's remote codec protocol: the Temporal UI and CLI decode payloads through the API.

POST /codec/decode and /codec/encode take and return `{"payloads": [{"metadata": {k: b64},
"data": b64}]}` (protobuf's JSON form of Payloads). Decoding needs the read permission
(viewer); encoding, which makes payloads a worker will trust, needs operate (operator).
In development only, the Temporal UI started by `switchyard dev` may decode without a token:
the request must come from this machine with the UI's Origin (docs/SECURITY.md).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from temporalio.api.common.v1 import Payload

from api.auth import Permission, Principal, Role
from api.deps import BearerDep, Operator, get_security, require, requires
from api.errors import ApiError, field_error
from api.ratelimit import RouteClass
from api.schemas.common import ErrorEnvelope
from api.security import ui_origins
from store.crypto import DecryptionError
from switchyard.settings import Environment
from temporal_client.codec import EncryptionCodec

router = APIRouter(prefix="/codec", tags=["codec"])
MAX_PAYLOADS = 1000
ERRORS = {code: {"model": ErrorEnvelope} for code in (401, 403, 422)}
# Decoding is a read, whatever its method: the Temporal UI decodes every page it shows.
_read = require(Permission.read, RouteClass.read)


class CodecPayload(BaseModel):
    """One Temporal payload: metadata values and data in base64."""

    model_config = ConfigDict(extra="ignore")

    metadata: dict[str, str] = Field(default_factory=dict, max_length=64)
    data: str = ""


class CodecPayloads(BaseModel):
    """A list of payloads, as the remote codec protocol sends and expects them."""

    model_config = ConfigDict(extra="ignore")

    payloads: list[CodecPayload] = Field(max_length=MAX_PAYLOADS)


def _from_wire(body: CodecPayloads) -> list[Payload]:
    payloads = []
    for index, item in enumerate(body.payloads):
        try:
            metadata = {k: base64.b64decode(v, validate=True) for k, v in item.metadata.items()}
            data = base64.b64decode(item.data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise field_error(
                f"payloads.{index}", "metadata values and data must be base64"
            ) from exc
        payloads.append(Payload(metadata=metadata, data=data))
    return payloads


def _to_wire(payloads: list[Payload]) -> CodecPayloads:
    return CodecPayloads(
        payloads=[
            CodecPayload(
                metadata={k: base64.b64encode(v).decode() for k, v in p.metadata.items()},
                data=base64.b64encode(p.data).decode(),
            )
            for p in payloads
        ]
    )


def _from_local_ui(request: Request) -> bool:
    """A development request from the Temporal UI on this machine."""
    settings = get_security(request).settings
    if settings.env is not Environment.development or request.client is None:
        return False
    try:
        loopback = ipaddress.ip_address(request.client.host).is_loopback
    except ValueError:
        return False
    return loopback and request.headers.get("origin") in ui_origins(settings)


@requires(Permission.read)
async def codec_reader(request: Request, credentials: BearerDep) -> Principal:
    """A viewer's token, or (development only) the local Temporal UI without one."""
    if credentials is None and _from_local_ui(request):
        principal = Principal(subject="temporal-ui (development)", roles=frozenset({Role.viewer}))
        request.state.principal = principal
        return principal
    return await _read(request, credentials)


def _codec(request: Request) -> EncryptionCodec:
    return EncryptionCodec(get_security(request).keyring)


@router.post("/decode", response_model=CodecPayloads, responses=ERRORS)  # type: ignore[arg-type]
async def decode_payloads(
    body: CodecPayloads,
    request: Request,
    _: Annotated[Principal, Depends(codec_reader)],
) -> CodecPayloads:
    """Decrypt payloads for display (payloads that are not encrypted come back unchanged)."""
    codec = _codec(request)
    try:
        decoded = await codec.decode(_from_wire(body))
    except DecryptionError as exc:
        raise ApiError(422, "undecryptable_payload", str(exc)) from exc
    return _to_wire(decoded)


@router.post("/encode", response_model=CodecPayloads, responses=ERRORS)  # type: ignore[arg-type]
async def encode_payloads(body: CodecPayloads, request: Request, _: Operator) -> CodecPayloads:
    """Encrypt payloads with the current key (for signals and updates sent from the UI)."""
    return _to_wire(await _codec(request).encode(_from_wire(body)))
