"""Temporal payload encryption: workflow inputs, results and failures are ciphertext in history.

Each payload is serialised and sealed with AES-256-GCM under the current key of the same
keyring as the store (`SWITCHYARD_ENCRYPTION_KEYS`); the key id travels in the payload's
metadata, so payloads sealed before a rotation still decode while their key is configured.
Payloads without the encrypted encoding (histories from before encryption) pass through.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)

from store.crypto import DecryptionError, Keyring

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
# Binds the ciphertext to its use: a sealed column value is no Temporal payload.
ASSOCIATED_DATA = b"switchyard:temporal-payload:v1"


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over whole payloads, key id in metadata."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Seal every payload with the current key."""
        return [self.encode_one(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Open sealed payloads; others (plain, from before encryption) pass through."""
        return [self.decode_one(p) for p in payloads]

    def encode_one(self, payload: Payload) -> Payload:
        """One payload sealed."""
        kid, blob = self.keyring.encrypt(payload.SerializeToString(), ASSOCIATED_DATA)
        return Payload(metadata={"encoding": ENCODING, KEY_ID: kid.encode()}, data=blob)

    def decode_one(self, payload: Payload) -> Payload:
        """One payload opened; DecryptionError when its key is unknown or it was altered."""
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        kid = payload.metadata.get(KEY_ID, b"").decode(errors="replace")
        plaintext = self.keyring.decrypt(kid, payload.data, ASSOCIATED_DATA)
        decoded = Payload()
        try:
            decoded.ParseFromString(plaintext)
        except Exception as exc:  # protobuf's DecodeError: not a payload after all
            raise DecryptionError("decrypted payload is not a Temporal payload") from exc
        return decoded


def encrypted_data_converter(keyring: Keyring) -> DataConverter:
    """The pydantic data converter with payloads and failure messages encrypted."""
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=EncryptionCodec(keyring),
        # Failure messages and stack traces can quote inputs: move them into the payload.
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
