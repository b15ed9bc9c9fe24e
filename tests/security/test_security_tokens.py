"""Token verification: the pinned algorithm and key, required claims, leeway, roles."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import jwt
import pytest
from conftest import TEST_KEYS, TEST_SECRET
from cryptography.hazmat.primitives.asymmetric import ec
from security_support import (
    alg_none_token,
    claims,
    hmac_token,
    rs256_token,
    rsa_key_pair,
    tampered,
)

from api.auth import AuthConfigError, AuthError, Role, TokenVerifier, issue_token, verify_token
from switchyard.settings import Environment, Settings


def _hs256() -> Settings:
    return Settings(jwt_secret=TEST_SECRET, encryption_keys=TEST_KEYS, database_url="sqlite://")


def _hs(payload: dict[str, object], alg: str = "HS256") -> str:
    return hmac_token(TEST_SECRET.encode(), payload, alg)


def test_a_valid_token_gives_its_subject_and_known_roles() -> None:
    token = _hs(claims(sub="alice", roles=["operator", "viewer", "superuser"]))
    principal = verify_token(_hs256(), token)
    assert principal.subject == "alice"
    assert principal.roles == frozenset({Role.operator, Role.viewer})
    assert principal.primary_role == "operator"


def test_issued_tokens_verify() -> None:
    settings = _hs256()
    token = issue_token(settings, subject="bob", roles=[Role.admin], ttl=60)
    assert verify_token(settings, token).roles == frozenset({Role.admin})


# Factories, not tokens: times are taken when the test runs, not when it is collected.
BAD_TOKENS: dict[str, tuple[Callable[[], str], str]] = {
    "alg_none": (lambda: alg_none_token(claims(roles=["admin"])), "algorithm not accepted"),
    "other_hmac_alg": (lambda: _hs(claims(), alg="HS512"), "algorithm not accepted"),
    "expired": (lambda: _hs(claims(exp=int(time.time()) - 31)), "token expired"),
    "issued_in_future": (lambda: _hs(claims(iat=int(time.time()) + 120)), "invalid token"),
    "audience": (lambda: _hs(claims(aud="other")), "audience not accepted"),
    "issuer": (lambda: _hs(claims(iss="other")), "issuer not accepted"),
    "roles_not_list": (lambda: _hs(claims(roles="admin")), "'roles' claim must be a list"),
    "tampered": (
        lambda: tampered(_hs(claims()), roles=["admin"]),
        "Signature verification failed",
    ),
    "other_secret": (
        lambda: hmac_token(b"another secret", claims()),
        "Signature verification failed",
    ),
    "garbage": (lambda: "not-a-jwt", "invalid token"),
}


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
def test_bad_tokens_are_refused_with_the_reason(case: str) -> None:
    make, reason = BAD_TOKENS[case]
    with pytest.raises(AuthError, match=reason):
        verify_token(_hs256(), make())


@pytest.mark.parametrize("claim", ["exp", "iat", "sub", "aud", "iss"])
def test_every_required_claim_is_required(claim: str) -> None:
    with pytest.raises(AuthError, match=f"lacks the '{claim}' claim"):
        verify_token(_hs256(), _hs(claims(**{claim: None})))


def test_small_clock_skew_is_allowed() -> None:
    now = int(time.time())
    assert verify_token(_hs256(), _hs(claims(exp=now - 10, iat=now + 10))).subject


def test_rs256_with_a_public_key_file_refuses_hs_rs_confusion(tmp_path: Path) -> None:
    private, public_pem = rsa_key_pair()
    (tmp_path / "public.pem").write_bytes(public_pem)
    settings = Settings(
        jwt_algorithm="RS256",
        jwt_public_key_file=tmp_path / "public.pem",
        encryption_keys=TEST_KEYS,
        database_url="sqlite://",
    )
    verifier = TokenVerifier(settings)
    assert verifier.verify(rs256_token(private, claims(roles=["admin"]))).roles == {Role.admin}
    with pytest.raises(AuthError, match="algorithm not accepted"):
        verifier.verify(hmac_token(public_pem, claims(roles=["admin"])))
    with pytest.raises(AuthError, match="algorithm not accepted"):
        verifier.verify(_hs(claims(roles=["admin"])))
    other, _ = rsa_key_pair()
    with pytest.raises(AuthError, match="Signature verification failed"):
        verifier.verify(rs256_token(other, claims()))
    with pytest.raises(AuthConfigError, match="HS\\* tokens only"):
        issue_token(settings, subject="x", roles=[Role.viewer], ttl=60)


def test_es256_with_a_jwks_file_picks_the_key_by_kid(tmp_path: Path) -> None:
    keys = {kid: ec.generate_private_key(ec.SECP256R1()) for kid in ("a", "b")}
    jwks = {
        "keys": [
            {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(k.public_key())), "kid": kid}
            for kid, k in keys.items()
        ]
    }
    (tmp_path / "jwks.json").write_text(json.dumps(jwks))
    settings = Settings(
        jwt_algorithm="ES256",
        jwt_jwks_file=tmp_path / "jwks.json",
        encryption_keys=TEST_KEYS,
        database_url="sqlite://",
    )
    verifier = TokenVerifier(settings)
    for kid, key in keys.items():
        token = jwt.encode(claims(sub=kid), key, algorithm="ES256", headers={"kid": kid})
        assert verifier.verify(token).subject == kid
    wrong_kid = jwt.encode(claims(), keys["a"], algorithm="ES256", headers={"kid": "b"})
    with pytest.raises(AuthError, match="Signature verification failed"):
        verifier.verify(wrong_kid)
    unknown = jwt.encode(claims(), keys["a"], algorithm="ES256", headers={"kid": "zz"})
    with pytest.raises(AuthError, match="not in the JWKS"):
        verifier.verify(unknown)
    with pytest.raises(AuthError, match="algorithm not accepted"):
        verifier.verify(alg_none_token(claims()))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"jwt_algorithm": "none"}, "is not one of"),
        ({"jwt_algorithm": "RS256"}, "needs SWITCHYARD_JWT_PUBLIC_KEY_FILE"),
        ({"jwt_secret": ""}, "needs SWITCHYARD_JWT_SECRET"),
    ],
)
def test_unusable_jwt_settings_fail_at_start_up(overrides: dict[str, str], message: str) -> None:
    values = {"jwt_secret": TEST_SECRET, "encryption_keys": TEST_KEYS, **overrides}
    with pytest.raises(AuthConfigError, match=message):
        TokenVerifier(Settings(database_url="sqlite://", **values))


def test_production_with_rs256_does_not_demand_an_hmac_secret(tmp_path: Path) -> None:
    settings = Settings(
        env=Environment.production,
        jwt_algorithm="RS256",
        jwt_public_key_file=tmp_path / "public.pem",
        encryption_keys=TEST_KEYS,
        database_url="sqlite://",
    )
    assert settings.with_secrets() is settings
