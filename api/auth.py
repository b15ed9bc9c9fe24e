"""JWT authentication and the role matrix."""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum

import jwt

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
    administer = "administer"  # audit log


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


def issue_token(settings: Settings, *, subject: str, roles: list[Role], ttl: int) -> str:
    """Sign a token the local API accepts."""
    now = int(time.time())
    claims = {
        "sub": subject,
        "roles": [r.value for r in roles],
        "iat": now,
        "exp": now + ttl,
        "aud": settings.jwt_audience,
        "iss": settings.jwt_issuer,
    }
    return jwt.encode(claims, settings.jwt_secret, algorithm=settings.jwt_algorithm)


def verify_token(settings: Settings, token: str) -> Principal:
    """Check signature, algorithm, exp/iat/aud/iss and roles; raise AuthError with the reason."""
    try:
        claims = jwt.decode(
            token,
            settings.jwt_secret,
            algorithms=[settings.jwt_algorithm],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            leeway=settings.jwt_leeway_seconds,
            options={"require": ["exp", "iat", "sub", "aud", "iss"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise AuthError("token expired") from exc
    except jwt.InvalidAudienceError as exc:
        raise AuthError("token audience not accepted") from exc
    except jwt.InvalidIssuerError as exc:
        raise AuthError("token issuer not accepted") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise AuthError(f"token lacks the {exc.claim!r} claim") from exc
    except jwt.InvalidTokenError as exc:
        raise AuthError(f"invalid token: {exc}") from exc
    raw_roles = claims.get("roles", [])
    if not isinstance(raw_roles, list):
        raise AuthError("token 'roles' claim must be a list")
    roles = frozenset(Role(r) for r in raw_roles if r in Role.__members__)
    return Principal(subject=str(claims["sub"]), roles=roles)
