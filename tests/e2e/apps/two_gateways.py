"""An app with two gateways (one per site, say): `camera` feeds both, `lidar` only `south-1`. Each gateway writes
what it receives to $RECORD: "<gateway> <topic> <frame id>"."""

import os
import threading

from edgeflow import EdgeApp
from edgeflow.comms import RedisBroker
from edgeflow.nodes import GatewayNode, ProducerNode

FRAMES = int(os.environ.get("FRAMES", "0"))  # 0: endless

app = EdgeApp(os.environ.get("APP_NAME", "e2e-two-gateways"), broker=RedisBroker())


@app.node(name="camera", type="producer", fps=50)
class Camera(ProducerNode):
    def configure(self):
        self.n = 0

    def produce(self):
        if FRAMES and self.n >= FRAMES:
            return None
        self.n += 1
        return {"n": self.n}


@app.node(name="lidar", type="producer", fps=50)
class Lidar(Camera):
    pass


class Recording(GatewayNode):
    def configure(self):
        self.lock = threading.Lock()
        self.out = open(os.environ["RECORD"], "a", buffering=1)

    def on_frame(self, topic, frame):
        with self.lock:
            self.out.write(f"{self.name} {topic} {frame.frame_id}\n")


@app.node(name="north", type="gateway", node_port=30081)
class North(Recording):
    pass


@app.node(name="south-1", type="gateway", node_port=30082)
class South(Recording):
    pass


app.link("camera").to("north")
app.link("camera").to("south-1")
app.link("lidar").to("south-1")

if __name__ == "__main__":
    app.run()
