"""An app to look inside from the command line: camera -> slow (a known 25 ms stage) -> gateway, and
camera -> detector (JSON boxes) -> recorder."""

import os
import time

import numpy as np

from edgeflow import EdgeApp
from edgeflow.comms import RedisBroker
from edgeflow.nodes import ConsumerNode, GatewayNode, ProducerNode, SinkNode

app = EdgeApp(os.environ.get("APP_NAME", "e2e-observed"), broker=RedisBroker())


@app.node(name="camera", type="producer", fps=40)
class Camera(ProducerNode):
    def produce(self):
        return np.zeros((120, 160, 3), np.uint8)


@app.node(name="slow", type="consumer")
class Slow(ConsumerNode):
    def process(self, frame):
        time.sleep(0.025)
        return frame


@app.node(name="detector", type="consumer", output_topic="boxes")
class Detector(ConsumerNode):
    def process(self, frame):
        return {"boxes": [[10, 20, 50, 80]], "label": "robot"}


@app.node(name="recorder", type="sink")
class Recorder(SinkNode):
    def process(self, data):
        pass


@app.node(name="gateway", type="gateway")
class Gateway(GatewayNode):
    def on_frame(self, topic, frame):
        pass


if __name__ == "__main__":
    app.link("camera").to("slow").to("gateway")
    app.link("camera").to("detector").to("recorder")
    app.run()
