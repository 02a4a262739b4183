"""The gateway channel between two brokers of one app (as two processes on one host would have them), over a real
Redis: frames go to a gateway on this host through shared memory, and the gateway's frames are never overwritten
while it holds them."""

from __future__ import annotations

import gc
import time
from typing import Any

import numpy as np
import pytest

from edgeflow import Frame
from edgeflow.frame import encode
from edgeflow.links import Link
from edgeflow_shm._channel import futex_available

from .helpers import read_one

pytestmark = pytest.mark.skipif(not futex_available(), reason="the channel needs Linux futexes")

GW = Link("cam", "gw", "realtime", "tcp", 1)


def frame(i: int) -> Frame:
    return Frame(i, time.time(), {"i": i}, np.full((480, 640, 3), i % 251, np.uint8))


def send(path: Any, i: int) -> bool:
    f = frame(i)
    return bool(path.send(f, encode(f)))


def open_path(path: Any, feed: Any) -> int:
    """Send until the path takes frames (the producer looks at the registrations once a second: don't wait for
    it); return the id of the first frame the path took."""
    deadline = time.monotonic() + 10
    i = 0
    while True:
        assert time.monotonic() < deadline, "the gateway channel never came into use"
        path._decide_at = path._join_check_at = 0.0
        feed._next_check = 0.0
        feed.read(0.005)
        if send(path, i):
            return i
        i += 1


def test_a_gateway_here_takes_frames_from_shared_memory_as_views_and_one_elsewhere_never(make: Any) -> None:
    prod, gw = make(), make()
    path, feed = prod.gateway_path("cam", GW), gw.gateway_feed(GW, "g0")
    assert not send(path, 0), "until the gateway joins, frames go over TCP"
    first = open_path(path, feed)
    d = read_one(feed)
    assert d.frame.frame_id == first and int(d.frame.data[9, 9, 2]) == first % 251
    assert not d.frame.data.flags.writeable and not d.frame.data.flags.owndata, "a read-only view, not a copy"
    assert prod.client.xlen(prod.stream_key("cam")) == 0, "no stream entry either"
    held = feed.pins.held()
    small = Frame(77, time.time(), {"small": 1}, b"tiny")
    assert path.send(small, encode(small))
    got = read_one(feed).frame
    assert (got.frame_id, got.data, got.meta) == (77, b"tiny", {"small": 1})
    assert feed.pins.held() == held, "a small frame is copied out of the channel: no slot to pin"
    feed.close()

    # A gateway of the same name on another host: the producer keeps TCP.
    prod2, other = make(), make()
    other.data_plane.host = "another-host"
    path2 = prod2.gateway_path("cam", Link("cam", "far", "realtime", "tcp", 1))
    far = other.gateway_feed(Link("cam", "far", "realtime", "tcp", 1), "g1")
    for i in range(30):
        path2._decide_at = path2._join_check_at = 0.0
        far._next_check = 0.0
        far.read(0.005)
        assert not send(path2, i), "a gateway elsewhere can't map this host's memory"
    assert path2.channel is None


def test_frames_the_gateway_keeps_are_never_overwritten_and_a_full_pool_drops_counted(make: Any) -> None:
    prod, gw = make(), make()
    path, feed = prod.gateway_path("cam", GW), gw.gateway_feed(GW, "g0")
    n = open_path(path, feed)
    kept = [read_one(feed).frame]
    # Hold every frame: the producer writes the free slots, then drops what can't be placed, counted.
    for i in range(n + 1, n + 40):
        assert send(path, i)
        kept.extend(d.frame for d in feed.read(0.05))
    slots = path.plane._segments[(path.source, 1 << 20)].nslots
    assert len(kept) == slots, "each held frame pins one slot"
    assert path.dropped == 39 - (slots - 1), "frames with no free slot are dropped and counted"
    assert all(int(f.data[0, 0, 0]) == int(f.data[-1, -1, -1]) == f.frame_id % 251 for f in kept), "none torn"
    # Let go of all but the newest: the slots are written again.
    newest = kept[-1]
    del kept
    gc.collect()
    dropped = path.dropped
    assert send(path, 1000) and path.dropped == dropped
    assert read_one(feed).frame.frame_id == 1000
    assert int(newest.data[5, 5, 0]) == newest.frame_id % 251, "the frame still held is intact"


def opened(make: Any) -> tuple[Any, Any, int]:
    """A producer's path and a gateway's feed in use, the frame that opened it read; and that frame's id."""
    prod, gw = make(), make()
    path, feed = prod.gateway_path("cam", GW), gw.gateway_feed(GW, "g0")
    n = open_path(path, feed)
    assert read_one(feed).frame.frame_id == n
    return path, feed, n


def test_a_slow_gateway_gets_the_newest_and_counts_the_rest(make: Any) -> None:
    path, feed, n = opened(make)
    for i in range(n + 1, n + 6):
        send(path, i)
    d = read_one(feed)
    assert d.frame.frame_id == n + 5 and feed.skipped == 4


def test_a_gateway_that_leaves_gets_its_unread_frames_counted_and_tcp_takes_over(make: Any) -> None:
    path, feed, n = opened(make)
    for i in range(n + 1, n + 4):
        assert send(path, i)
    feed.close()  # unregisters: the producer sees it at its next look
    path._decide_at = 0.0
    assert not send(path, n + 10), "back to TCP"
    assert path.dropped == 3, "the three frames it left in the channel are counted"
    assert path.channel is None


def test_two_producer_replicas_keep_tcp(make: Any) -> None:
    a, b, gw = make(), make(), make()
    pa, pb = a.gateway_path("cam", GW), b.gateway_path("cam", GW)
    feed = gw.gateway_feed(GW, "g0")
    for i in range(20):
        for p in (pa, pb):
            p._decide_at = p._join_check_at = 0.0
            assert not send(p, i), "a gateway follows one producer's channel"
        feed._next_check = 0.0
        feed.read(0.005)


def test_a_channel_name_from_redis_never_leads_the_gateway_outside_its_files(make: Any) -> None:
    gw = make()
    feed = gw.gateway_feed(GW, "g0")
    key = gw.data_plane.gateway_channel_key("cam", "gw")
    for hostile in ("../../etc/passwd", "edgeflow-x-1-2-zz/../../tmp", "/etc/shadow"):
        gw.client.set(key, f"{gw.data_plane.host}|{hostile}")
        feed._next_check = 0.0
        assert feed.read(0.01) == [] and feed.channel is None, hostile
