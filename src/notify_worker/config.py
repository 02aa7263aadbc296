"""Settings read from the environment and validated once, at start-up.

A bad value never falls back to a default: it stops the process with an
error that names the variable, so a typo cannot hide.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(Exception):
    """A setting has a value the service cannot run with."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="NOTIFY_", extra="ignore", frozen=True, populate_by_name=True
    )

    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    data_dir: Path = Path(".notify-worker")
    max_concurrent: int = Field(default=4, ge=1, le=10_000)
    timeout_secs: float = Field(default=30.0, gt=0, le=3600)
    queue_size: int = Field(default=100, ge=1, le=1_000_000)
    max_attempts: int = Field(default=1, ge=1, le=100)
    allowed_networks: Annotated[tuple[IPNetwork, ...], NoDecode] = ()
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)

    poll_interval_secs: float = Field(default=2.0, gt=0, le=3600)
    heartbeat_secs: float = Field(default=2.0, gt=0, le=600)
    worker_stale_secs: float = Field(default=30.0, gt=0, le=86_400)
    shutdown_grace_secs: float = Field(default=10.0, ge=0, le=3600)
    max_payload_bytes: int = Field(default=256 * 1024, ge=2, le=64 * 1024 * 1024)
    response_excerpt_bytes: int = Field(default=64 * 1024, ge=0, le=16 * 1024 * 1024)
    # Below the 10 s read timeout many HTTP clients and proxies use, and well
    # inside the 15 s the stream contract promises.
    keepalive_secs: float = Field(default=5.0, gt=0, le=15)
    secret_key: str | None = Field(default=None, min_length=32)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"

    @field_validator("allowed_networks", mode="before")
    @classmethod
    def _parse_networks(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        words = [word.strip() for word in value.split(",") if word.strip()]
        try:
            return tuple(ipaddress.ip_network(word, strict=False) for word in words)
        except ValueError as exc:
            raise ValueError(f"not a list of CIDR networks: {exc}") from None

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        scheme = value.split("://", 1)[0]
        if scheme not in {"postgres", "postgresql", "postgresql+asyncpg"}:
            raise ValueError("must be a postgresql:// URL")
        return value

    @property
    def embedded_database(self) -> bool:
        return self.database_url is None


def load_settings(**overrides: object) -> Settings:
    """Read the environment; raise ConfigError naming each bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "?"
        variable = _variable_name(field)
        given = error.get("input")
        lines.append(f"{variable}={given!r}: {error['msg']}")
    return "invalid configuration: " + "; ".join(lines)


def _variable_name(field: str) -> str:
    if field in {"database_url", "DATABASE_URL"}:
        return "DATABASE_URL"
    return "NOTIFY_" + field.upper()
