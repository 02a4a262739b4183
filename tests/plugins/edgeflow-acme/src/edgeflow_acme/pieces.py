"""The acme pieces, built only on edgeflow's public seams."""

from __future__ import annotations

import json
import os
import threading
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from edgeflow import GatewayInterface, RedisBroker
from edgeflow.brokers.dataplane import DataPlane, Fields, Missing, PayloadReader, Placer
from edgeflow.frame import Buffer, Frame
from edgeflow.loader import load_app


class _CrcPlacer(Placer):
    def place(self, header: bytes, payload: Buffer) -> dict[str, Any]:
        return {"d": payload, "crc": zlib.crc32(payload)}


class _CrcReader(PayloadReader):
    def resolve(self, entries: Sequence[Fields]) -> list[Buffer | Missing]:
        out: list[Buffer | Missing] = []
        for fields in entries:
            payload = fields.get(b"d", b"")
            crc = fields.get(b"crc")
            if crc is not None and int(crc) != zlib.crc32(payload):
                out.append(Missing("rejected", f"payload checksum {zlib.crc32(payload)} is not {int(crc)}"))
            else:
                out.append(payload)
        return out


class ChecksumPlane(DataPlane):
    """Payloads inline, each with its CRC-32, checked when read: a corrupted payload is rejected, counted."""

    name = "acme-crc"

    def placer(self, publisher: Any) -> Placer:
        return _CrcPlacer()

    def reader(self, subscription: Any) -> PayloadReader:
        return _CrcReader()


class AcmeBroker(RedisBroker):
    """The Redis broker with checksummed payloads."""

    name = "acme"

    def __init__(self, url: str | None = None, **options: Any) -> None:
        super().__init__(url, data_plane=ChecksumPlane(), **options)


class FrameLog(GatewayInterface):
    """Writes `topic frame_id` for every frame the gateway gets to a file."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._file: Any = None

    def start(self) -> None:
        self._file = self.path.open("a", buffering=1)

    def on_frame(self, topic: str, frame: Frame) -> None:
        with self._lock:
            if self._file is not None:
                self._file.write(f"{topic} {frame.frame_id}\n")

    def stop(self, timeout: float = 3.0) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


@click.command("deploy")
@click.argument("app_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="folder to write the plan to")
def deploy_to_folder(app_file: str, out: str) -> None:
    """Write the app's graph to OUT/plan.json: a deployer that deploys into a folder."""
    app = load_app(app_file)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plan.json").write_text(json.dumps(app.describe(), indent=2))
    click.echo(f"deployed {app.name} to {folder}")


class FolderDeployer:
    """Deploys an app into a folder."""

    name = "acme"
    help = "write the app's plan into a folder"
    command = deploy_to_folder


class JsonLinesExporter:
    """Appends every statistics record to the file named by ACME_METRICS_FILE."""

    def __init__(self) -> None:
        self.path = Path(os.environ["ACME_METRICS_FILE"])
        self._lock = threading.Lock()

    def export(self, record: dict[str, Any]) -> None:
        with self._lock, self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
