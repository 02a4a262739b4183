"""Redis failures translated into EdgeFlow's errors, with what to do next; shared by every Redis-based broker."""

from __future__ import annotations

import redis

from ...errors import BrokerConnectionError, BrokerError, BrokerTimeoutError

__all__ = ["CONN_ERRORS", "translate"]

#: What a broken or unreachable connection raises, from redis-py or the socket below it.
CONN_ERRORS: tuple[type[BaseException], ...] = (redis.ConnectionError, ConnectionError, OSError)


def translate(exc: BaseException, url: str, *, what: str = "Redis", fix: str = "") -> BrokerError:
    """Return the BrokerError for `exc` raised by the Redis at `url` (`what` names that server in the message).

    `fix` replaces the default advice for an unreachable server.
    """
    if isinstance(exc, redis.TimeoutError):
        return BrokerTimeoutError(f"{what} at {url} did not answer in time: {exc}", url=url)
    if isinstance(exc, redis.AuthenticationError):
        return BrokerConnectionError(
            f"{what} at {url} refused the credentials; check the user and password in its URL", url=url
        )
    if isinstance(exc, CONN_ERRORS):
        advice = fix or "start redis-server or set REDIS_URL / REDIS_HOST and REDIS_PORT"
        return BrokerConnectionError(f"can't reach {what} at {url}: {exc}; {advice}", url=url)
    if "OOM" in str(exc):
        return BrokerError(
            f"{what} at {url} is full: {exc}; raise its maxmemory, or lower the durable links' max_len / max_bytes",
            url=url,
        )
    return BrokerError(f"{what} at {url} failed: {exc}", url=url)
