"""Tracing: the stamps of wire version 2, version 1 still read, stage naming, the breakdown, the sampler."""

from __future__ import annotations

import struct
import time

import numpy as np
import pytest

from edgeflow.errors import FrameError
from edgeflow.frame import Frame, decode, encode, pack, peek, restamp, unpack
from edgeflow.runtime.stats import BUCKETS, Histogram, NodeStats, StatsAggregator
from edgeflow.tracing import (
    END,
    MADE,
    READ,
    RECEIVED,
    SENT,
    START,
    WRITTEN,
    TraceSampler,
    breakdown,
    offset_us,
    pack_stamps,
    stage_defs,
    stamps,
)

T0 = 1_700_000_000.0
# (node, kind, microseconds since the frame's timestamp)
STAMPS = [(0, MADE, 0), (0, WRITTEN, 1000), (1, READ, 3000), (1, START, 3100), (1, END, 53100), (1, SENT, 53500),
          (2, RECEIVED, 54000)]  # fmt: skip
TRACE = pack_stamps(STAMPS)


def _wire(frame: Frame) -> bytes:
    return b"".join(bytes(b) for b in pack(frame))


def test_a_traced_frame_travels_as_version_2_and_keeps_its_stamps_to_the_microsecond() -> None:
    frame = Frame(7, T0, {"a": 1}, np.arange(12, dtype=np.int16).reshape(3, 4), TRACE)
    header, payload = encode(frame)
    assert header[2] == 2
    for got in (decode(header, payload), unpack(_wire(frame))):
        assert got.frame_id == 7 and got.meta == {"a": 1}
        np.testing.assert_array_equal(got.data, frame.data)
        assert got.trace == TRACE and stamps(got.trace) == STAMPS
    assert peek(header) == (7, T0)


def test_version_1_frames_still_decode_and_an_untraced_frame_is_sent_as_version_1() -> None:
    frame = Frame(3, T0, {}, b"raw")
    header, payload = encode(frame)
    assert header[2] == 1, "a frame without stamps costs no byte more than before"
    # A version-1 header written by hand, as an older EdgeFlow sends it.
    v1 = struct.pack("<2sBBQdIQ", b"EF", 1, 0, 3, T0, 0, 3)
    for got in (decode(header, payload), decode(v1, b"raw"), unpack(v1 + b"raw")):
        assert got.data == b"raw" and got.trace is None


def test_the_trace_block_costs_six_bytes_a_stamp() -> None:
    plain, _ = encode(Frame(1, T0, {}, b"x"))
    traced, _ = encode(Frame(1, T0, {}, b"x", TRACE))
    assert len(traced) - len(plain) == 1 + 6 * len(STAMPS)


def test_stamps_far_from_the_timestamp_are_clamped_not_wrapped() -> None:
    assert offset_us(T0 + 10_000.0, T0) == 2**31 - 1 and offset_us(T0 - 10_000.0, T0) == -(2**31 - 1)
    assert offset_us(T0 + 0.25, T0) == 250_000
    with pytest.raises(FrameError, match="packed stamps"):
        encode(Frame(1, T0, {}, b"", TRACE[:-1]))


@pytest.mark.parametrize(
    "mangle",
    [
        lambda h: h[:32],  # the trace block cut off
        lambda h: h[:32] + bytes([65]) + h[33:],  # more stamps than allowed
        lambda h: h[:32] + bytes([50]) + h[33:],  # more stamps than the header holds
    ],
)
def test_a_bad_trace_block_is_a_frame_error(mangle) -> None:  # type: ignore[no-untyped-def]
    header, payload = encode(Frame(1, T0, {}, b"ab", TRACE))
    with pytest.raises(FrameError):
        decode(mangle(header), payload)


def test_restamp_turns_the_last_stamp_into_the_send_time_and_leaves_untraced_headers_alone() -> None:
    header, payload = encode(Frame(1, T0, {}, b"ab", pack_stamps([(0, MADE, 0), (0, WRITTEN, 1000)])))
    got = decode(restamp(header, SENT, T0 + 0.25), payload)
    assert stamps(got.trace) == [(0, MADE, 0), (0, SENT, 250_000)]
    plain, _ = encode(Frame(1, T0, {}, b"ab"))
    assert restamp(plain, SENT, T0) is plain


def test_stages_are_named_and_kinded_from_consecutive_stamps() -> None:
    path = [("cam", "made"), ("cam", "written"), ("det", "read"), ("det", "start"), ("det", "end"),
            ("det", "sent"), ("gw", "received")]  # fmt: skip
    assert [(d["name"], d["kind"]) for d in stage_defs(path)] == [
        ("cam send", "transfer"), ("cam->det", "queue"), ("det wait", "queue"), ("det process", "process"),
        ("det send", "transfer"), ("det->gw", "transfer"),
    ]  # fmt: skip


def test_the_breakdown_names_the_slowest_stage_and_flags_stages_across_hosts() -> None:
    path = [("cam", "made"), ("cam", "written"), ("det", "read"), ("det", "start"), ("det", "end")]
    samples = [[0.01, 1.0 + i / 100, 0.02, 50.0 + i / 10] for i in range(100)]
    (got,) = breakdown([(path, samples[:50]), (path, samples[50:])], lambda a, b: (a, b) == ("cam", "det"))
    assert got["nodes"] == ["cam", "det"] and got["samples"] == 100
    assert got["slowest"] == "det process"
    by_name = {s["name"]: s for s in got["stages"]}
    assert 54 <= by_name["det process"]["p50_ms"] <= 55.1 and by_name["det process"]["p99_ms"] >= 59.8
    assert by_name["cam->det"]["cross_host"] is True and by_name["det wait"]["cross_host"] is False
    assert 55 < got["total_p50_ms"] < 57


def test_the_sampler_keeps_a_bounded_sample_per_source_and_starts_afresh_after_a_drain() -> None:
    sampler = TraceSampler(["cam", "gw"], per_source=16)
    for i in range(10_000):
        sampler.add("cam", pack_stamps([(0, MADE, 0), (0, SENT, 1000 + i % 7), (1, RECEIVED, 3000 + i % 7)]))
    (entry,) = sampler.drain()
    assert entry["path"] == [["cam", "made"], ["cam", "sent"], ["gw", "received"]]
    assert len(entry["samples"]) == 16
    assert all(abs(s[0] - 1.0) < 0.01 and abs(s[1] - 2.0) < 0.01 for s in entry["samples"])
    assert sampler.drain() == []


def test_histograms_count_per_bucket_cumulatively() -> None:
    h = Histogram()
    for v in (0.00005, 0.03, 0.03, 20.0):
        h.observe(v)
    state = h.state()
    assert state["le"] == list(BUCKETS) and state["count"] == 4 and abs(state["sum"] - 20.06005) < 1e-6
    assert state["buckets"][0] == 1 and state["buckets"][BUCKETS.index(0.05)] == 3 and state["buckets"][-1] == 3


def test_records_carry_histograms_and_the_aggregator_breaks_traces_down() -> None:
    st = NodeStats("gw", "gateway")
    st.traces = TraceSampler(["cam", "gw"])
    st.received(time.time() - 0.01, "cam")
    st.proc_ms.append(30.0)
    st.traces.add("cam", pack_stamps([(0, MADE, 0), (0, SENT, 1000), (1, RECEIVED, 4000)]))
    record = st.snapshot()
    assert record["process_seconds"]["count"] == 1 and record["latency_seconds"]["cam"]["count"] == 1
    agg = StatsAggregator(None, {"nodes": [], "links": []})  # type: ignore[arg-type]
    agg.ingest(record)
    (path,) = agg.traces()
    assert path["slowest"] == "cam->gw" and path["stages"][1]["kind"] == "transfer"


def test_a_producer_traces_at_most_its_rate_and_every_frame_with_rate_0(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeflow import EdgeApp, ProducerNode, RedisBroker
    from edgeflow.runtime.trace import Tracer

    app = EdgeApp("rate", broker=RedisBroker("redis://127.0.0.1:1/0"))

    @app.node(name="cam", type="producer")
    class Cam(ProducerNode):
        def produce(self) -> None:
            return None

    def traced(rate: str, n: int) -> int:
        monkeypatch.setenv("EDGEFLOW_TRACE_RATE", rate)
        tracer = Tracer(app, "cam", NodeStats("cam", "producer"))
        frames = [Frame(i, T0, {}, b"") for i in range(n)]
        for f in frames:
            tracer.written(f)
        return sum(f.trace is not None for f in frames)

    assert traced("0", 5000) == 5000
    assert 1 <= traced("5", 5000) <= 3, "5 a second: a burst of frames within a moment gets one or two"
    monkeypatch.setenv("EDGEFLOW_TRACE", "0")
    assert traced("0", 100) == 0
