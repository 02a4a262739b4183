"""A seed-shaped app for the run-mode tests: the gateway writes each frame it gets to $RECORD."""

import os
import threading

import numpy as np

from edgeflow import EdgeApp
from edgeflow.comms import RedisBroker
from edgeflow.nodes import ConsumerNode, GatewayNode, ProducerNode

FRAMES = int(os.environ.get("FRAMES", "0"))  # 0: endless

app = EdgeApp(os.environ.get("APP_NAME", "e2e-counting"), broker=RedisBroker())


@app.node(name="camera", type="producer", device="camera", fps=30)
class Camera(ProducerNode):
    def configure(self):
        self.n = 0

    def produce(self):
        if FRAMES and self.n >= FRAMES:
            return None
        self.n += 1
        return np.full((480, 640, 3), self.n % 256, np.uint8)


@app.node(name="processor", type="consumer", device="gpu", replicas=2)
class Processor(ConsumerNode):
    def process(self, frame):
        return frame[::2, ::2].copy()


@app.node(name="gateway", type="gateway", node_port=30080)
class Gateway(GatewayNode):
    def configure(self):
        self.lock = threading.Lock()
        self.out = open(os.environ["RECORD"], "a", buffering=1)

    def on_frame(self, topic, frame):
        with self.lock:
            self.out.write(f"{topic} {frame.frame_id} {frame.data.shape[0]}\n")

    def close(self):
        self.out.close()


if __name__ == "__main__":
    app.link("camera").to("processor")
    app.link("processor").to("gateway")
    app.link("camera").to("gateway")
    app.run()
