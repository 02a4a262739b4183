"""The acme plugin's hooks: each registers one piece by name."""

from __future__ import annotations

from typing import Any

from edgeflow import hookimpl


@hookimpl
def register_brokers(register: Any) -> None:
    from .pieces import AcmeBroker

    register("acme", AcmeBroker)


@hookimpl
def register_interfaces(register: Any) -> None:
    from .pieces import FrameLog

    register("acme-log", FrameLog)


@hookimpl
def register_deployers(register: Any) -> None:
    from .pieces import FolderDeployer

    register("acme", FolderDeployer())


@hookimpl
def register_metrics(register: Any) -> None:
    from .pieces import JsonLinesExporter

    register("acme", JsonLinesExporter)
