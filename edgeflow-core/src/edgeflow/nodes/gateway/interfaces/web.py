"""`WebInterface`, provided by the edgeflow-web plugin (MJPEG streams and the live dashboard)."""

from __future__ import annotations

try:
    from edgeflow_web import WebInterface  # type: ignore[attr-defined,unused-ignore]
except ImportError as exc:  # pragma: no cover - exercised when edgeflow-web is absent
    raise ImportError(
        'WebInterface comes with the edgeflow-web plugin: pip install "edgeflow[web]"', name=exc.name
    ) from exc

__all__ = ["WebInterface"]
