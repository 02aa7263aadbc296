"""Settings read from the environment and validated once, at start-up.

A bad value never falls back to a default: it stops the process with an
error that names the variable, so a typo cannot hide.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_RETRY_SCHEDULE = "5s,5m,30m,2h,5h,10h,10h"
DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86_400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)?")


class ConfigError(Exception):
    """A setting has a value the service cannot run with."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="NOTIFY_",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
        allow_inf_nan=False,
    )

    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    data_dir: Path = Path(".notify-worker")
    max_concurrent: int = Field(default=4, ge=1, le=10_000)
    timeout_secs: float = Field(default=30.0, gt=0, le=3600)
    queue_size: int = Field(default=100, ge=1, le=1_000_000)
    max_attempts: int = Field(default=1, ge=1, le=100)
    # Waits before the second, third, ... attempt; the last one repeats.
    retry_schedule: Annotated[tuple[float, ...], NoDecode] = Field(
        default=DEFAULT_RETRY_SCHEDULE, validate_default=True
    )
    # A target's Retry-After is honoured up to this many seconds.
    retry_after_cap_secs: float = Field(default=3600.0, ge=0, le=7 * 86_400)
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

    @field_validator("retry_schedule", mode="before")
    @classmethod
    def _parse_schedule(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        words = [word.strip() for word in value.split(",")]
        if not all(words):
            raise ValueError("a comma-separated list of durations such as 5s,5m,2h")
        return tuple(parse_duration(word) for word in words)

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        scheme = value.split("://", 1)[0]
        if scheme not in {"postgres", "postgresql", "postgresql+asyncpg"}:
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_liveness(self) -> Settings:
        # A worker that heartbeats less often than twice per stale limit
        # would be declared dead while alive, and its jobs taken from it.
        if self.worker_stale_secs < 2 * self.heartbeat_secs:
            raise ValueError(
                f"NOTIFY_WORKER_STALE_SECS ({self.worker_stale_secs:g}) must be at "
                f"least twice NOTIFY_HEARTBEAT_SECS ({self.heartbeat_secs:g})"
            )
        return self

    @property
    def embedded_database(self) -> bool:
        return self.database_url is None


def parse_duration(text: str) -> float:
    """Seconds in `500ms`, `5s`, `5m`, `2h`, `30d` or a bare number of seconds."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a duration such as 5s, 5m, 2h or 30d")
    number, unit = match.groups()
    return float(number) * DURATION_UNITS[unit or "s"]


def load_settings(**overrides: object) -> Settings:
    """Read the environment; raise ConfigError naming each bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        if not error["loc"]:
            lines.append(error["msg"].removeprefix("Value error, "))
            continue
        field = str(error["loc"][0])
        variable = _variable_name(field)
        given = error.get("input")
        lines.append(f"{variable}={given!r}: {error['msg']}")
    return "invalid configuration: " + "; ".join(lines)


def _variable_name(field: str) -> str:
    if field in {"database_url", "DATABASE_URL"}:
        return "DATABASE_URL"
    return "NOTIFY_" + field.upper()
