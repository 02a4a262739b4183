"""A durable pipeline whose middle node is scaled by running it as several processes; $RECORD gets each stored
frame. `work` takes WORK_SECONDS a frame, so that each replica holds a batch of unacknowledged frames."""

import os
import threading
import time

from edgeflow import EdgeApp
from edgeflow.comms import RedisBroker
from edgeflow.nodes import ConsumerNode, ProducerNode, SinkNode

FRAMES = int(os.environ.get("FRAMES", "600"))
WORK = float(os.environ.get("WORK_SECONDS", "0.01"))
CLAIM_AFTER = float(os.environ.get("CLAIM_AFTER", "30"))

app = EdgeApp(os.environ.get("APP_NAME", "e2e-scaled"), broker=RedisBroker())


@app.node(name="numbers", type="producer", fps=float(os.environ.get("FPS", "200")))
class Numbers(ProducerNode):
    def configure(self):
        self.n = 0

    def produce(self):
        if self.n >= FRAMES:
            return None
        self.n += 1
        return {"n": self.n}


@app.node(name="work", type="consumer", replicas=4, max_replicas=8)
class Work(ConsumerNode):
    def process(self, data):
        time.sleep(WORK)
        return {"n": data["n"], "by": os.getpid()}


@app.node(name="store", type="sink")
class Store(SinkNode):
    def configure(self):
        self.lock = threading.Lock()
        self.out = open(os.environ["RECORD"], "a", buffering=1)

    def process(self, data):
        with self.lock:
            self.out.write(f"store {data['n']} {data['by']} {time.time():.6f}\n")

    def close(self):
        self.out.close()


if __name__ == "__main__":
    app.link("numbers").to("work", qos="durable", claim_after=CLAIM_AFTER)
    app.link("work").to("store", qos="durable", claim_after=CLAIM_AFTER)
    app.run()
