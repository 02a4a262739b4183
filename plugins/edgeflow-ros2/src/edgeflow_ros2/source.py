"""`Ros2Source`: a producer that brings a ROS 2 topic into the pipeline, one frame per message.

@app.node(name="ros_cam", type="producer", topic="/camera/image_raw", msg_type="sensor_msgs/msg/Image")
class RosCam(Ros2Source):
    pass
"""

from __future__ import annotations

import json
import re
import time
from collections import deque
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from edgeflow.config import settings
from edgeflow.frame import Frame
from edgeflow.nodes import IDLE, ProducerNode

from ._cdr import decode_compressed, decode_image, decode_string
from ._images import to_array
from ._log import Throttled
from ._names import COMPRESSED_IMAGE, IMAGE, STRING, check_depth, check_msg_type, check_qos, ros_topic
from ._names import domain_id as resolve_domain
from .errors import MessageError, Ros2ConfigurationError

if TYPE_CHECKING:
    from ._dds import Domain, RawReader

__all__ = ["Ros2Source"]

_STATUS_EVERY = 1.0


class Ros2Source(ProducerNode):
    """Brings a ROS 2 topic into the pipeline: images as H x W (x C) arrays in BGR order, String as text.

    Settings (keyword arguments of `@app.node`): `topic` (required), `msg_type` (sensor_msgs/msg/Image,
    sensor_msgs/msg/CompressedImage or std_msgs/msg/String), `qos` ("realtime": best effort, hears every
    publisher; "durable": reliable, hears reliable publishers only), `depth`, `wait` (seconds produce()
    waits for a message before it returns IDLE), `decode` (CompressedImage: JPEG to a BGR array, or False
    for the compressed bytes), `parse_json` (String: the text parsed as JSON), `domain_id`, `max_bytes`.

    Each frame's timestamp is the message's header stamp (the DDS source time when there is no header or
    it is zero); its meta has the ROS 2 `frame_id`, the `encoding` (or CompressedImage's `format`) and
    `ros_topic`. Malformed messages are counted in `rejected` and logged, and the source goes on.
    """

    msg_type: str = IMAGE
    qos: str = "realtime"
    depth: int | None = None
    wait: float = 0.1
    decode: bool = True
    parse_json: bool = False
    domain_id: int | None = None
    max_bytes: int | None = None

    #: Statistics this source adds to its node's `extra`, from its own counts and DDS's.
    COUNTERS: ClassVar[tuple[str, ...]] = ("ros2_skipped", "ros2_cache_full", "ros2_lost", "ros2_refused_writers")

    _ros_reader: RawReader | None = None
    _ros_failed: bool = False

    def configure(self) -> None:
        """Check the settings and subscribe; override it and call `super().configure()` to add your own set-up."""
        self._ros_open()

    def _ros_open(self) -> None:
        from . import _dds

        topic = getattr(self, "topic", None)
        if topic is None:
            raise Ros2ConfigurationError(
                f"node {self.name!r}: a Ros2Source needs topic=..., e.g. @app.node(..., topic='/camera/image_raw')"
            )
        if self.replicas > 1:
            raise Ros2ConfigurationError(
                f"node {self.name!r}: a Ros2Source's replicas would each get every message of its topic; "
                "declare it with replicas=1 and give consumers the replicas"
            )
        self._ros_topic = ros_topic(topic, f"node {self.name!r}: topic")
        self._ros_type = check_msg_type(self.msg_type)
        qos = check_qos(self.qos, f"node {self.name!r}")
        depth = check_depth(self.depth, f"node {self.name!r}")
        if not isinstance(self.wait, (int, float)) or isinstance(self.wait, bool) or not 0.001 <= self.wait <= 5:
            raise Ros2ConfigurationError(f"node {self.name!r}: wait must be 0.001 to 5 seconds, got {self.wait!r}")
        limit = self.max_bytes if self.max_bytes is not None else settings.MAX_FRAME_BYTES
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise Ros2ConfigurationError(f"node {self.name!r}: max_bytes must be a positive int, got {limit!r}")
        self._ros_limit = limit
        self._ros_realtime = qos == "realtime"
        self._ros_pending: deque[Frame] = deque()
        self._ros_seq = 0
        self._ros_skipped = 0
        self._ros_refused = 0
        self._ros_next_status = 0.0
        self._ros_problems = Throttled(self.logger)
        self.stats.extra.update(dict.fromkeys(self.COUNTERS, 0))
        self._ros_domain: Domain = _dds.acquire(resolve_domain(self.domain_id))
        try:
            self._ros_reader = _dds.RawReader(self._ros_domain, self._ros_topic, self._ros_type, qos, depth)
        except BaseException:
            _dds.release(self._ros_domain)
            raise
        self.logger.info("ros2: %r reads %s (%s, %s) on DDS domain %d", self.name, self._ros_topic, self._ros_type,
                         qos, self._ros_domain.domain_id)  # fmt: skip

    def produce(self) -> Any:
        """Return the next message as a frame, or IDLE when none came within `wait` seconds."""
        if self._ros_reader is None:
            if self._ros_failed:
                return None
            try:
                self._ros_open()  # a subclass's configure() did not call ours
            except Exception:
                self._ros_failed = True  # logged by the runner once; the stream ends instead of failing in a loop
                raise
        assert self._ros_reader is not None
        if self._ros_pending:
            return self._ros_pending.popleft()
        samples = self._ros_reader.take(self.wait)
        self._ros_status()
        valid = [(data, info) for data, info in samples if info.valid_data]  # others: writers coming and going
        if not valid:
            return IDLE
        if self._ros_realtime:
            # The newest message wins; older ones taken with it are skipped, counted (and never decoded).
            for i in range(len(valid) - 1, -1, -1):
                frame = self._ros_frame(*valid[i])
                if frame is not None:
                    self._ros_skip(i)
                    return frame
            return IDLE
        for data, info in valid:
            frame = self._ros_frame(data, info)
            if frame is not None:
                self._ros_pending.append(frame)
        return self._ros_pending.popleft() if self._ros_pending else IDLE

    def close(self) -> None:
        """Unsubscribe and leave the domain."""
        from . import _dds

        reader = self._ros_reader
        if reader is not None:
            self._ros_status(force=True)
            self._ros_skip(len(self._ros_pending))  # durable: taken from DDS, not sent before the stop
            self._ros_pending.clear()
            self._ros_reader = None
            reader.close()
            _dds.release(self._ros_domain)

    # Decoding -------------------------------------------------------------------------------------------
    def _ros_skip(self, n: int) -> None:
        if n:
            self._ros_skipped += n
            self.stats.extra["ros2_skipped"] = self._ros_skipped

    def _ros_frame(self, data: bytes, info: Any) -> Frame | None:
        """Decode one sample into a frame; a bad one is counted, logged and gives None."""
        try:
            payload, meta, stamp = self._ros_decode(data)
        except MessageError as exc:
            self.stats.rejected += 1
            # Problems of one kind (the reason without its numbers) are logged once, then counted.
            self._ros_problems(re.sub(r"\d+", "N", exc.reason)[:60], f"node {self.name!r}: dropped a message on {exc}")
            return None
        if not stamp:
            stamp = info.source_timestamp * 1e-9
        meta["ros_topic"] = self._ros_topic
        frame = Frame(self._ros_seq, stamp, meta, payload)
        self._ros_seq += 1
        return frame

    def _ros_decode(self, data: bytes) -> tuple[Any, dict[str, Any], float]:
        topic = self._ros_topic
        if self._ros_type == IMAGE:
            msg = decode_image(data, topic)
            try:
                image = to_array(msg.data, msg.height, msg.width, msg.encoding, msg.is_bigendian, msg.step,
                                 self._ros_limit)  # fmt: skip
            except MessageError as exc:
                raise MessageError(exc.reason, topic=topic) from None
            return image, {"frame_id": msg.header.frame_id, "encoding": msg.encoding}, msg.header.stamp
        if self._ros_type == COMPRESSED_IMAGE:
            cmsg = decode_compressed(data, topic)
            meta = {"frame_id": cmsg.header.frame_id, "format": cmsg.format}
            if not self.decode:
                return bytes(cmsg.data), meta, cmsg.header.stamp
            return _decode_jpeg(cmsg.data, self._ros_limit, topic), meta, cmsg.header.stamp
        assert self._ros_type == STRING
        text = decode_string(data, self._ros_limit, topic)
        if not self.parse_json:
            return text, {}, 0.0
        try:
            return json.loads(text), {}, 0.0
        except (ValueError, RecursionError) as exc:
            raise MessageError(f"text is not JSON ({type(exc).__name__}: {str(exc)[:80]})", topic=topic) from None

    def _ros_status(self, force: bool = False) -> None:
        now = time.monotonic()
        if (now < self._ros_next_status and not force) or self._ros_reader is None:
            return
        self._ros_next_status = now + _STATUS_EVERY
        counts = self._ros_reader.counters()
        for key in ("cache_full", "lost", "refused_writers"):
            self.stats.extra[f"ros2_{key}"] = counts[key]
        if counts["refused_writers"] > self._ros_refused:
            from ._dds import TYPE_POLICIES, policy_name

            self._ros_refused = counts["refused_writers"]
            policy = counts["refused_policy"]
            hint = " (a best-effort publisher: set qos='realtime')" if policy == 11 else ""
            if policy in TYPE_POLICIES:
                hint = f" (this source reads {self._ros_type})"
            self.logger.warning("node %r: a writer on %s was refused for %s%s; %d refused so far", self.name,
                                self._ros_topic, policy_name(policy), hint, self._ros_refused)  # fmt: skip


def _decode_jpeg(data: memoryview, limit: int, topic: str) -> np.ndarray:
    """Decode a JPEG to BGR (grayscale to H x W), checking its declared size before anything is allocated."""
    import simplejpeg

    raw = bytes(data)
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(raw)
        channels = 1 if colorspace == "Gray" else 3
        if height * width * channels > limit:
            raise MessageError(f"a {width} x {height} JPEG is larger than the {limit} bytes accepted", topic=topic)
        image: np.ndarray = simplejpeg.decode_jpeg(raw, colorspace="GRAY" if channels == 1 else "BGR")
    except ValueError as exc:
        raise MessageError(f"not a JPEG image this source can decode ({exc}); set decode=False to pass the "
                           "compressed bytes on", topic=topic) from None  # fmt: skip
    return image[:, :, 0] if channels == 1 else image
