"""The Temporal payload codec and the remote codec endpoints the Temporal UI calls."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import TEST_KEYS
from fastapi.testclient import TestClient
from security_support import new_key
from sqlalchemy import Engine
from temporalio.api.common.v1 import Payload
from temporalio.converter import DefaultFailureConverterWithEncodedAttributes

from api.app import create_app
from api.auth import Role
from store.crypto import DecryptionError, Keyring
from switchyard.settings import Environment, Settings
from temporal_client.codec import ENCODING, KEY_ID, EncryptionCodec, encrypted_data_converter

Auth = Callable[..., dict[str, str]]
UI = "http://127.0.0.1:8233"
PLAIN = Payload(metadata={"encoding": b"json/plain"}, data=b'{"errorMessage":"secret text"}')


def _wire(payload: Payload) -> dict[str, Any]:
    return {
        "metadata": {k: base64.b64encode(v).decode() for k, v in payload.metadata.items()},
        "data": base64.b64encode(payload.data).decode(),
    }


def _payload(wire: dict[str, Any]) -> Payload:
    metadata = {k: base64.b64decode(v) for k, v in wire["metadata"].items()}
    return Payload(metadata=metadata, data=base64.b64decode(wire["data"]))


async def test_codec_round_trip_with_the_key_id_in_metadata() -> None:
    codec = EncryptionCodec(Keyring.parse(TEST_KEYS))
    [sealed] = await codec.encode([PLAIN])
    assert sealed.metadata["encoding"] == ENCODING and sealed.metadata[KEY_ID] == b"t1"
    assert b"secret text" not in sealed.SerializeToString()
    assert await codec.decode([sealed]) == [PLAIN]
    assert await codec.decode([PLAIN]) == [PLAIN]  # histories from before encryption


async def test_codec_keys_rotate_and_a_wrong_key_fails_loudly() -> None:
    old = Keyring.parse(TEST_KEYS)
    [sealed] = await EncryptionCodec(old).encode([PLAIN])
    rotated = EncryptionCodec(Keyring.parse(f"{new_key('t2')},{TEST_KEYS}"))
    assert await rotated.decode([sealed]) == [PLAIN]
    [resealed] = await rotated.encode([PLAIN])
    assert resealed.metadata[KEY_ID] == b"t2"
    with pytest.raises(DecryptionError, match="not configured"):
        await EncryptionCodec(old).decode([resealed])
    impostor = EncryptionCodec(Keyring.parse(new_key("t1")))
    with pytest.raises(DecryptionError, match="authentication failed"):
        await impostor.decode([sealed])
    tampered = Payload()
    tampered.CopyFrom(sealed)
    tampered.data = sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
    with pytest.raises(DecryptionError):
        await EncryptionCodec(old).decode([tampered])


def test_failure_messages_are_encoded_too() -> None:
    converter = encrypted_data_converter(Keyring.parse(TEST_KEYS))
    assert isinstance(converter.failure_converter, DefaultFailureConverterWithEncodedAttributes)
    assert isinstance(converter.payload_codec, EncryptionCodec)


def test_decode_for_viewers_encode_for_operators(api_client: TestClient, auth: Auth) -> None:
    encoded = api_client.post(
        "/codec/encode", json={"payloads": [_wire(PLAIN)]}, headers=auth(Role.operator)
    )
    assert encoded.status_code == 200, encoded.text
    [sealed] = encoded.json()["payloads"]
    assert _payload(sealed).metadata["encoding"] == ENCODING
    decoded = api_client.post(
        "/codec/decode", json={"payloads": [sealed, _wire(PLAIN)]}, headers=auth(Role.viewer)
    )
    assert decoded.status_code == 200, decoded.text
    assert [_payload(p) for p in decoded.json()["payloads"]] == [PLAIN, PLAIN]

    refused = api_client.post("/codec/encode", json={"payloads": []}, headers=auth(Role.viewer))
    assert refused.status_code == 403
    anonymous = api_client.post("/codec/decode", json={"payloads": [sealed]})
    assert anonymous.status_code == 401


def test_bad_payloads_are_422_never_500(api_client: TestClient, auth: Auth) -> None:
    viewer = auth(Role.viewer)
    not_b64 = api_client.post(
        "/codec/decode", json={"payloads": [{"metadata": {}, "data": "***"}]}, headers=viewer
    )
    assert not_b64.status_code == 422
    assert not_b64.json()["error"]["details"][0]["field"] == "payloads.0"
    forged = _wire(Payload(metadata={"encoding": ENCODING, KEY_ID: b"t1"}, data=b"x" * 40))
    undecryptable = api_client.post("/codec/decode", json={"payloads": [forged]}, headers=viewer)
    assert undecryptable.status_code == 422
    assert undecryptable.json()["error"]["code"] == "undecryptable_payload"


def test_cors_only_for_the_ui_origin_and_only_on_the_codec(api_client: TestClient) -> None:
    preflight = {
        "Origin": UI,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,x-namespace",
    }
    allowed = api_client.options("/codec/decode", headers=preflight)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == UI
    localhost = api_client.options(
        "/codec/decode", headers={**preflight, "Origin": "http://localhost:8233"}
    )
    assert localhost.headers["access-control-allow-origin"] == "http://localhost:8233"
    foreign = api_client.options(
        "/codec/decode", headers={**preflight, "Origin": "https://evil.example"}
    )
    assert "access-control-allow-origin" not in foreign.headers
    elsewhere = api_client.options(
        "/api/v1/enhanced-traffic-coordination/execute-coordination", headers=preflight
    )
    assert "access-control-allow-origin" not in elsewhere.headers


@pytest.fixture
def dev_app(clean_store: Engine, make_settings: Callable[..., Settings]) -> Iterator[Any]:
    """An app in the development environment (the local-UI allowance applies)."""
    yield create_app(make_settings(env=Environment.development), prepare=False)


def test_development_ui_on_loopback_decodes_without_a_token(dev_app: Any) -> None:
    body = {"payloads": [_wire(PLAIN)]}
    with TestClient(dev_app, client=("127.0.0.1", 50000)) as local:
        assert local.post("/codec/decode", json=body, headers={"Origin": UI}).status_code == 200
        assert local.post("/codec/decode", json=body).status_code == 401  # not the UI
        assert local.post("/codec/encode", json=body, headers={"Origin": UI}).status_code == 401
    with TestClient(dev_app, client=("10.1.2.3", 50000)) as remote:
        assert remote.post("/codec/decode", json=body, headers={"Origin": UI}).status_code == 401


def test_outside_development_the_ui_needs_a_token(api_client: TestClient) -> None:
    body = {"payloads": [_wire(PLAIN)]}
    response = api_client.post("/codec/decode", json=body, headers={"Origin": UI})
    assert response.status_code == 401
