"""Application settings: one class, read from `SWITCHYARD_*` environment variables."""

from __future__ import annotations

import base64
import os
import secrets
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Environment(StrEnum):
    """Where Switchyard runs: development generates missing secrets, production refuses them."""

    development = "development"
    test = "test"
    production = "production"


class SecretsError(RuntimeError):
    """A secret is missing where it must be supplied (production)."""


class Settings(BaseSettings):
    """Every setting Switchyard reads. Defaults suit `make run` on one machine."""

    model_config = SettingsConfigDict(env_prefix="SWITCHYARD_", env_file=".env", extra="ignore")

    env: Environment = Environment.development
    home: Path = Field(default=Path(".switchyard"), description="Local state directory.")

    database_url: str = Field(
        default="", description="SQLAlchemy URL; empty means a SQLite file under `home`."
    )
    db_pool_size: int = 10

    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_task_queue: str = "switchyard"
    temporal_ui_url: str = "http://127.0.0.1:8233"
    temporal_ui_port: int = Field(default=8233, description="UI port of `switchyard dev`.")

    api_host: str = "0.0.0.0"
    api_port: int = 3000

    catalog_path: Path = Path("providers.yaml")
    snapshot_poll_seconds: float = Field(
        default=0.5, description="SQLite snapshot refresh interval (PostgreSQL uses NOTIFY)."
    )

    recovery_check_interval_seconds: float = Field(default=30.0, gt=0)
    recovery_healthy_checks: int = Field(default=2, ge=1)
    recovery_max_monitoring_minutes: float = Field(default=120.0, gt=0)
    recovery_stage_hold_seconds: float | None = Field(
        default=None, gt=0, description="Override the plan's hold per restore stage."
    )
    recovery_monitoring_seconds: float | None = Field(
        default=None, gt=0, description="Override the plan's minimum monitoring window."
    )

    # Cross-stream incidents and cascade protection (docs/INCIDENTS.md).
    incident_correlation_minutes: float = Field(
        default=30.0, gt=0, description="An incident takes new errors this long after its last."
    )
    incident_poll_seconds: float = Field(
        default=30.0, gt=0, description="How often an incident looks at its member recoveries."
    )
    incident_retries_per_request: int = Field(
        default=2, ge=0, description="Retries a request may take in an incident's blast radius."
    )
    incident_retry_ratio: float = Field(
        default=0.2, ge=0, description="A protected service's retries per first attempt."
    )
    incident_retry_window_seconds: float = Field(default=60.0, gt=0)
    incident_min_retries: int = Field(
        default=10, ge=0, description="Retries a protected service may always take per window."
    )
    incident_reserved_share: float = Field(
        default=0.3,
        ge=0,
        le=1,
        description="Last share of a protected service's budget kept for CRITICAL/HIGH requests.",
    )

    # Business context of execute-coordination (docs/ROUTING.md, Business context).
    escalation_revenue_impact: float = Field(
        default=10_000.0,
        ge=0,
        description="businessContext.revenueImpact from which a request is routed as CRITICAL.",
    )

    # Monitoring: health window, circuit breakers, failure prediction (docs/MONITORING.md).
    health_window_size: int = Field(default=100, ge=1, le=10_000)
    health_window_seconds: float = Field(default=300.0, gt=0)
    health_prior_weight: float = Field(default=20.0, ge=0)
    health_sweep_interval_seconds: float = Field(default=10.0, ge=1)
    breaker_failure_rate_threshold: float = Field(default=25.0, gt=0, le=100)
    breaker_minimum_calls: int = Field(default=20, ge=1)
    breaker_consecutive_failures: int = Field(default=5, ge=1)
    breaker_slow_call_rate_threshold: float = Field(default=50.0, gt=0, le=100)
    breaker_base_break_seconds: float = Field(default=30.0, gt=0)
    breaker_max_break_seconds: float = Field(default=300.0, gt=0)
    breaker_half_open_calls: int = Field(default=3, ge=1)
    prediction_threshold: float = Field(default=0.8, gt=0, le=1)
    prediction_horizon_seconds: float = Field(default=60.0, gt=0)
    prediction_half_life_seconds: float = Field(default=60.0, gt=0)

    jwt_secret: str = Field(default="", description="HS256 signing secret; generated in dev.")
    jwt_algorithm: str = Field(
        default="HS256",
        description="The one algorithm accepted: HS256/384/512, RS256/384/512, "
        "ES256/384/512 (docs/SECURITY.md).",
    )
    jwt_public_key_file: Path | None = Field(
        default=None, description="PEM public key verifying RS*/ES* tokens."
    )
    jwt_jwks_file: Path | None = Field(
        default=None, description="JWKS file verifying RS*/ES* tokens (key chosen by `kid`)."
    )
    jwt_audience: str = "switchyard"
    jwt_issuer: str = "switchyard"
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=300)
    jwt_default_ttl_seconds: int = 3600

    encryption_keys: str = Field(
        default="", description="Comma-separated `kid:base64key` AES-256 keys, first is current."
    )

    # Hostile-input limits (docs/SECURITY.md).
    rate_limit_enabled: bool = True
    rate_limit_storage: str = Field(
        default="memory://", description="`memory://` (per process) or `redis://host:port`."
    )
    rate_limit_strategy: str = Field(
        default="fixed-window", description="fixed-window, moving-window, sliding-window-counter"
    )
    # Per principal and route class; sizes and reasons in docs/SECURITY.md.
    rate_limit_decide: str = Field(
        default="2000/second",
        description="execute-coordination: a busy service's decisions, twice 1,000/s of bursts.",
    )
    rate_limit_ingest: str = Field(
        default="12000/minute",
        description="POST outcomes: 200 batches/s, 20,000 outcomes/s in batches of 100.",
    )
    rate_limit_read: str = Field(default="1200/minute", description="GET: 20 a second.")
    rate_limit_control: str = Field(
        default="120/minute",
        # SWITCHYARD_RATE_LIMIT_WRITE, the old name, limited every non-GET request: it now
        # limits what it is still about, the control plane (decisions have their own class).
        validation_alias=AliasChoices(
            "rate_limit_control", "SWITCHYARD_RATE_LIMIT_CONTROL", "SWITCHYARD_RATE_LIMIT_WRITE"
        ),
        description="Other writes (errors, emergencies, breakers, recoveries): 2 a second.",
    )
    max_request_body_bytes: int = Field(default=1_048_576, ge=1024)
    events_compression: bool = Field(
        default=False,
        description="Offer permessage-deflate on the events WebSocket (docs/EVENTS.md).",
    )

    # Operations: logs, metrics, traces, shutdown (docs/OPERATIONS.md).
    log_format: Literal["json", "console"] = Field(
        default="json", description="One JSON object a line, or `console` for people."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    access_log: bool = Field(default=True, description="One log line per HTTP request.")
    metrics_require_token: bool = Field(
        default=False, description="GET /metrics needs a viewer token (scrapers send one)."
    )
    worker_metrics_address: str = Field(
        default="",
        description="host:port where the worker serves the Temporal SDK's Prometheus metrics; "
        "empty turns them off.",
    )
    otlp_endpoint: str = Field(
        default="",
        description="OTLP/HTTP collector, e.g. http://otel-collector:4318; empty turns "
        "tracing off.",
    )
    shutdown_grace_seconds: int = Field(
        default=10,
        ge=1,
        description="On SIGTERM: how long the API drains requests and the worker lets "
        "running activities finish.",
    )

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.home / 'switchyard.db').as_posix()}"
        return self

    @property
    def is_sqlite(self) -> bool:
        """True when the store is the embedded SQLite file."""
        return self.database_url.startswith("sqlite")

    def with_secrets(self) -> Settings:
        """Return settings whose secrets are set: generated once in development, else refused."""
        generators = _secret_generators()
        missing = {name: gen for name, gen in generators.items() if not getattr(self, name)}
        if not self.jwt_algorithm.upper().startswith("HS"):
            missing.pop("jwt_secret", None)  # RS*/ES* tokens are verified with a public key
        if not missing:
            return self
        if self.env is Environment.production:
            names = ", ".join(f"SWITCHYARD_{n.upper()}" for n in missing)
            raise SecretsError(
                f"{names} must be set when SWITCHYARD_ENV=production; generated secrets are "
                "only for development"
            )
        values: dict[str, Any] = {}
        for name, generate in missing.items():
            values[name] = _stored_secret(self.home, name, generate)
        return self.model_copy(update=values)


def _secret_generators() -> dict[str, Any]:
    return {
        "jwt_secret": lambda: secrets.token_urlsafe(48),
        "encryption_keys": lambda: "k1:" + _b64(secrets.token_bytes(32)),
    }


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _stored_secret(home: Path, name: str, generate: Any) -> str:
    """Read a generated dev secret from `home/secrets/`, creating it (mode 0600) once."""
    directory = home / "secrets"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    if path.exists():
        return path.read_text().strip()
    value = str(generate())
    # O_EXCL so two processes starting together agree on one value.
    try:
        fd = _create_exclusive(path)
    except FileExistsError:
        return path.read_text().strip()
    with open(fd, "w") as handle:
        handle.write(value)
    return value


def _create_exclusive(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, with secrets resolved."""
    return Settings().with_secrets()
