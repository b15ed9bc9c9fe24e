"""The Temporal client every Switchyard process uses."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from switchyard.settings import Settings


async def connect(settings: Settings) -> Client:
    """Connect to Temporal with the pydantic data converter."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
    )
