"""A durable pipeline for the fault-injection tests; every stored frame is written to $RECORD."""

import os
import threading
import time

from edgeflow import EdgeApp
from edgeflow.comms import RedisBroker
from edgeflow.nodes import ConsumerNode, GatewayNode, ProducerNode, SinkNode

FRAMES = int(os.environ.get("FRAMES", "0"))  # 0: endless
WORK = float(os.environ.get("WORK_SECONDS", "0.005"))
CLAIM_AFTER = float(os.environ.get("CLAIM_AFTER", "1.0"))

app = EdgeApp(os.environ.get("APP_NAME", "e2e-durable"), broker=RedisBroker())


@app.node(name="numbers", type="producer", fps=float(os.environ.get("FPS", "100")))
class Numbers(ProducerNode):
    def configure(self):
        self.n = 0

    def produce(self):
        if FRAMES and self.n >= FRAMES:
            return None
        self.n += 1
        return {"n": self.n}


@app.node(name="double", type="consumer")
class Double(ConsumerNode):
    def process(self, data):
        return {"n": data["n"], "double": 2 * data["n"]}


class _Recording:
    def open_record(self):
        self.lock = threading.Lock()
        self.out = open(os.environ["RECORD"], "a", buffering=1)

    def record(self, what, n):
        with self.lock:
            self.out.write(f"{what} {n} {os.getpid()} {time.time():.6f}\n")

    def close(self):
        self.out.close()


@app.node(name="store", type="sink", replicas=2)
class Store(_Recording, SinkNode):
    def configure(self):
        self.open_record()

    def process(self, data):
        time.sleep(WORK)
        self.record("store", data["n"])


@app.node(name="live", type="sink")
class Live(_Recording, SinkNode):
    def configure(self):
        self.open_record()

    def process(self, data):
        self.record("live", data["n"])


@app.node(name="gateway", type="gateway")
class Gateway(_Recording, GatewayNode):
    def configure(self):
        self.open_record()

    def on_frame(self, topic, frame):
        self.record("gateway", frame.data["n"])


if __name__ == "__main__":
    app.link("numbers").to("double", qos="durable", claim_after=CLAIM_AFTER)
    app.link("double").to("store", qos="durable", claim_after=CLAIM_AFTER)
    app.link("numbers").to("live", qos="realtime")
    app.link("numbers").to("gateway")
    app.run()
