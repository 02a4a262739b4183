"""A shared-memory reader running as another user than its producer can't map the producer's segments (mode 0600):
it says so, precisely, and takes the payloads inline from then on; the frames keep coming."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from typing import Any

import numpy as np

from edgeflow import Frame
from edgeflow.embedded import EmbeddedRedis
from edgeflow.links import Link
from edgeflow_shm import ShmBroker

from ..helpers import user_env

READER = """
import os, sys, time, logging
import numpy as np
from edgeflow.links import Link
from edgeflow_shm import ShmBroker
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(message)s")
broker = ShmBroker(sys.argv[1], shm_local=False)
broker.bind(sys.argv[2])
broker.connect()
sub = broker.subscribe([Link("cam", "far", "realtime", depth=1)], "c0")
# The interpreter and every module it needs are loaded: now become another user, as a pod with another uid is.
os.setgroups([])
os.setresgid(65534, 65534, 65534)
os.setresuid(65534, 65534, 65534)
print("READY", flush=True)
got = []
deadline = time.monotonic() + 15
while len(got) < 20 and time.monotonic() < deadline:
    for d in sub.read(0.1):
        got.append((d.frame.frame_id, int(d.frame.data[0, 0, 0])))
sub.flush()
print("GOT", got, "SKIPPED", sub.skipped, "LOST", sub.lost, flush=True)
"""


def test_a_reader_of_another_user_falls_back_to_inline_payloads(redis_server: EmbeddedRedis, app_name: str) -> None:
    assert os.geteuid() == 0, "this test starts a reader as another user: run the suite as root (CI does)"
    producer = ShmBroker(redis_server.url, shm_local=False)
    producer.bind(app_name)
    producer.connect()
    link = Link("cam", "far", "realtime", depth=1)
    pub = producer.publisher("cam", [link])
    reader = subprocess.Popen([sys.executable, "-c", textwrap.dedent(READER), redis_server.url, app_name],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=user_env())  # fmt: skip
    out: list[str] = []
    try:
        assert reader.stdout is not None
        seen = ""
        while not seen.endswith("READY\n"):
            line = reader.stdout.readline()
            assert line, seen
            seen += line
        i = 0
        while reader.poll() is None and i < 400:
            pub.publish(Frame(i, time.time(), {}, np.full((480, 640, 3), i % 256, np.uint8)))
            i += 1
            time.sleep(0.02)
        out = reader.stdout.read().splitlines()
    finally:
        reader.kill()
        reader.wait()
        if reader.stdout is not None:
            reader.stdout.close()
        pub.close()
        producer.close()
    text = "\n".join(out)
    (result,) = [x for x in out if x.startswith("GOT")]
    got: list[Any] = eval(result[4 : result.index(" SKIPPED")])
    assert len(got) == 20, text
    assert all(value == frame_id % 256 for frame_id, value in got), "the right pixels, inline"
    assert "can't map the shared-memory segment" in text and "Permission denied" in text, text
    assert "it belongs to uid 0, this reader runs as uid 65534" in text, text
    assert text.count("takes payloads inline from now on") == 1, "said once"
