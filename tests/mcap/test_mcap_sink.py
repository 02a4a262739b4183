"""McapSink in a pipeline on a real redis-server; its files read with the mcap library's reader and the ROS 2
decoder of mcap-ros2-support, as Foxglove and the ROS 2 tools would read them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory

from edgeflow import EdgeApp, RedisBroker
from edgeflow.nodes import ProducerNode
from edgeflow.plugins import get_plugin_manager, get_sink
from edgeflow.testing import RunningApp


@pytest.fixture(autouse=True)
def mcap_plugin() -> Iterator[None]:
    from edgeflow_mcap import plugin

    pm = get_plugin_manager()
    pm.register(plugin, name="edgeflow-mcap")
    try:
        yield
    finally:
        pm.unregister(name="edgeflow-mcap")


def image(n: int) -> np.ndarray:
    return np.random.default_rng(n).integers(0, 256, (120, 160, 3), dtype=np.uint8)


def run(app_name: str, redis_url: str, path: Path, count: int, fps: float | None = None, **options: Any) -> None:
    app = EdgeApp(app_name, broker=RedisBroker(redis_url))

    @app.node(name="camera", type="producer", fps=fps)
    class Camera(ProducerNode):
        def configure(self) -> None:
            self.n = 0

        def produce(self) -> Any:
            if self.n >= count:
                return None
            self.n += 1
            return image(self.n) if self.n % 2 else {"n": self.n, "boxes": [[1, 2, 3, 4]]}

    @app.node(name="rec", type="sink", path=str(path), **options)
    class Rec(get_sink("mcap")):  # type: ignore[misc]
        pass

    app.link("camera").to("rec")
    RunningApp(app).start().wait(timeout=30)


def test_the_file_opens_with_the_mcap_reader_with_a_known_image_schema(
    redis_url: str, app_name: str, tmp_path: Path
) -> None:
    path = tmp_path / "run.mcap"
    run(app_name, redis_url, path, 20)
    decode = DecoderFactory()
    images: list[Any] = []
    data: list[dict[str, Any]] = []
    with path.open("rb") as f:
        reader = make_reader(f)
        summary = reader.get_summary()
        assert summary is not None and summary.statistics is not None
        assert summary.statistics.message_count == 40, "20 frames, each with its identity"
        assert {c.compression for c in summary.chunk_indexes} == {"zstd"}
        for schema, channel, message in reader.iter_messages(topics=["/camera"]):
            if channel.message_encoding == "cdr":
                assert schema is not None
                assert (schema.name, schema.encoding) == ("sensor_msgs/msg/Image", "ros2msg")
                images.append(decode.decoder_for("cdr", schema)(message.data))
            else:
                assert channel.message_encoding == "json" and channel.schema_id == 0
                data.append(json.loads(message.data))
    assert len(images) == 10 and len(data) == 10
    first = images[0]
    assert (first.encoding, first.height, first.width, first.step) == ("bgr8", 120, 160, 480)
    assert first.header.frame_id == "camera"
    assert bytes(first.data) == image(1).tobytes(), "lossless, in the pipeline's BGR order"
    assert data[0] == {"n": 2, "boxes": [[1, 2, 3, 4]]}


def test_rotation_by_size_and_lz4_give_complete_files_that_replay_in_order(
    redis_url: str, app_name: str, tmp_path: Path
) -> None:
    path = tmp_path / "run.mcap"
    # Paced, so that reads are small and the sink commits every 8 frames: files rotate at a commit.
    run(app_name, redis_url, path, 60, fps=100, compression="lz4", rotate_bytes=300_000, flush_frames=8)
    files = sorted(tmp_path.glob("run*.mcap"))
    assert len(files) >= 3 and files[0].name == "run-0001.mcap" and path in files
    for file in files:
        with file.open("rb") as f:
            summary = make_reader(f).get_summary()
        assert summary is not None, f"{file} is complete"
        assert {c.compression for c in summary.chunk_indexes} == {"lz4"}
    rec = get_sink("mcap").open_recording(str(path))  # type: ignore[attr-defined]
    got = list(rec.frames())
    assert rec.sources() == ["camera"]
    assert [f.frame_id for _, f in got] == list(range(60))
    for _, f in got:
        n = f.frame_id + 1
        if n % 2:
            assert f.data.dtype == np.uint8 and f.data.tobytes() == image(n).tobytes()
        else:
            assert f.data == {"n": n, "boxes": [[1, 2, 3, 4]]}


def _sink(path: Path) -> Any:
    from edgeflow.runtime.stats import NodeStats

    sink = get_sink("mcap")()
    sink._bind(name="rec", app_name="a", device=None, replicas=1, replica=0, broker=None,
               stats=NodeStats("rec", "sink"), params={"path": str(path)})  # fmt: skip
    sink.configure()
    return sink


def test_frames_committed_by_an_earlier_process_and_delivered_again_are_stored_once(tmp_path: Path) -> None:
    """A sink process commits frames and dies before acknowledging them: they come again to the next process,
    which starts a file of its own and must know them from the finished file before it."""
    from edgeflow.frame import Frame

    path = tmp_path / "run.mcap"
    first = _sink(path)
    for n in range(3):
        first.current_frame, first.current_source = Frame(n, 10.0 + n, {}, {"n": n}), "cam"
        first.process({"n": n})
    first.flush()  # committed, its file finished; the acknowledgements never went out
    first.close()
    again = _sink(path)
    for n in range(4):
        again.current_frame, again.current_source = Frame(n, 10.0 + n, {}, {"n": n}), "cam"
        again.process({"n": n})
    again.flush()
    again.close()
    frames = [f.frame_id for _, f in get_sink("mcap").open_recording(str(path)).frames()]
    assert sorted(frames) == [0, 1, 2, 3], "each frame once, across the two files"
