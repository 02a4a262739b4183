"""The whole app's metrics as the gateway sees them, for the web interface's /metrics route."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from .collector import RecordCollector

__all__ = ["exposition"]


def exposition(aggregator: Any, accept: str = "") -> tuple[bytes, str]:
    """Render the gateway's `StatsAggregator` (every replica's latest record, the links' backlogs) in the format
    the `accept` header asks for; return the body and its content type."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RecordCollector(aggregator.records, aggregator.links))
    encode, content_type = choose_encoder(accept)
    return encode(registry), content_type
