"""Settings read from the environment, with the seed's defaults."""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

from .errors import ConfigurationError

__all__ = ["Settings", "int_env", "redact_url", "settings"]


def int_env(name: str, default: int) -> int:
    """Return the integer environment variable `name`, or `default` when unset; ConfigurationError if not a number."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigurationError(
            f"environment variable {name}={raw!r} is not an integer; set it to a whole number such as {default}"
        ) from None


def redact_url(url: str) -> str:
    """Return `url` with any password replaced by `***`, safe for logs and `--list`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]  # as written: a cluster URL lists several host:port
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


class Settings:
    """EdgeFlow's settings; every attribute is read from the environment when it is accessed."""

    @property
    def REDIS_URL(self) -> str | None:  # noqa: N802 - the seed's names are environment variable names
        """A full Redis URL (`redis://`, `rediss://`, with user and password), preferred over host and port."""
        return os.environ.get("REDIS_URL") or None

    @property
    def REDIS_PASSWORD(self) -> str | None:  # noqa: N802
        """The control-plane Redis's password when REDIS_URL carries none (kept apart so that a Secret holds it)."""
        return os.environ.get("REDIS_PASSWORD") or None

    @property
    def REDIS_HOST(self) -> str:  # noqa: N802
        """Host of the control-plane Redis."""
        return os.environ.get("REDIS_HOST", "localhost")

    @property
    def REDIS_PORT(self) -> int:  # noqa: N802
        """Port of the control-plane Redis."""
        return int_env("REDIS_PORT", 6379)

    @property
    def GATEWAY_HOST(self) -> str:  # noqa: N802
        """Host that nodes connect to when they send frames straight into the gateway."""
        return os.environ.get("GATEWAY_HOST", "localhost")

    @property
    def GATEWAY_TCP_PORT(self) -> int:  # noqa: N802
        """The gateway's TCP port for frames from the nodes."""
        return int_env("GATEWAY_TCP_PORT", 8080)

    @property
    def GATEWAY_HTTP_PORT(self) -> int:  # noqa: N802
        """The gateway's HTTP port (dashboard, MJPEG, API)."""
        return int_env("GATEWAY_HTTP_PORT", 8000)

    @property
    def EDGEFLOW_BROKER(self) -> str | None:  # noqa: N802
        """The registered broker to use when the app names none (`redis`, or a plugin's such as `shm`)."""
        return os.environ.get("EDGEFLOW_BROKER") or None

    @property
    def NODE_NAME(self) -> str | None:  # noqa: N802
        """The node this process runs, when set (the deployer sets it in each pod)."""
        return os.environ.get("NODE_NAME") or None

    @property
    def EDGEFLOW_TOKEN(self) -> str | None:  # noqa: N802
        """Shared secret for the gateway's TCP intake and HTTP routes; unset means open."""
        return os.environ.get("EDGEFLOW_TOKEN") or None

    @property
    def MAX_FRAME_BYTES(self) -> int:  # noqa: N802
        """Largest encoded frame accepted from the wire."""
        return int_env("EDGEFLOW_MAX_FRAME_BYTES", 256 * 1024 * 1024)

    def redis_configured(self) -> bool:
        """Return True when the environment names a Redis server explicitly."""
        return any(os.environ.get(k) for k in ("REDIS_URL", "REDIS_HOST", "REDIS_PORT"))

    def redis_url(self) -> str:
        """Return the control-plane Redis URL built from REDIS_URL or REDIS_HOST/REDIS_PORT."""
        return self.REDIS_URL or f"redis://{self.REDIS_HOST}:{self.REDIS_PORT}/0"


settings = Settings()
