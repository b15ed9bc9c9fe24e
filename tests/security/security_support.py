"""Shared pieces of the security tests: settings, keys, and hand-made (hostile) tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from conftest import ROOT, TEST_KEYS, TEST_SECRET
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from switchyard.settings import Environment, Settings

BASE = "/api/v1/enhanced-traffic-coordination"
AUDIENCE = ISSUER = "switchyard"


def security_settings(database_url: str, home: Path, **overrides: object) -> Settings:
    """Test settings like conftest's make_settings, for fixtures wider than one test."""
    values: dict[str, object] = {
        "env": Environment.test,
        "home": home,
        "database_url": database_url,
        "jwt_secret": TEST_SECRET,
        "encryption_keys": TEST_KEYS,
        "catalog_path": ROOT / "providers.yaml",
        "temporal_task_queue": f"switchyard-security-{uuid.uuid4().hex[:8]}",
        "temporal_address": "127.0.0.1:1",  # nothing listens: Temporal routes answer 503 fast
        "snapshot_poll_seconds": 0.05,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def new_key(kid: str) -> str:
    """A fresh `kid:base64key` AES-256 key."""
    return f"{kid}:{base64.b64encode(secrets.token_bytes(32)).decode()}"


def rsa_key_pair() -> tuple[rsa.RSAPrivateKey, bytes]:
    """A private key and its public key as PEM."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public_pem


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims for the test audience and issuer (roles: viewer), with overrides."""
    now = int(time.time())
    values: dict[str, Any] = {
        "sub": "security-test",
        "roles": ["viewer"],
        "iat": now,
        "exp": now + 600,
        "aud": AUDIENCE,
        "iss": ISSUER,
    }
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def b64url(raw: bytes) -> str:
    """Unpadded base64url, as in JWTs."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _segment(document: dict[str, Any]) -> str:
    return b64url(json.dumps(document, separators=(",", ":")).encode())


def alg_none_token(payload: dict[str, Any]) -> str:
    """An unsigned token claiming `alg: none`."""
    return f"{_segment({'alg': 'none', 'typ': 'JWT'})}.{_segment(payload)}."


def hmac_token(secret: bytes, payload: dict[str, Any], alg: str = "HS256") -> str:
    """An HMAC-signed token, made by hand so any bytes (even a PEM public key) can be the key."""
    signing_input = f"{_segment({'alg': alg, 'typ': 'JWT'})}.{_segment(payload)}"
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    signature = hmac.new(secret, signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64url(signature)}"


def tampered(token: str, **changes: Any) -> str:
    """The token with its payload edited and the original signature kept."""
    header, payload, signature = token.split(".")
    document = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    document.update(changes)
    return f"{header}.{_segment(document)}.{signature}"


def rs256_token(private: rsa.RSAPrivateKey, payload: dict[str, Any], **headers: Any) -> str:
    """A token signed with the RSA private key."""
    return jwt.encode(payload, private, algorithm="RS256", headers=headers or None)


def bearer(token: str) -> dict[str, str]:
    """Authorization header for a token."""
    return {"Authorization": f"Bearer {token}"}
