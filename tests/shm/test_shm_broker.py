"""The shared-memory data plane against a real redis-server: zero copy on one host, inline across hosts,
slots never reused while read, durable payloads kept until acknowledged, nothing left behind by a crash."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from edgeflow import Frame
from edgeflow.embedded import EmbeddedRedis
from edgeflow.errors import BackpressureError
from edgeflow.links import Link
from edgeflow_shm import ShmBroker, sweep
from edgeflow_shm._pool import SHM_DIR

from .helpers import read_one

BIG = (480, 640, 3)


def rt(depth: int = 1) -> Link:
    return Link("cam", "det", "realtime", "redis", depth)


def dur(max_len: int = 10_000) -> Link:
    return Link("cam", "det", "durable", "redis", max_len=max_len)


def image(i: int) -> np.ndarray:
    return np.full(BIG, i % 256, np.uint8)


def make(url: str, app: str, **kw: Any) -> ShmBroker:
    kw.setdefault("shm_local", False)  # these tests look at the stream entries; the channel has tests of its own
    b = ShmBroker(url, **kw)
    b.bind(app)
    b.connect()
    return b


@pytest.fixture
def brokers(redis_server: EmbeddedRedis, app_name: str) -> Iterator[list[ShmBroker]]:
    """Two brokers of one app (a producer's and a reader's), closed after the test."""
    made: list[ShmBroker] = []
    yield made
    for b in made:
        b.close()


def entries(b: ShmBroker, qos: str = "realtime") -> list[dict[bytes, Any]]:
    return [f for _, f in b.client.xrange(b.stream_key("cam", qos))]


def test_same_host_reader_maps_the_frame_read_only_without_a_copy_in_redis(
    redis_server: EmbeddedRedis, app_name: str, brokers: list[ShmBroker]
) -> None:
    prod, reader = make(redis_server.url, app_name), make(redis_server.url, app_name)
    brokers += [prod, reader]
    sub = reader.subscribe([rt()], "c0")
    pub = prod.publisher("cam", [rt()])
    pub.publish(Frame(1, time.time(), {"k": 1}, image(7)))
    (fields,) = entries(prod)
    assert b"m" in fields and b"d" not in fields, "the entry carries a reference, not the 921,600 bytes"
    d = read_one(sub)
    assert d.frame.meta == {"k": 1} and d.frame.data.shape == BIG and int(d.frame.data[5, 5, 1]) == 7
    assert not d.frame.data.flags.writeable, "mapped read-only"
    assert not d.frame.data.flags.owndata, "a view of the shared slot, not a copy"


def test_reader_on_another_host_gets_the_payload_inline(
    redis_server: EmbeddedRedis, app_name: str, brokers: list[ShmBroker]
) -> None:
    prod, remote = make(redis_server.url, app_name), make(redis_server.url, app_name)
    brokers += [prod, remote]
    remote.data_plane.host = "elsewhere"  # what a pod on another machine (another /dev/shm) would say
    sub = remote.subscribe([rt()], "c0")
    pub = prod.publisher("cam", [rt()])
    pub.publish(Frame(1, time.time(), {}, image(3)))
    (fields,) = entries(prod)
    assert b"d" in fields and b"m" in fields, "a registered remote reader makes the producer inline the payload"
    d = read_one(sub)
    assert int(d.frame.data[0, 0, 0]) == 3


def test_a_target_nobody_registered_yet_gets_the_payload_inline(
    redis_server: EmbeddedRedis, app_name: str, brokers: list[ShmBroker]
) -> None:
    prod = make(redis_server.url, app_name)
    brokers.append(prod)
    prod.publisher("cam", [dur()]).publish(Frame(1, time.time(), {}, image(1)))
    (fields,) = entries(prod, "durable")
    assert b"d" in fields, "a durable frame written before its reader started must be readable from any host"


def test_a_slot_is_never_rewritten_while_a_reader_holds_it(
    redis_server: EmbeddedRedis, app_name: str, brokers: list[ShmBroker]
) -> None:
    prod, reader = make(redis_server.url, app_name, shm_slots=1), make(redis_server.url, app_name)
    brokers += [prod, reader]
    sub = reader.subscribe([rt()], "c0")
    pub = prod.publisher("cam", [rt()])
    pub.publish(Frame(0, time.time(), {}, image(10)))
    held = read_one(sub).frame.data
    for i in range(1, 80):  # more frames than slots: the writer goes round, and around the held slot
        pub.publish(Frame(i, time.time(), {}, image(10 + i)))
    assert int(held.min()) == int(held.max()) == 10, "the frame being processed was not overwritten"
    assert int(read_one(sub).frame.data[0, 0, 0]) == (10 + 79) % 256, "and the newest frame still arrives"


def test_a_frame_whose_slot_was_rewritten_is_skipped_not_torn(
    redis_server: EmbeddedRedis, app_name: str, brokers: list[ShmBroker]
) -> None:
    prod, reader = make(redis_server.url, app_name, shm_slots=1), make(redis_server.url, app_name)
    brokers += [prod, reader]
    sub = reader.subscribe([rt(depth=1)], "c0")
    pub = prod.publisher("cam", [rt(depth=1)])
    for i in range(3):
        pub.publish(Frame(i, time.time(), {}, image(i)))
    assert read_one(sub).frame.frame_id == 2
    # Forge what a reader descheduled for a long time sees: an entry whose slot the writer has since rewritten.
    stale = dict(entries(prod)[0])
    host, name, off, gen, n = stale[b"m"].decode().split("|")
    stale[b"m"] = f"{host}|{name}|{off}|{int(gen) - 1}|{n}".encode()
    prod.client.xadd(prod.stream_key("cam"), stale, maxlen=1)
    assert sub.read(0.5) == []
    sub.read(0.05)
    assert sub.skipped >= 1 and sub.rejected == 0


def test_durable_payloads_stay_until_acknowledged_then_the_pool_frees_them(
    redis_server: EmbeddedRedis, app_name: str, brokers: list[ShmBroker]
) -> None:
    budget = 40 * (1 << 20) + 40 * 64  # 40 slots of 1 MiB: a bounded pool below the link's max_len
    prod = make(redis_server.url, app_name, shm_slots=8, shm_max_bytes=budget)
    reader = make(redis_server.url, app_name)
    brokers += [prod, reader]
    sub = reader.subscribe([dur()], "c0")
    pub = prod.publisher("cam", [dur()])
    sent = 0
    with pytest.raises(BackpressureError, match="shared-memory pool"):
        for i in range(100):
            pub.publish(Frame(i, time.time(), {}, image(i)))
            sent += 1
    assert 32 <= sent <= 40, "the producer waits once the bounded pool is full"
    got = []
    while len(got) < sent:
        batch = sub.read(0.2)
        assert [int(d.frame.data[0, 0, 0]) for d in batch] == [(len(got) + k) % 256 for k in range(len(batch))]
        got += batch
        sub.ack(batch)
    pub.publish(Frame(sent, time.time(), {}, image(sent)))  # acknowledged slots were freed: room again
    assert int(read_one(sub).frame.data[0, 0, 0]) == sent


def test_segments_are_removed_on_close_and_after_a_crash(redis_server: EmbeddedRedis, app_name: str) -> None:
    def ours() -> list[str]:
        return [n for n in os.listdir(SHM_DIR) if n.startswith(f"edgeflow-{app_name}-")]

    b = make(redis_server.url, app_name)
    b.publisher("cam", [rt()]).publish(Frame(0, time.time(), {}, image(0)))
    assert len(ours()) == 1
    b.close()
    assert ours() == [], "a clean close removes the process's segments"
    code = (
        "import sys, time, numpy as np\n"
        "from edgeflow import Frame\nfrom edgeflow.links import Link\nfrom edgeflow_shm import ShmBroker\n"
        "b = ShmBroker(sys.argv[1]); b.bind(sys.argv[2]); b.connect()\n"
        "b.publisher('cam', [Link('cam', 'det')]).publish(Frame(0, 0.0, {}, np.zeros((480, 640, 3), np.uint8)))\n"
        "print('written', flush=True); time.sleep(60)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code, redis_server.url, app_name], stdout=subprocess.PIPE)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == b"written"
        assert len(ours()) == 1
        assert sweep(app_name) == 0, "a live owner's segment is kept"
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
        if p.stdout is not None:
            p.stdout.close()
    assert len(ours()) == 1, "a killed process can't clean up"
    assert sweep(app_name) == 1 and ours() == [], "the next process of the app does"
