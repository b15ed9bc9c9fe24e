"""Wire conventions shared by every request and response model."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

T = TypeVar("T")


class WireModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown request fields are refused."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class ResponseModel(BaseModel):
    """camelCase response model (responses tolerate extra fields from newer servers)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class Envelope(ResponseModel, Generic[T]):
    """The success envelope every endpoint answers with."""

    success: bool = True
    message: str | None = None
    data: T


class ErrorBody(ResponseModel):
    """What went wrong, machine-readable code first."""

    code: str
    message: str
    details: Any = None


class ErrorEnvelope(ResponseModel):
    """The envelope of every 4xx/5xx answer."""

    success: bool = False
    error: ErrorBody
