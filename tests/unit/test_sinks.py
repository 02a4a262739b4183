"""The built-in sinks without a broker: what they write, what a crash leaves, how a sink is picked by name."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeflow import EdgeApp, Frame, PluginError, UnstorableFrameError
from edgeflow.nodes import ProducerNode, SinkNode
from edgeflow.runtime.stats import NodeStats
from edgeflow.sinks import FileSink, SQLiteSink, sink_for
from edgeflow.sinks.png import png_bytes, read_png


def make(cls: type[Any], path: Path, **params: Any) -> Any:
    sink = cls()
    sink._bind(name="store", app_name="a", device=None, replicas=1, replica=0, broker=None,
               stats=NodeStats("store", "sink"), params={"path": str(path), **params})  # fmt: skip
    sink.configure()
    return sink


def put(sink: Any, source: str, frame: Frame) -> None:
    sink.current_frame, sink.current_source = frame, source
    sink.process(frame.data)


def test_a_link_into_a_sink_is_durable_unless_it_says_otherwise() -> None:
    app = EdgeApp("a")

    @app.node(name="cam", type="producer")
    class Cam(ProducerNode):
        def produce(self) -> Any:
            return None

    for name in ("s1", "s2"):

        @app.node(name=name, type="sink")
        class S(SinkNode):
            def process(self, data: Any) -> None:
                pass

    app.link("cam").to("s1")
    app.link("cam").to("s2", qos="realtime")
    assert [ln.qos for ln in app.links] == ["durable", "realtime"]


def test_the_output_kind_picks_the_sink_and_a_missing_one_names_its_extra(tmp_path: Path) -> None:
    assert sink_for("run.db")[0] == "sqlite" and sink_for("x.sqlite3")[0] == "sqlite"
    assert sink_for(str(tmp_path) + "/")[0] == "file" and sink_for("recording")[0] == "file"
    with pytest.raises(PluginError, match=r"no sink named 'mcap'.*edgeflow\[mcap\]|no sink named 'mcap'"):
        sink_for("run.mcap")  # the plugin is not registered in this process


@pytest.mark.parametrize(("shape", "dtype"), [((6, 7, 3), "|u1"), ((6, 7), "|u1"), ((6, 7, 4), "|u1"),
                                              ((6, 7, 1), "<u2"), ((6, 7, 3), ">u2")])  # fmt: skip
def test_png_keeps_every_image_bit_for_bit(shape: tuple[int, ...], dtype: str) -> None:
    img = np.random.default_rng(3).integers(0, 2**16 if "u2" in dtype else 256, shape).astype(dtype)
    back = read_png(png_bytes(img), img.dtype.str, list(shape))
    assert back.dtype == img.dtype and back.shape == img.shape and back.tobytes() == img.tobytes()


def test_file_sink_drops_what_a_crash_left_after_the_last_commit_and_stores_a_redelivery_once(tmp_path: Path) -> None:
    img = np.full((40, 60, 3), 9, np.uint8)
    sink = make(FileSink, tmp_path / "run")
    for n in range(3):
        put(sink, "cam", Frame(n, 10.0 + n, {"n": n}, img))
    sink.flush()
    put(sink, "cam", Frame(3, 13.0, {}, img))  # written, never committed: then the process dies
    sink._lines.close()  # what a killed process leaves: the line written, no commit after it
    os.close(sink._lock)
    again = make(FileSink, tmp_path / "run")
    put(again, "cam", Frame(2, 12.0, {"n": 2}, img))  # committed but not acknowledged: it comes again
    put(again, "cam", Frame(3, 13.0, {}, img))  # not committed: it comes again and is stored now
    again.flush()
    again.close()
    assert again.stats.extra["duplicates"] == 1
    frames = [f for _, f in FileSink.open_recording(str(tmp_path / "run")).frames()]
    assert [f.frame_id for f in frames] == [0, 1, 2, 3]
    assert all(f.data.tobytes() == img.tobytes() for f in frames)
    pngs = sorted(p.name for p in (tmp_path / "run").rglob("*.png"))
    assert len(pngs) == 4, "the uncommitted frame's image was removed, then written once"


def test_file_sink_killed_before_its_first_commit_stores_the_redelivered_frames_once(tmp_path: Path) -> None:
    img = np.full((40, 60, 3), 5, np.uint8)
    sink = make(FileSink, tmp_path / "run")
    for n in range(3):
        put(sink, "cam", Frame(n, 10.0 + n, {}, img))  # written, never committed: then the process dies
    sink._lines.close()
    os.close(sink._lock)
    again = make(FileSink, tmp_path / "run")
    for n in range(3):
        put(again, "cam", Frame(n, 10.0 + n, {}, img))  # none was acknowledged: all of them come again
    again.flush()
    again.close()
    frames = [f for _, f in FileSink.open_recording(str(tmp_path / "run")).frames()]
    assert [f.frame_id for f in frames] == [0, 1, 2]
    assert len(list((tmp_path / "run").rglob("*.png"))) == 3


def test_sqlite_sink_keeps_u64_ids_and_exact_timestamps(tmp_path: Path) -> None:
    sink = make(SQLiteSink, tmp_path / "x.db")
    put(sink, "cam", Frame(2**64 - 1, 0.1 + 0.2, {"k": [1]}, {"v": 1}))
    sink.flush()
    sink.close()
    ((source, frame),) = list(SQLiteSink.open_recording(str(tmp_path / "x.db")).frames())
    assert (source, frame.frame_id, frame.timestamp, frame.meta, frame.data) == ("cam", 2**64 - 1, 0.1 + 0.2,
                                                                                 {"k": [1]}, {"v": 1})  # fmt: skip


def test_a_source_name_that_is_no_folder_name_is_unstorable(tmp_path: Path) -> None:
    sink = make(FileSink, tmp_path / "run")
    with pytest.raises(UnstorableFrameError, match="can't name a folder"):
        put(sink, "../etc", Frame(0, 1.0, {}, b"x"))
    sink.close()
