"""Settings come from the environment with the seed's defaults; secrets never show."""

from __future__ import annotations

import pytest

from edgeflow.config import redact_url, settings
from edgeflow.errors import ConfigurationError


def test_seed_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("REDIS_HOST", "REDIS_PORT", "GATEWAY_TCP_PORT", "GATEWAY_HTTP_PORT", "DATA_REDIS_PORT", "NODE_NAME"):
        monkeypatch.delenv(var, raising=False)
    assert (settings.REDIS_HOST, settings.REDIS_PORT) == ("localhost", 6379)
    assert (settings.GATEWAY_TCP_PORT, settings.GATEWAY_HTTP_PORT) == (8080, 8000)
    assert settings.NODE_NAME is None
    assert settings.redis_url() == "redis://localhost:6379/0"
    assert not settings.redis_configured()


def test_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_HOST", "redis")
    monkeypatch.setenv("REDIS_PORT", "7000")
    monkeypatch.setenv("GATEWAY_HOST", "gateway")
    assert settings.redis_url() == "redis://redis:7000/0"
    assert settings.GATEWAY_HOST == "gateway"
    assert settings.redis_configured()
    monkeypatch.setenv("REDIS_URL", "rediss://app:s3cret@redis:6380/1")
    assert settings.redis_url() == "rediss://app:s3cret@redis:6380/1"


def test_bad_port_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_TCP_PORT", "eighty")
    with pytest.raises(ConfigurationError, match="GATEWAY_TCP_PORT='eighty'"):
        _ = settings.GATEWAY_TCP_PORT


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@h:1/0", "redis://:***@h:1/0"),
        ("rediss://user:pw@h:6380/2", "rediss://user:***@h:6380/2"),
        ("redis://h:6379/0", "redis://h:6379/0"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
