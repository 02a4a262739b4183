"""A camera and a gateway on edgeflow-shm. The gateway writes to $RECORD, per frame: "<frame id> <way> <ok>", where
way is "shm" when the frame's pixels are a view of shared memory and "copy" otherwise, and ok says whether the
pixels still hold the frame's own number (a frame overwritten under the gateway would not)."""

import mmap
import os

import numpy as np

from edgeflow import EdgeApp
from edgeflow.nodes import GatewayNode, ProducerNode
from edgeflow_shm import ShmBroker

app = EdgeApp(os.environ.get("APP_NAME", "e2e-shm-gateway"), broker=ShmBroker())


def backed_by_shared_memory(data):
    """Follow the views under `data` to the memory they look at."""
    while True:
        if isinstance(data, np.ndarray) and data.base is not None:
            data = data.base
        elif isinstance(data, memoryview):
            data = data.obj
        else:
            return isinstance(data, mmap.mmap)


@app.node(name="camera", type="producer", fps=int(os.environ.get("FPS", "100")))
class Camera(ProducerNode):
    def configure(self):
        self.n = 0

    def produce(self):
        value = self.n % 251  # the frame's id is its number from 0, as the camera counts
        self.n += 1
        return np.full((480, 640, 3), value, np.uint8)


@app.node(name="gateway", type="gateway")
class Recorder(GatewayNode):
    def configure(self):
        self.out = open(os.environ["RECORD"], "a", buffering=1)
        self.kept = []  # frames held past on_frame, as a viewer's newest frame is: they must stay intact

    def on_frame(self, topic, frame):
        self.kept = [*self.kept[-3:], frame]
        way = "shm" if backed_by_shared_memory(frame.data) else "copy"
        ok = all(int(f.data[-1, -1, -1]) == int(f.data[0, 0, 0]) == f.frame_id % 251 for f in self.kept)
        self.out.write(f"{frame.frame_id} {way} {int(ok)}\n")


app.link("camera").to("gateway")

if __name__ == "__main__":
    app.run()
