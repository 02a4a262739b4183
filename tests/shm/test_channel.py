"""The same-host channel of edgeflow-shm, against a real redis-server and real processes: realtime frames without
stream entries while every reader is on the producer's host, replicas sharing the work, every skip counted, and
stream entries again as soon as a reader elsewhere, a second producer or a reader that can't use it appears."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pytest

from edgeflow import Frame
from edgeflow.embedded import EmbeddedRedis
from edgeflow.links import Link
from edgeflow_shm import ShmBroker
from edgeflow_shm._channel import INLINE_MAX, RING, ChannelReader, ChannelWriter, futex_available
from edgeflow_shm._pool import SHM_DIR

from .helpers import read_one

pytestmark = pytest.mark.skipif(not futex_available(), reason="the channel needs Linux futexes")

BIG = (480, 640, 3)


def rt(target: str = "det", depth: int = 1, source: str = "cam") -> Link:
    return Link(source, target, "realtime", "redis", depth)


def image(i: int) -> np.ndarray:
    return np.full(BIG, i % 256, np.uint8)


def stream_len(b: ShmBroker) -> int:
    return int(b.client.xlen(b.stream_key("cam")))


def open_channel(pub: Any, *subs: Any) -> None:
    """Run the hand-over a live pipeline goes through: the producer names its channel (frames still go as
    stream entries), the readers join it, then frames go through it alone. Leaves nothing unread."""
    stamp = 1000
    deadline = time.monotonic() + 10
    while not pub.local:
        assert time.monotonic() < deadline, "the channel never came into use"
        pub._decide_at = pub._join_check_at = 0.0  # the producer looks once a second; don't wait for it
        pub.publish(Frame(stamp, time.time(), {"warm-up": 1}, image(0)))
        stamp += 1
        for sub in subs:
            sub._next_check = 0.0
            sub.read(0.01)
    for sub in subs:
        while sub.read(0.01):
            pass
        sub.flush()
    assert stream_len(pub.broker) >= 1, "the first frames went as stream entries"


def fresh_counts(*subs: Any) -> list[int]:
    return [s.skipped for s in subs]


def test_frames_go_through_the_channel_as_read_only_views_without_stream_entries(make: Any) -> None:
    prod, reader = make(), make()
    sub = reader.subscribe([rt()], "c0")
    pub = prod.publisher("cam", [rt()])
    open_channel(pub, sub)
    entries, (skipped,) = stream_len(prod), fresh_counts(sub)
    pub.publish(Frame(1, time.time(), {"k": 1}, image(7)))
    d = read_one(sub)
    assert d.frame.frame_id == 1 and d.frame.meta == {"k": 1} and int(d.frame.data[5, 5, 1]) == 7
    assert not d.frame.data.flags.writeable, "mapped read-only"
    assert not d.frame.data.flags.owndata, "a view of the shared slot, not a copy"
    assert d.extra.get("channel"), "it came through the channel"
    pub.publish(Frame(2, time.time(), {}, b"small payloads go through the channel too"))
    assert read_one(sub).frame.data == b"small payloads go through the channel too"
    assert stream_len(prod) == entries, "no stream entry for any of them"
    assert sub.skipped == skipped


def test_a_producer_that_ends_at_once_leaves_its_newest_frame_readable(make: Any) -> None:
    prod, reader = make(), make()
    sub = reader.subscribe([rt()], "c0")
    pub = prod.publisher("cam", [rt()])
    for i in range(50):  # faster than any reader joins a channel: these go as stream entries
        pub.publish(Frame(i, time.time(), {}, image(i)))
    pub.close()
    assert read_one(sub).frame.frame_id == 49, "the last frame waits in the stream, as without the channel"


def test_a_closing_producer_lets_channel_readers_take_the_newest_frame(make: Any) -> None:
    import threading

    prod, reader = make(), make()
    sub = reader.subscribe([rt()], "c0")
    pub = prod.publisher("cam", [rt()])
    open_channel(pub, sub)
    got: list[int] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            got.extend(d.frame.frame_id for d in sub.read(0.05))

    t = threading.Thread(target=read)
    t.start()
    for i in range(200):
        pub.publish(Frame(i, time.time(), {}, image(i)))
    pub.close()  # waits (briefly) until every target took frame 199
    done.set()
    t.join()
    assert got and got[-1] == 199
    assert len(got) + sub.skipped - fresh_counts(sub)[0] <= 200


def test_a_slow_reader_gets_the_newest_and_counts_every_skipped_frame(make: Any) -> None:
    prod, reader = make(), make()
    sub = reader.subscribe([rt()], "c0")
    pub = prod.publisher("cam", [rt()])
    open_channel(pub, sub)
    (before,) = fresh_counts(sub)
    for i in range(1, 11):
        pub.publish(Frame(i, time.time(), {}, image(i)))
    assert read_one(sub).frame.frame_id == 10
    assert sub.skipped - before == 9
    assert sub.read(0.05) == [], "nothing is delivered twice"


def test_a_deeper_link_hands_out_the_frames_it_keeps_in_order(make: Any) -> None:
    prod, reader = make(), make()
    sub = reader.subscribe([rt(depth=4)], "c0")
    pub = prod.publisher("cam", [rt(depth=4)])
    open_channel(pub, sub)
    (before,) = fresh_counts(sub)
    for i in range(1, 11):
        pub.publish(Frame(i, time.time(), {}, image(i)))
    assert [read_one(sub).frame.frame_id for _ in range(4)] == [7, 8, 9, 10]
    assert sub.skipped - before == 6


def test_replicas_share_the_frames_and_every_group_gets_them(make: Any) -> None:
    prod, r1, r2, r3 = make(), make(), make(), make()
    a, b = r1.subscribe([rt("det")], "a"), r2.subscribe([rt("det")], "b")
    other = r3.subscribe([rt("log")], "a")
    pub = prod.publisher("cam", [rt("det"), rt("log")])
    open_channel(pub, a, b, other)
    before = fresh_counts(a, b)
    got: dict[str, list[int]] = {"a": [], "b": []}
    for i in range(20):
        pub.publish(Frame(i, time.time(), {}, image(i)))
        replica, name = (a, "a") if i % 2 else (b, "b")
        got[name].append(read_one(replica).frame.frame_id)
        assert a.read(0.01) == [] and b.read(0.01) == [], "the frame went to one replica of the group only"
    assert sorted(got["a"] + got["b"]) == list(range(20)) and pub.local
    assert read_one(other).frame.frame_id == 19, "the other target got the newest frame"
    assert fresh_counts(a, b) == before, "frames the other replica took are not skips"


def test_a_reader_on_another_host_turns_the_channel_off_without_losing_count(make: Any) -> None:
    prod, local, remote = make(), make(), make()
    remote.data_plane.host = "elsewhere"  # what a pod on another machine (another /dev/shm) would say
    sub, log = local.subscribe([rt("det")], "c0"), local.subscribe([rt("log")], "c0")
    pub = prod.publisher("cam", [rt("det"), rt("log")])
    open_channel(pub, sub, log)
    (before,) = fresh_counts(sub)
    pub.publish(Frame(1, time.time(), {}, image(1)))
    assert read_one(sub).frame.frame_id == 1
    pub.publish(Frame(2, time.time(), {}, image(2)))  # left in the channel: skipped, counted
    far = remote.subscribe([rt("log")], "c1")
    pub._decide_at = 0.0
    for i in range(3, 6):
        pub.publish(Frame(i, time.time(), {}, image(i)))
    assert not pub.local, "a reader elsewhere can't map this host's memory"
    # Writes are pipelined: the reader may catch the stream a moment before the last one lands (newer next).
    seen = [int(read_one(far).frame.data[0, 0, 0])]
    while seen[-1] != 5:
        seen.append(int(read_one(far).frame.data[0, 0, 0]))
    assert seen == sorted(seen) and seen[0] >= 3, f"it gets the payloads inline, newer each time: {seen}"
    assert read_one(sub).frame.frame_id == 5, "the local reader follows the producer back to Redis"
    sub.flush()
    assert sub.skipped - before == 3, "frames 2, 3 and 4: counted on whichever path they were skipped"


def test_a_reader_that_cant_use_the_channel_keeps_stream_entries(make: Any) -> None:
    prod, reader = make(), make()
    # A node reading two sources waits on both at once: it reads Redis, so both producers keep stream entries.
    sub = reader.subscribe([rt("fuse", source="cam"), rt("fuse", source="lidar")], "c0")
    pub = prod.publisher("cam", [rt("fuse")])
    for i in range(3):
        pub._decide_at = 0.0
        pub.publish(Frame(i, time.time(), {}, image(i)))
        sub.read(0.01)
    assert pub.channel is None and not pub.local and stream_len(prod) == 1
    pub.publish(Frame(3, time.time(), {}, image(3)))
    assert int(read_one(sub).frame.data[0, 0, 0]) == 3


def test_two_producer_replicas_keep_stream_entries(make: Any) -> None:
    p1, p2, reader = make(), make(), make()
    sub = reader.subscribe([rt(depth=4)], "c0")
    a, b = p1.publisher("cam", [rt(depth=4)]), p2.publisher("cam", [rt(depth=4)])
    open_channel(a, sub)
    b.publish(Frame(1, time.time(), {}, image(1)))  # a second replica: one channel can't carry both
    assert not b.local and b.channel is None
    a._decide_at = 0.0  # a looks at the registrations once a second; don't wait for it
    a.publish(Frame(2, time.time(), {}, image(2)))
    assert not a.local, "the first replica went back to stream entries"
    assert [read_one(sub).frame.frame_id for _ in range(2)] == [1, 2], "frames of both replicas arrive"


def test_a_slot_rewritten_before_it_is_read_is_skipped_and_a_bad_header_rejected(make: Any) -> None:
    prod, reader = make(shm_slots=1), make()
    sub = reader.subscribe([rt()], "c0")
    pub = prod.publisher("cam", [rt()])
    open_channel(pub, sub)
    (before,) = fresh_counts(sub)

    def slot_of(seq: int) -> int:
        (seg,) = prod.data_plane._segments.values()
        for slot in range(seg.nslots):
            off = slot * seg.stride
            if int.from_bytes(seg.mm[off + 24 : off + 32], "little") == seq:
                return off
        raise AssertionError(f"no slot holds frame {seq}")

    (seg,) = prod.data_plane._segments.values()
    pub.publish(Frame(1, time.time(), {}, image(1)))
    off = slot_of(pub.seq)
    # What a reader descheduled for long sees: the channel names a slot that was written again since.
    seg.mm[off + 24 : off + 32] = (10**9).to_bytes(8, "little")
    assert sub.read(0.1) == [] and sub.skipped - before == 1 and sub.rejected == 0
    pub.publish(Frame(2, time.time(), {}, image(2)))
    off = slot_of(pub.seq)
    n = int.from_bytes(seg.mm[off + 8 : off + 16], "little")
    hdr = off + 64 + -(-n // 64) * 64
    seg.mm[hdr : hdr + 4] = b"JUNK"
    assert sub.read(0.1) == [] and sub.rejected == 1, "a header that isn't an EdgeFlow frame is rejected"
    pub.publish(Frame(3, time.time(), {}, image(3)))
    assert read_one(sub).frame.frame_id == 3, "and the link goes on"


_PRODUCER = """
import sys, time, numpy as np
from edgeflow import Frame
from edgeflow.links import Link
from edgeflow_shm import ShmBroker
b = ShmBroker(sys.argv[1], local_links=False); b.bind(sys.argv[2]); b.connect()
pub = b.publisher("cam", [Link("cam", "det")])
img = np.zeros((480, 640, 3), np.uint8)
n = int(sys.argv[3])
for i in range(n):
    img[0, 0, 0] = i % 256
    pub.publish(Frame(i, time.time(), {"i": i}, img))
    time.sleep(0.002)
print("sent", n, "channel", int(pub.local), flush=True)
time.sleep(float(sys.argv[4]))
pub.close(); b.close()
"""


def _producer(url: str, app: str, n: int, linger: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", _PRODUCER, url, app, str(n), str(linger)], stdout=subprocess.PIPE)


def test_between_processes_every_frame_is_delivered_or_counted_and_a_killed_producer_is_left(
    redis_server: EmbeddedRedis, app_name: str, make: Any
) -> None:
    reader = make()
    sub = reader.subscribe([rt()], "c0")
    p = _producer(redis_server.url, app_name, 400, 60)
    received: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while (not received or received[-1] != 399) and time.monotonic() < deadline:
            for d in sub.read(0.1):
                assert int(d.frame.data[0, 0, 0]) == d.frame.meta["i"] % 256, "never a torn or foreign frame"
                received.append(d.frame.frame_id)
        assert p.stdout is not None
        assert p.stdout.readline().split() == [b"sent", b"400", b"channel", b"1"]
        assert sub.channel is not None, "the frames came through the channel"
        assert received == sorted(set(received)), "in order, none twice"
        sub.flush()
        assert len(received) + sub.skipped == 400 - received[0], "every frame after the first delivered or counted"
        channel = sub.channel.name
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
        if p.stdout is not None:
            p.stdout.close()
    deadline = time.monotonic() + 10
    while sub.channel is not None and time.monotonic() < deadline:
        sub.read(0.1)
    assert sub.channel is None, "the reader left the channel of the killed producer"
    # The next producer of the app sweeps what the killed one left, and the reader follows its new channel.
    p2 = _producer(redis_server.url, app_name, 50, 5)
    try:
        assert int(read_one(sub, 15).frame.meta["i"]) >= 0
    finally:
        p2.send_signal(signal.SIGKILL)
        p2.wait()
        if p2.stdout is not None:
            p2.stdout.close()
    assert not (SHM_DIR / channel).exists(), "the killed producer's channel file was swept"
    assert os.path.exists(SHM_DIR)


def test_a_channel_name_from_redis_never_leads_outside_the_shared_memory_folder(
    make: Any, app_name: str, tmp_path: Any
) -> None:
    """Names come from Redis: a link planted in /dev/shm, or a path, must not get a reader to write elsewhere."""
    target = tmp_path / "precious"
    target.write_bytes(bytes(8192))
    planted = SHM_DIR / f"edgeflow-{app_name}-1-2-abcdef01"
    os.symlink(target, planted)
    reader = make()
    sub = reader.subscribe([rt()], "c0")
    try:
        for name in (planted.name, f"edgeflow-{app_name}/../../{tmp_path.name}-1-2-ab", "../../etc/passwd"):
            reader.client.set(reader.data_plane.channel_key("cam"), f"{reader.data_plane.host}|{name}")
            sub._next_check, sub.fast = 0.0, True  # a refused name turns the channel off: look at each name anew
            sub.read(0.01)
            assert sub.channel is None
    finally:
        planted.unlink()
    assert target.read_bytes() == bytes(8192), "nothing was written through the link"


def test_small_frames_go_in_the_channel_itself_and_an_entry_written_again_is_never_read(
    make: Any, app_name: str
) -> None:
    prod, reader = make(), make()
    sub = reader.subscribe([rt()], "c0")
    pub = prod.publisher("cam", [rt()])
    open_channel(pub, sub)
    pub.publish(Frame(1, time.time(), {"k": 1}, b"tiny"))
    d = read_one(sub)
    assert (d.frame.data, d.frame.meta) == (b"tiny", {"k": 1})
    assert ("cam", 4096) not in prod.data_plane._segments, "no slot was taken for it"

    # The entry of a ring position is reused 64 frames later: a reader holding the older number gets nothing.
    w = ChannelWriter(app_name)
    try:
        r = ChannelReader(w.name, "det")
        assert w.put_inline(5, b"head", b"body") and r.take_inline(5) == (b"head", b"body")
        assert w.put_inline(5 + RING, b"head", b"newer") and r.take_inline(5) is None
        assert not w.put_inline(6, b"h", bytes(INLINE_MAX)), "too big for an entry: it goes into a slot"
        r.close()
    finally:
        w.close()


def test_garbage_that_others_write_into_the_registrations_never_stops_a_producer_or_a_reader(make: Any) -> None:
    """Redis is reachable by others: stamps that are not numbers, names that are not UTF-8 and references that are
    not ours are ignored (each counted as no registration), and the channel still opens."""
    prod, reader = make(), make()
    plane = prod.data_plane
    sub = reader.subscribe([rt()], "c0")
    pub = prod.publisher("cam", [rt()])
    for key in (plane.writers_key("cam"), plane.readers_key("cam"), plane.fast_key("cam"), plane.feed_key("cam")):
        prod.client.hset(key, b"\xff\xfe|evil", b"not-a-time")
    prod.client.hset(plane.fast_key("cam"), b"det|x|y", b"\xff|1")
    prod.client.hset(reader.seen_key("cam", "det"), pub.inner.writer, "many")
    open_channel(pub, sub)
    pub.publish(Frame(5, time.time(), {}, image(5)))
    assert read_one(sub).frame.frame_id == 5
    plane.release([{b"m": b"\xff\xfe"}, {b"m": b"a|b|c|d|e"}, {b"m": b"x"}])  # nothing of ours: nothing freed
    reader.client.set(reader.data_plane.channel_key("cam"), b"\xff\xfe|\xfd")
    sub._next_check = 0.0
    sub.read(0.01)
