"""Tracing: the stamps of wire version 2, version 1 still read, stage naming, the breakdown, the sampler."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from edgeflow.errors import FrameError
from edgeflow.frame import Frame, decode, encode, pack, peek, restamp, unpack
from edgeflow.runtime.stats import BUCKETS, Histogram, NodeStats, StatsAggregator
from edgeflow.tracing import END, MADE, READ, RECEIVED, SENT, START, WRITTEN, TraceSampler, breakdown, stage_defs

T0 = 1_700_000_000.0
TRACE = [(0, MADE, T0), (0, WRITTEN, T0 + 0.001), (1, READ, T0 + 0.003), (1, START, T0 + 0.0031),
         (1, END, T0 + 0.0531), (1, SENT, T0 + 0.0535), (2, RECEIVED, T0 + 0.0540)]  # fmt: skip


def _wire(frame: Frame) -> bytes:
    return b"".join(bytes(b) for b in pack(frame))


def test_a_traced_frame_travels_as_version_2_and_keeps_its_stamps_to_the_microsecond() -> None:
    frame = Frame(7, T0, {"a": 1}, np.arange(12, dtype=np.int16).reshape(3, 4), list(TRACE))
    header, payload = encode(frame)
    assert header[2] == 2
    for got in (decode(header, payload), unpack(_wire(frame))):
        assert got.frame_id == 7 and got.meta == {"a": 1}
        np.testing.assert_array_equal(got.data, frame.data)
        assert got.trace is not None and len(got.trace) == len(TRACE)
        for (n, k, t), (n2, k2, t2) in zip(got.trace, TRACE, strict=True):
            assert (n, k) == (n2, k2) and abs(t - t2) < 2e-6
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
    traced, _ = encode(Frame(1, T0, {}, b"x", list(TRACE)))
    assert len(traced) - len(plain) == 1 + 6 * len(TRACE)


def test_stamps_far_from_the_timestamp_are_clamped_not_wrapped() -> None:
    frame = Frame(1, T0, {}, b"", [(0, MADE, T0), (0, WRITTEN, T0 + 10_000.0), (0, READ, T0 - 10_000.0)])
    got = decode(*encode(frame))
    assert got.trace is not None
    assert 2147 < got.trace[1][2] - T0 < 2148 and -2148 < got.trace[2][2] - T0 < -2147


@pytest.mark.parametrize(
    "mangle",
    [
        lambda h: h[:32],  # the trace block cut off
        lambda h: h[:32] + bytes([65]) + h[33:],  # more stamps than allowed
        lambda h: h[:32] + bytes([50]) + h[33:],  # more stamps than the header holds
    ],
)
def test_a_bad_trace_block_is_a_frame_error(mangle) -> None:  # type: ignore[no-untyped-def]
    header, payload = encode(Frame(1, T0, {}, b"ab", list(TRACE)))
    with pytest.raises(FrameError):
        decode(mangle(header), payload)


def test_restamp_turns_the_last_stamp_into_the_send_time_and_leaves_untraced_headers_alone() -> None:
    header, payload = encode(Frame(1, T0, {}, b"ab", [(0, MADE, T0), (0, WRITTEN, T0 + 0.001)]))
    got = decode(restamp(header, SENT, T0 + 0.25), payload)
    assert got.trace is not None and got.trace[-1][:2] == (0, SENT) and abs(got.trace[-1][2] - T0 - 0.25) < 2e-6
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
        sampler.add("cam", [(0, MADE, T0 + i), (0, SENT, T0 + i + 0.001), (1, RECEIVED, T0 + i + 0.003)])
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
    st.received(T0, "cam")
    st.proc_ms.append(30.0)
    st.traces.add("cam", [(0, MADE, T0), (0, SENT, T0 + 0.001), (1, RECEIVED, T0 + 0.004)])
    record = st.snapshot()
    assert record["process_seconds"]["count"] == 1 and record["latency_seconds"]["cam"]["count"] == 1
    agg = StatsAggregator(None, {"nodes": [], "links": []})  # type: ignore[arg-type]
    agg.ingest(record)
    (path,) = agg.traces()
    assert path["slowest"] == "cam->gw" and path["stages"][1]["kind"] == "transfer"
