"""notify-worker: asynchronous webhook notifications on PostgreSQL."""

from .config import ConfigError, Settings, load_settings
from .runtime import Runtime
from .status import JobStatus
from .web.app import create_app, install

__all__ = [
    "ConfigError",
    "JobStatus",
    "Runtime",
    "Settings",
    "create_app",
    "install",
    "load_settings",
]
