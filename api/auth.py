"""JWT authentication and the role matrix."""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization

from switchyard.settings import Settings


class Role(StrEnum):
    """Roles carried in a token's `roles` claim."""

    viewer = "viewer"
    operator = "operator"
    incident_commander = "incident_commander"
    admin = "admin"


class Permission(StrEnum):
    """What a route needs."""

    read = "read"  # GET endpoints and events
    operate = "operate"  # execute-coordination, outcomes, backend-agent-error, recovery updates
    command = "command"  # emergency override, extend, cancel, breaker force
    administer = "administer"  # the audit log; admin only


# The role matrix, in one place.
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.viewer: frozenset({Permission.read}),
    Role.operator: frozenset({Permission.read, Permission.operate}),
    Role.incident_commander: frozenset({Permission.read, Permission.command}),
    Role.admin: frozenset(Permission),
}


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller."""

    subject: str
    roles: frozenset[Role]

    def can(self, permission: Permission) -> bool:
        """True when one of the roles grants the permission."""
        return any(permission in ROLE_PERMISSIONS[role] for role in self.roles)

    @property
    def primary_role(self) -> str:
        """The most powerful role, for audit records."""
        order = [Role.admin, Role.incident_commander, Role.operator, Role.viewer]
        return next((r.value for r in order if r in self.roles), "none")


class AuthError(Exception):
    """The token is missing or invalid; the message says why."""


class AuthConfigError(RuntimeError):
    """The JWT settings cannot verify tokens (unknown algorithm, missing key)."""


HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
)
REQUIRED_CLAIMS = ["exp", "iat", "sub", "aud", "iss"]
# Verified tokens remembered per process: how many, and for how long at most.
CACHE_SIZE = 10_000
CACHE_SECONDS = 300.0


def _pinned_algorithm(settings: Settings) -> str:
    algorithm = settings.jwt_algorithm.upper()
    if algorithm not in HMAC_ALGORITHMS | ASYMMETRIC_ALGORITHMS:
        allowed = ", ".join(sorted(HMAC_ALGORITHMS | ASYMMETRIC_ALGORITHMS))
        raise AuthConfigError(f"SWITCHYARD_JWT_ALGORITHM={algorithm!r} is not one of {allowed}")
    return algorithm


class TokenVerifier:
    """Verifies bearer tokens with the one pinned algorithm and its key, loaded once."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.algorithm = _pinned_algorithm(settings)
        self._key: Any = None
        self._jwks: jwt.PyJWKSet | None = None
        self._verified: dict[str, tuple[Principal, float]] = {}
        if self.algorithm in HMAC_ALGORITHMS:
            if not settings.jwt_secret:
                raise AuthConfigError(f"{self.algorithm} needs SWITCHYARD_JWT_SECRET")
            self._key = settings.jwt_secret
        elif settings.jwt_jwks_file is not None:
            self._jwks = jwt.PyJWKSet.from_json(Path(settings.jwt_jwks_file).read_text())
        elif settings.jwt_public_key_file is not None:
            pem = Path(settings.jwt_public_key_file).read_bytes()
            self._key = serialization.load_pem_public_key(pem)
        else:
            raise AuthConfigError(
                f"{self.algorithm} needs SWITCHYARD_JWT_PUBLIC_KEY_FILE or SWITCHYARD_JWT_JWKS_FILE"
            )

    def _key_for(self, token: str) -> Any:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid token: {exc}") from exc
        # Checked before choosing a key; jwt.decode checks it again with the key.
        if header.get("alg") != self.algorithm:
            raise AuthError(f"token algorithm not accepted (only {self.algorithm})")
        if self._jwks is None:
            return self._key
        kid = header.get("kid")
        keys = self._jwks.keys
        if kid is None and len(keys) == 1:
            return keys[0].key
        for key in keys:
            if key.key_id == kid:
                return key.key
        raise AuthError(f"token key id {kid!r} is not in the JWKS")

    def verify(self, token: str) -> Principal:
        """The principal of a valid token; AuthError naming what is wrong otherwise.

        A token that verified is remembered until it expires (at most CACHE_SECONDS), so a
        client sending the same token on every request pays for the signature check once.
        """
        remembered = self._verified.get(token)
        if remembered is not None and remembered[1] > time.time():
            return remembered[0]
        principal, expires = self._verify(token)
        if len(self._verified) >= CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = (principal, min(expires, time.time() + CACHE_SECONDS))
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        settings = self.settings
        try:
            claims = jwt.decode(
                token,
                self._key_for(token),
                # Exactly the pinned algorithm: `none` and HS/RS confusion are refused here.
                algorithms=[self.algorithm],
                audience=settings.jwt_audience,
                issuer=settings.jwt_issuer,
                leeway=settings.jwt_leeway_seconds,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("token expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise AuthError("token audience not accepted") from exc
        except jwt.InvalidIssuerError as exc:
            raise AuthError("token issuer not accepted") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"token lacks the {exc.claim!r} claim") from exc
        except jwt.InvalidAlgorithmError as exc:
            raise AuthError(f"token algorithm not accepted (only {self.algorithm})") from exc
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid token: {exc}") from exc
        raw_roles = claims.get("roles", [])
        if not isinstance(raw_roles, list):
            raise AuthError("token 'roles' claim must be a list")
        roles = frozenset(Role(r) for r in raw_roles if r in Role.__members__)
        return Principal(subject=str(claims["sub"]), roles=roles), float(claims["exp"])


def issue_token(settings: Settings, *, subject: str, roles: list[Role], ttl: int) -> str:
    """Sign a token the local API accepts (HS* only: RS*/ES* tokens come from your issuer)."""
    algorithm = _pinned_algorithm(settings)
    if algorithm not in HMAC_ALGORITHMS:
        raise AuthConfigError(
            f"switchyard token signs HS* tokens only; with {algorithm} your identity provider "
            "issues them"
        )
    now = int(time.time())
    claims = {
        "sub": subject,
        "roles": [r.value for r in roles],
        "iat": now,
        "exp": now + ttl,
        "aud": settings.jwt_audience,
        "iss": settings.jwt_issuer,
    }
    return jwt.encode(claims, settings.jwt_secret, algorithm=algorithm)


def verify_token(settings: Settings, token: str) -> Principal:
    """Verify one token with the settings (builds a TokenVerifier; the API keeps one)."""
    return TokenVerifier(settings).verify(token)
