"""Idempotent start-up registration of what the workflows need on the Temporal server."""

from __future__ import annotations

import logging

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client

from workflows.search import SEARCH_ATTRIBUTES

log = logging.getLogger("switchyard.worker")


async def ensure_search_attributes(client: Client, namespace: str) -> None:
    """Add the typed search attributes the workflows set, when the namespace lacks them."""
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    missing = {
        key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
        for key in SEARCH_ATTRIBUTES
        if key.name not in listed.custom_attributes
    }
    if not missing:
        return
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
    )
    log.info("registered search attributes %s", ", ".join(sorted(missing)))
