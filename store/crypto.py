"""AES-256-GCM encryption of sensitive values, bound to where they are stored.

A value is stored as `v1:{kid}:{base64(nonce | ciphertext+tag)}`: a fresh 96-bit nonce per
value, the id of the key that sealed it, and associated data naming its table, column and
row, so a ciphertext copied to another row or column does not decrypt. The keyring is
`SWITCHYARD_ENCRYPTION_KEYS` ("kid:base64key,..."): the first key encrypts, every key
decrypts, so keys rotate (store/rotation.py re-encrypts old values).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.orm import InstrumentedAttribute

VERSION = "v1"
NONCE_BYTES = 12
KEY_BYTES = 32
_KID = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")

# Event payload fields that carry sensitive text, per event type (the outbox is at rest too).
SEALED_EVENT_FIELDS: dict[str, tuple[str, ...]] = {
    "emergency_mode_activated": ("emergencyReason", "businessJustification"),
}


class KeyringError(ValueError):
    """The configured encryption keys are missing or malformed."""


class DecryptionError(Exception):
    """A value did not decrypt: unknown key id, wrong key, tampered or not ciphertext at all."""


class Keyring:
    """AES-256-GCM keys by id; the first one encrypts, all of them decrypt."""

    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        if not keys:
            raise KeyringError("no encryption keys configured (SWITCHYARD_ENCRYPTION_KEYS)")
        self.current_kid = keys[0][0]
        self._aeads = {kid: AESGCM(key) for kid, key in keys}
        if len(self._aeads) != len(keys):
            raise KeyringError("SWITCHYARD_ENCRYPTION_KEYS names a key id twice")

    @classmethod
    def parse(cls, spec: str) -> Keyring:
        """Parse "kid:base64key,kid:base64key"; raise KeyringError saying what is wrong."""
        keys: list[tuple[str, bytes]] = []
        for position, item in enumerate(p.strip() for p in spec.split(",") if p.strip()):
            kid, sep, encoded = item.partition(":")
            if not sep or not _KID.match(kid):
                raise KeyringError(
                    f"encryption key #{position + 1}: expected `kid:base64key` with a kid of "
                    "letters, digits, `_`, `-` or `.` (at most 32)"
                )
            keys.append((kid, _decode_key(kid, encoded.strip())))
        return cls(keys)

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every configured key id, current first."""
        return tuple(self._aeads)

    def encrypt(self, plaintext: bytes, associated: bytes) -> tuple[str, bytes]:
        """Seal with the current key: (key id, nonce | ciphertext with tag)."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aeads[self.current_kid].encrypt(nonce, plaintext, associated)
        return self.current_kid, nonce + sealed

    def decrypt(self, kid: str, blob: bytes, associated: bytes) -> bytes:
        """Open a sealed blob; DecryptionError when the key is unknown or the blob was altered."""
        aead = self._aeads.get(kid)
        if aead is None:
            known = ", ".join(self._aeads)
            raise DecryptionError(f"sealed with key {kid!r}, which is not configured ({known})")
        if len(blob) < NONCE_BYTES + 16:
            raise DecryptionError("ciphertext is truncated")
        try:
            return aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], associated)
        except InvalidTag as exc:
            raise DecryptionError(
                f"authentication failed with key {kid!r}: wrong key, or the value was altered "
                "or moved from another row"
            ) from exc


def _decode_key(kid: str, encoded: str) -> bytes:
    try:
        raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4), altchars=b"-_", validate=False)
    except (binascii.Error, ValueError) as exc:
        raise KeyringError(f"encryption key {kid!r} is not base64") from exc
    if len(raw) != KEY_BYTES:
        raise KeyringError(f"encryption key {kid!r} has {len(raw)} bytes; AES-256 needs 32")
    return raw


def associated_data(table: str, column: str, row: str) -> bytes:
    """What a stored value is bound to: its table, column and row identity."""
    return f"switchyard:{table}.{column}:{row}".encode()


def key_id_of(value: str) -> str | None:
    """The key id of a sealed value, or None when the value is not in the sealed format."""
    version, sep, rest = value.partition(":")
    if version != VERSION or not sep:
        return None
    kid, sep, _ = rest.partition(":")
    return kid if sep and kid else None


class FieldCipher:
    """Encrypts and decrypts column values with the keyring, bound to table, column and row."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring

    @classmethod
    def from_keys(cls, spec: str) -> FieldCipher:
        """A cipher over the `SWITCHYARD_ENCRYPTION_KEYS` value."""
        return cls(Keyring.parse(spec))

    def encrypt(self, plaintext: str, *, table: str, column: str, row: str) -> str:
        """The stored form `v1:{kid}:{base64(nonce|ciphertext)}`."""
        kid, blob = self.keyring.encrypt(plaintext.encode(), associated_data(table, column, row))
        return f"{VERSION}:{kid}:{base64.b64encode(blob).decode()}"

    def decrypt(self, stored: str, *, table: str, column: str, row: str) -> str:
        """The plaintext of a stored value; DecryptionError for anything else."""
        kid = key_id_of(stored)
        if kid is None:
            raise DecryptionError(f"{table}.{column} of {row!r} is not an encrypted value")
        encoded = stored[len(VERSION) + len(kid) + 2 :]
        try:
            blob = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise DecryptionError(f"{table}.{column} of {row!r} is not valid base64") from exc
        associated = associated_data(table, column, row)
        try:
            return self.keyring.decrypt(kid, blob, associated).decode()
        except DecryptionError as exc:
            raise DecryptionError(f"{table}.{column} of {row!r}: {exc}") from exc

    def seal(self, attribute: InstrumentedAttribute[Any], row: str, plaintext: str) -> str:
        """Encrypt a value for a model column, e.g. seal(ErrorEvent.error_message, key, text)."""
        table, column = _where(attribute)
        return self.encrypt(plaintext, table=table, column=column, row=row)

    def open(self, attribute: InstrumentedAttribute[Any], row: str, stored: str) -> str:
        """Decrypt a model column's stored value (the inverse of seal)."""
        table, column = _where(attribute)
        return self.decrypt(stored, table=table, column=column, row=row)

    def seal_event(self, event_type: str, row: str, payload: dict[str, Any]) -> dict[str, Any]:
        """The payload with its sensitive fields (SEALED_EVENT_FIELDS) encrypted."""
        return _map_event(event_type, payload, row, self.encrypt)

    def open_event(self, event_type: str, row: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """The payload as published: sensitive fields decrypted, for event readers."""
        return _map_event(event_type, dict(payload), row, self.decrypt)


def _where(attribute: InstrumentedAttribute[Any]) -> tuple[str, str]:
    return str(attribute.class_.__tablename__), attribute.key


def _map_event(event_type: str, payload: dict[str, Any], row: str, apply: Any) -> dict[str, Any]:
    result = dict(payload)
    for field in SEALED_EVENT_FIELDS.get(event_type, ()):
        if isinstance(result.get(field), str):
            result[field] = apply(result[field], table="events", column=f"payload.{field}", row=row)
    return result
