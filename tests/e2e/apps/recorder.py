"""A camera recorded by a sink, and a checker that writes each frame's checksum to $RECORD (for the sink tests).

SINK picks the sink (sqlite, file or mcap), STORE its path; FRAMES frames of 48x64x3 made from their number.
"""

import hashlib
import os

import numpy as np

from edgeflow import EdgeApp
from edgeflow.comms import RedisBroker
from edgeflow.nodes import ProducerNode, SinkNode
from edgeflow.plugins import get_sink

FRAMES = int(os.environ.get("FRAMES", "200"))
CLAIM_AFTER = float(os.environ.get("CLAIM_AFTER", "1.0"))

app = EdgeApp(os.environ.get("APP_NAME", "e2e-recorder"), broker=RedisBroker())


def image(n):
    return np.random.default_rng(n).integers(0, 256, (48, 64, 3), dtype=np.uint8)


@app.node(name="camera", type="producer", fps=float(os.environ.get("FPS", "100")))
class Camera(ProducerNode):
    def configure(self):
        self.n = 0

    def produce(self):
        if self.n >= FRAMES:
            return None
        self.n += 1
        return image(self.n)


@app.node(name="store", type="sink", path=os.environ.get("STORE", "unused.db"), flush_seconds=0.2)
class Store(get_sink(os.environ.get("SINK", "sqlite"))):
    pass


@app.node(name="check", type="sink")
class Check(SinkNode):
    def configure(self):
        self.out = open(os.environ["RECORD"], "a", buffering=1)

    def process(self, data):
        f = self.current_frame
        digest = hashlib.sha256(np.ascontiguousarray(data).data).hexdigest()
        self.out.write(
            f"check {f.frame_id} {digest} {data.dtype.str} {'x'.join(map(str, data.shape))} "
            f"{f.meta.get('recorded_ts', '-')}\n"
        )

    def close(self):
        self.out.close()


if __name__ == "__main__":
    app.link("camera").to("store", claim_after=CLAIM_AFTER)
    app.link("camera").to("check", claim_after=CLAIM_AFTER, retain_seconds=300)
    app.run()
