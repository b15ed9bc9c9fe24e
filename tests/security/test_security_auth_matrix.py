"""Every route, every kind of token: 401, 403 or let through, as the role matrix says.

Routes come from app.routes, so a new route is covered (and a route that forgot its
permission check fails `test_every_route_declares_a_permission`). The API runs with RS256
pinned, so HS256 signed with the RSA public key (algorithm confusion) is one of the cells.
Temporal is unreachable (127.0.0.1:1): a route that needs it answers 503 after auth passed,
which counts as let through.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import TEST_KEYS, reset_store
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from security_support import (
    BASE,
    alg_none_token,
    bearer,
    claims,
    hmac_token,
    rs256_token,
    rsa_key_pair,
    security_settings,
    tampered,
)
from sqlalchemy import Engine

from api.app import create_app
from api.auth import ROLE_PERMISSIONS, Permission, Role
from api.deps import required_permission
from switchyard.settings import Settings

# Routes anyone may call; everything else must declare a permission.
PUBLIC = {("GET", f"{BASE}/health")}
PATH_VALUES = {
    "service": "stripe",
    "workflow_id": "recovery:stripe:matrix",
    "node_id": "stripe_primary_us_east",
}
BAD_TOKENS = [
    "no_token",
    "expired",
    "wrong_audience",
    "wrong_issuer",
    "alg_none",
    "hs_rs_confusion",
    "tampered_signature",
]
CELLS = BAD_TOKENS + [f"role_{role.value}" for role in Role]


def _permission_of(route: APIRoute) -> Permission | None:
    pending = list(route.dependant.dependencies)
    while pending:
        dependency = pending.pop()
        if dependency.call is not None and (found := required_permission(dependency.call)):
            return found
        pending.extend(dependency.dependencies)
    return None


def _operations() -> list[tuple[str, str, Permission | None]]:
    settings = Settings(jwt_secret="x" * 40, encryption_keys=TEST_KEYS, database_url="sqlite://")
    app = create_app(settings, prepare=False)
    # FastAPI includes routers lazily: iter_route_contexts gives each route's full path.
    return sorted(
        (method, str(context.path), _permission_of(context.route))
        for context in iter_route_contexts(app.routes)
        if isinstance(context.route, APIRoute)
        for method in context.methods or ()
    )


OPERATIONS = _operations()


def _url(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES.get(m.group(1), "matrix"), path)


class Tokens:
    """Tokens for every cell, signed with the test's RSA key (or deliberately not)."""

    def __init__(self, private: rsa.RSAPrivateKey, public_pem: bytes) -> None:
        self.private = private
        self.public_pem = public_pem

    def headers(self, cell: str) -> dict[str, str]:
        """The Authorization header a cell sends (none for no_token)."""
        sign = self.private
        now = int(time.time())
        tokens = {
            "expired": lambda: rs256_token(sign, claims(iat=now - 7200, exp=now - 3600)),
            "wrong_audience": lambda: rs256_token(sign, claims(aud="someone-else")),
            "wrong_issuer": lambda: rs256_token(sign, claims(iss="https://evil.example")),
            "alg_none": lambda: alg_none_token(claims(roles=["admin"])),
            "hs_rs_confusion": lambda: hmac_token(self.public_pem, claims(roles=["admin"])),
            "tampered_signature": lambda: tampered(
                rs256_token(sign, claims(roles=["viewer"])), roles=["admin"]
            ),
        }
        if cell == "no_token":
            return {}
        if cell.startswith("role_"):
            role = cell.removeprefix("role_")
            return bearer(rs256_token(sign, claims(sub=f"matrix-{role}", roles=[role])))
        return bearer(tokens[cell]())


@pytest.fixture(scope="module")
def keys() -> Tokens:
    """A fresh RSA key pair for the module."""
    return Tokens(*rsa_key_pair())


@pytest.fixture(scope="module")
def rs256_api(
    engine: Engine, database_url: str, keys: Tokens, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    """The API with RS256 pinned to the test's public key; Temporal unreachable."""
    reset_store(engine)
    home = tmp_path_factory.mktemp("matrix")
    public_key_file = Path(home / "jwt.pem")
    public_key_file.write_bytes(keys.public_pem)
    settings = security_settings(
        database_url,
        home,
        jwt_algorithm="RS256",
        jwt_public_key_file=public_key_file,
        jwt_secret="",
    )
    with TestClient(create_app(settings, prepare=False)) as client:
        yield client


def test_every_route_declares_a_permission() -> None:
    unguarded = [(m, p) for m, p, perm in OPERATIONS if perm is None and (m, p) not in PUBLIC]
    assert unguarded == [], "routes without require(...) and not listed as PUBLIC"
    assert len(OPERATIONS) >= 15


def _expected(cell: str, permission: Permission | None) -> str:
    if permission is None:
        return "through"
    if cell in BAD_TOKENS:
        return "401"
    role = Role(cell.removeprefix("role_"))
    return "through" if permission in ROLE_PERMISSIONS[role] else "403"


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize(
    ("method", "path", "permission"),
    OPERATIONS,
    ids=[f"{m} {p.removeprefix(BASE)}" for m, p, _ in OPERATIONS],
)
def test_auth_matrix(
    rs256_api: TestClient,
    keys: Tokens,
    method: str,
    path: str,
    permission: Permission | None,
    cell: str,
) -> None:
    body: dict[str, object] | None = {} if method in ("POST", "PUT", "PATCH") else None
    response = rs256_api.request(method, _url(path), json=body, headers=keys.headers(cell))
    expected = _expected(cell, permission)
    status = response.status_code
    assert response.json()["success"] is not None, response.text  # always the envelope
    if expected == "401":
        assert status == 401, response.text
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.json()["error"]["message"]  # says why
        assert "WWW-Authenticate" in response.headers
    elif expected == "403":
        assert status == 403, response.text
        assert response.json()["error"]["code"] == "forbidden"
    else:
        assert status not in (401, 403), response.text
        assert status != 500, response.text
