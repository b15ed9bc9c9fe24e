"""Request and response models of the catalog admin endpoints (docs/ROUTING.md, Live catalog).

A catalog travels in the format of providers.yaml (store.catalog.CatalogSpec): the file, the
API and `switchyard catalog export` all speak it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import Field

from api.schemas.common import ResponseModel, WireModel
from store.catalog import REGION_PATTERN, TAG_PATTERN, CatalogSpec, NodeSpec

Tag = Annotated[str, Field(min_length=1, max_length=32, pattern=TAG_PATTERN)]


class CatalogView(ResponseModel):
    """The live catalog and the revision it is at."""

    revision: int
    created_at: datetime
    author: str
    summary: str
    catalog: CatalogSpec


class CatalogChangeView(ResponseModel):
    """What a change did: the revision it made (the current one if nothing changed)."""

    revision: int
    created_at: datetime
    author: str
    summary: str
    changes: list[str]


class NewProvider(WireModel):
    """Body of POST providers: a node added to a service."""

    service_name: str = Field(min_length=1, max_length=64)
    node: NodeSpec
    summary: str = Field(default="", max_length=500)


class ProviderPatch(WireModel):
    """Body of PATCH providers/{nodeId}: the fields to change, the others stay."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    region: str | None = Field(default=None, min_length=1, max_length=64, pattern=REGION_PATTERN)
    success_rate: float | None = Field(default=None, ge=0, le=100)
    cost_per_request: float | None = Field(default=None, ge=0)
    latency_ms: float | None = Field(default=None, gt=0)
    health_score: float | None = Field(default=None, ge=0, le=100)
    emergency_only: bool | None = None
    enabled: bool | None = None
    latency_slo_ms: float | None = Field(default=None, gt=0)
    error_rate_slo: float | None = Field(default=None, gt=0, le=100)
    tags: list[Tag] | None = Field(default=None, max_length=32)
    operations: list[str] | None = Field(default=None, min_length=1, max_length=100)
    weight: float | None = Field(default=None, ge=0, le=1_000_000)
    summary: str = Field(default="", max_length=500)

    def fields(self) -> dict[str, Any]:
        """The set fields, named as in the catalog (camelCase)."""
        return self.model_dump(by_alias=True, exclude_unset=True, exclude={"summary"})
