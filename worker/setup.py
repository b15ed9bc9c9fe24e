"""Idempotent start-up registration of what the workflows need on the Temporal server."""

from __future__ import annotations

import logging

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from workflows.search import SEARCH_ATTRIBUTES

log = logging.getLogger("switchyard.worker")
KEYWORD = IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD


async def ensure_search_attributes(client: Client, namespace: str) -> None:
    """Add the typed search attributes the workflows set, when the namespace lacks them."""
    try:
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
        existing = set(listed.custom_attributes)
    except RPCError as exc:
        # The time-skipping test server can add attributes but not list them.
        if exc.status != RPCStatusCode.UNIMPLEMENTED:
            raise
        existing = set()
    for key in SEARCH_ATTRIBUTES:
        if key.name in existing:
            continue
        try:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(
                    namespace=namespace, search_attributes={key.name: KEYWORD}
                )
            )
            log.info("registered search attribute %s", key.name)
        except RPCError as exc:
            if exc.status != RPCStatusCode.ALREADY_EXISTS:
                raise
