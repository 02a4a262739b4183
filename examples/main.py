import time
import numpy as np
import cv2
import os

from edgeflow import EdgeApp
from edgeflow.nodes import ProducerNode, ConsumerNode, GatewayNode
from edgeflow.nodes.gateway.interfaces.web import WebInterface
from edgeflow.comms import RedisBroker
from edgeflow.config import settings

# 앱 초기화
app = EdgeApp("test-distributed-system", broker=RedisBroker())

# 1. Producer: 가짜 카메라 (애니메이션 생성)
@app.node(name="fake_camera", type="producer", device="camera", fps=30)
class FakeCamera(ProducerNode):
    def configure(self):
        self.hostname = os.getenv("HOSTNAME", "unknown-host")

    def produce(self):
        # 움직이는 공 애니메이션 생성
        img = np.zeros((480, 640, 3), dtype=np.uint8)
        img[:] = (30, 30, 30)
        
        t = time.time()
        cx = int(320 + 200 * np.sin(t * 2))
        cy = int(240 + 100 * np.cos(t * 2))
        cv2.circle(img, (cx, cy), 30, (0, 255, 255), -1)
        
        cv2.putText(img, f"Src: {self.hostname}", (10, 30), 
                    cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2)
        return img

# 2. Consumer: GPU 처리 시뮬레이션
@app.node(name="gpu_processor", type="consumer", device="gpu", replicas=2)
class GpuProcessor(ConsumerNode):
    def configure(self):
        self.hostname = os.getenv("HOSTNAME", "unknown-host")

    def process(self, frame):
        processed_img = frame.copy()
        # 객체 인식 시뮬레이션 (박스 그리기)
        cv2.rectangle(processed_img, (150, 100), (490, 380), (0, 0, 255), 3)
        cv2.putText(processed_img, "AI DETECTED", (150, 90), 
                    cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 255), 2)
        return processed_img

# 3. Gateway: 웹 시각화
@app.node(name="gateway", type="gateway", node_port=30080)
class VideoGateway(GatewayNode):
    def configure(self):
        web = WebInterface(port=settings.GATEWAY_HTTP_PORT)
        self.add_interface(web)

# 4. 연결 및 실행
if __name__ == "__main__":
    # 체인 연결: 카메라 -> GPU -> 게이트웨이
    app.link("fake_camera").to("gpu_processor")
    app.link("gpu_processor").to("gateway")
    
    # 직접 연결: 카메라 -> 게이트웨이 (원본 영상 확인용)
    app.link("fake_camera").to("gateway")
    
    app.run()
