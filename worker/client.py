"""The Temporal client every Switchyard process uses."""

from __future__ import annotations

from temporalio.client import Client

from store.crypto import Keyring
from switchyard.settings import Settings
from worker.codec import encrypted_data_converter


async def connect(settings: Settings) -> Client:
    """Connect to Temporal with the pydantic data converter and the payload encryption codec."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=encrypted_data_converter(Keyring.parse(settings.encryption_keys)),
    )
