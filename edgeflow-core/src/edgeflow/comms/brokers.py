"""Brokers under the seed's import path; those that ship as plugins load when first asked for."""

from __future__ import annotations

from typing import Any

from ..brokers.redis import RedisBroker

__all__ = ["DualRedisBroker", "RedisBroker"]  # noqa: F822 - DualRedisBroker loads lazily from its plugin


def __getattr__(name: str) -> Any:
    if name == "DualRedisBroker":
        try:
            from edgeflow_dualredis import DualRedisBroker  # type: ignore[attr-defined,unused-ignore]
        except ImportError as exc:
            raise ImportError(
                'DualRedisBroker comes with the edgeflow-dualredis plugin: pip install "edgeflow[dualredis]"',
                name=exc.name,
            ) from exc
        return DualRedisBroker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
