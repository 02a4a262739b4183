"""The dualredis plugin's settings, read from the environment when accessed."""

from __future__ import annotations

import os

from edgeflow.config import int_env

__all__ = ["data_redis_configured", "data_redis_url", "data_where"]


def data_redis_configured() -> bool:
    """Return True when the environment names the data-plane Redis explicitly."""
    return any(os.environ.get(k) for k in ("DATA_REDIS_URL", "DATA_REDIS_HOST", "DATA_REDIS_PORT"))


def data_redis_url() -> str:
    """The data-plane URL: DATA_REDIS_URL, else DATA_REDIS_HOST (localhost) and DATA_REDIS_PORT (6380)."""
    url = os.environ.get("DATA_REDIS_URL")
    if url:
        return url
    return f"redis://{os.environ.get('DATA_REDIS_HOST', 'localhost')}:{int_env('DATA_REDIS_PORT', 6380)}/0"


def data_where() -> str:
    """Say which settings chose the data-plane Redis, for error messages."""
    if os.environ.get("DATA_REDIS_URL"):
        return "DATA_REDIS_URL"
    host = os.environ.get("DATA_REDIS_HOST", "localhost")
    return f"DATA_REDIS_HOST={host} DATA_REDIS_PORT={int_env('DATA_REDIS_PORT', 6380)}"
