"""`Ros2Interface`: a gateway interface that publishes EdgeFlow topics as ROS 2 topics over DDS.

The gateway's intake threads call `on_frame`, several at once; it only puts the frame into its topic's
single slot (the newest wins, an overwritten frame is counted as dropped) and wakes the topic's writer
thread, which builds the message and writes it. A slow DDS reader therefore never slows the intake.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeflow.errors import EdgeFlowError
from edgeflow.frame import Frame
from edgeflow.nodes.gateway.interfaces import GatewayInterface

from ._cdr import compressed_prefix, encode_string, image_prefix, stamp_parts
from ._images import ENCODINGS, check_encoding, choose_encoding, write_pixels
from ._log import Throttled
from ._names import COMPRESSED_IMAGE, IMAGE, STRING, check_depth, check_qos, ros_topic
from ._names import domain_id as resolve_domain
from .errors import MessageError, Ros2ConfigurationError

if TYPE_CHECKING:
    from ._dds import Domain, RawWriter

__all__ = ["Ros2Interface"]

log = logging.getLogger("edgeflow.ros2")
_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_STATUS_EVERY = 1.0  # seconds between looks at a writer's DDS status (refused readers)


@dataclass(eq=False)
class _Route:
    """One EdgeFlow topic published as one ROS 2 topic: its slot, its writer thread and its counters."""

    topic: str
    ros_name: str
    frame_id: str | None
    encoding: str | None
    qos: str
    depth: int | None
    cond: threading.Condition = field(default_factory=threading.Condition)
    slot: Frame | None = None
    #: Set when a frame arrives or the interface stops: a write waiting for a slow reliable reader gives up.
    wake: threading.Event = field(default_factory=threading.Event)
    writer: RawWriter | None = None
    msg_type: str | None = None
    buf: bytearray = field(default_factory=bytearray)
    thread: threading.Thread | None = None
    refused: int = 0
    next_status: float = 0.0
    counts: dict[str, int] = field(
        default_factory=lambda: {"received": 0, "published": 0, "dropped": 0, "unwatched": 0, "failed": 0}
    )


def _per_topic(value: Any, topics: Sequence[str], what: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        return dict.fromkeys(topics, value)
    unknown = sorted(set(value) - set(topics))
    if unknown:
        raise Ros2ConfigurationError(f"Ros2Interface: {what} names {unknown}, which are not in topics {list(topics)}")
    return dict(value)


class Ros2Interface(GatewayInterface):
    """Publishes gateway topics as ROS 2 topics: images as sensor_msgs/Image or CompressedImage, JSON as String.

    Args:
        topics: EdgeFlow topic (source node) -> ROS 2 topic, e.g. {"cam": "/camera/image_raw"}; a list of
            names publishes each under "/<name>".
        frame_ids: header.frame_id per topic (default: the frame's meta "frame_id", else the topic's name).
        encodings: per topic, "jpeg" for sensor_msgs/CompressedImage, or a raw encoding (bgr8, rgb8, mono8,
            16UC1, ...) that the arrays must fit; default: the frame's meta "encoding" when it fits, else the
            obvious one (H x W x 3 uint8 is bgr8, H x W uint8 mono8, H x W uint16 16UC1, ...).
        qos: "realtime" (best effort, like ROS 2's sensor-data profile) or "durable" (reliable, like its
            default profile), for all topics or per topic.
        depth: DDS history depth (default 5 for realtime, 10 for durable, as the ROS 2 profiles).
        jpeg_quality: quality of the JPEGs made for topics whose encoding is "jpeg", 1..100.
        domain_id: DDS domain (default ROS_DOMAIN_ID, else 0).
    """

    def __init__(
        self,
        topics: Mapping[str, str] | Sequence[str],
        *,
        frame_ids: Mapping[str, str] | None = None,
        encodings: Mapping[str, str] | None = None,
        qos: str | Mapping[str, str] = "realtime",
        depth: int | None = None,
        jpeg_quality: int = 80,
        domain_id: int | None = None,
    ) -> None:
        if isinstance(topics, str) or not isinstance(topics, (Mapping, Sequence)) or not topics:
            raise Ros2ConfigurationError(
                f"Ros2Interface: topics must map EdgeFlow topics to ROS 2 topics, e.g. {{'cam': '/camera/image_raw'}}, "
                f"got {topics!r}"
            )
        names = dict(topics) if isinstance(topics, Mapping) else {t: t for t in topics}
        ef_topics = list(names)
        frame_id_of = _per_topic(frame_ids or {}, ef_topics, "frame_ids")
        encoding_of = _per_topic(encodings or {}, ef_topics, "encodings")
        qos_of = _per_topic(qos, ef_topics, "qos")
        if not isinstance(jpeg_quality, int) or isinstance(jpeg_quality, bool) or not 1 <= jpeg_quality <= 100:
            raise Ros2ConfigurationError(
                f"Ros2Interface: jpeg_quality must be an int from 1 to 100, got {jpeg_quality!r}"
            )
        self.depth = check_depth(depth, "Ros2Interface")
        self.jpeg_quality = jpeg_quality
        self.domain_id = domain_id if domain_id is None else resolve_domain(domain_id)
        self.routes: dict[str, _Route] = {}
        seen: dict[str, str] = {}
        for topic in ef_topics:
            ros_name = ros_topic(names[topic], f"Ros2Interface: the ROS 2 name of {topic!r}")
            if ros_name in seen:
                raise Ros2ConfigurationError(f"Ros2Interface: {seen[ros_name]!r} and {topic!r} both map to {ros_name}")
            seen[ros_name] = topic
            fid = frame_id_of.get(topic)
            if fid is not None and not isinstance(fid, str):
                raise Ros2ConfigurationError(f"Ros2Interface: frame_id of {topic!r} must be a string, got {fid!r}")
            enc = encoding_of.get(topic)
            if enc is not None:
                enc = check_encoding(enc, f"Ros2Interface: encoding of {topic!r}")
            self.routes[topic] = _Route(
                topic, ros_name, fid, enc, check_qos(qos_of[topic], f"Ros2Interface: {topic!r}"), self.depth
            )
        self._stop = threading.Event()
        self._domain: Domain | None = None
        self._problems = Throttled(log)

    # The gateway's side ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Join the DDS domain and start one writer thread per topic; writers appear with each topic's first frame."""
        from . import _dds

        gateway = getattr(self, "gateway", None)
        linked = getattr(gateway, "topics", None)
        if linked is not None:
            missing = [t for t in self.routes if t not in linked]
            if missing:
                raise Ros2ConfigurationError(
                    f"Ros2Interface: {missing} are not linked into gateway {gateway.name!r} (linked: {linked}); "  # type: ignore[union-attr]
                    "link them with app.link(name).to(gateway) or drop them from topics"
                )
        self._domain = _dds.acquire(resolve_domain(self.domain_id))
        self._stop.clear()
        self._sync_stats()
        for route in self.routes.values():
            route.thread = threading.Thread(
                target=self._supervise, args=(route,), name=f"edgeflow-ros2-{route.topic}", daemon=True
            )
            route.thread.start()
        log.info(
            "ros2: publishing %s on DDS domain %d",
            ", ".join(f"{r.topic} as {r.ros_name} ({r.qos})" for r in self.routes.values()),
            self._domain.domain_id,
        )

    def on_frame(self, topic: str, frame: Frame) -> None:
        """Put `frame` into its topic's slot for the writer thread; never blocks (the newest frame wins)."""
        route = self.routes.get(topic)
        if route is None:
            return  # a topic this interface was not asked to publish
        with route.cond:
            route.counts["received"] += 1
            if route.slot is not None:
                route.counts["dropped"] += 1
            route.slot = frame
            route.wake.set()  # under the lock: the writer clears it under the lock when it takes the frame
            route.cond.notify()

    def stop(self, timeout: float = 3.0) -> None:
        """Stop the writer threads, delete the writers and leave the domain."""
        from . import _dds

        self._stop.set()
        deadline = time.monotonic() + timeout
        for route in self.routes.values():
            route.wake.set()
            with route.cond:
                route.cond.notify_all()
        for route in self.routes.values():
            if route.thread is not None:
                route.thread.join(max(0.0, deadline - time.monotonic()))
            if route.writer is not None and (route.thread is None or not route.thread.is_alive()):
                # Durable: what was written reaches the readers before the participant goes, within the timeout.
                if not route.writer.close(linger=max(0.0, deadline - time.monotonic())):
                    log.warning("ros2: a reliable reader of %s had not acknowledged every message when the "
                                "interface stopped; the last ones may not reach it", route.ros_name)  # fmt: skip
                route.writer = None
            with route.cond:
                if route.slot is not None:  # taken in, never written: a drop like any other
                    route.slot = None
                    route.counts["dropped"] += 1
        if self._domain is not None:
            _dds.release(self._domain)
            self._domain = None
        self._sync_stats()

    def counters(self) -> dict[str, dict[str, int]]:
        """Per EdgeFlow topic: frames received, published, dropped (overwritten or timed out), unwatched, failed."""
        out = {}
        for topic, route in self.routes.items():
            with route.cond:
                out[topic] = dict(route.counts)
        return out

    # The writer threads -----------------------------------------------------------------------------------
    def _supervise(self, route: _Route) -> None:
        delay = 0.1
        while not self._stop.is_set():
            try:
                self._run(route)
                return
            except Exception as exc:  # a bug, not bad input: say so, and keep the topic alive
                log.error(
                    "ros2: writer of %s failed, restarting in %.1fs: %s", route.ros_name, delay, exc, exc_info=exc
                )
                if self._stop.wait(delay):
                    return
                delay = min(delay * 2, 5.0)

    def _run(self, route: _Route) -> None:
        while True:
            with route.cond:
                if route.slot is None and not self._stop.is_set():
                    route.cond.wait(_STATUS_EVERY)
                if self._stop.is_set():
                    return
                frame, route.slot = route.slot, None
                route.wake.clear()
            if frame is not None:
                self._count(route, self._publish(route, frame))
            self._check_status(route)
            self._sync_stats()

    @staticmethod
    def _count(route: _Route, key: str) -> None:
        with route.cond:  # on_frame counts under the same lock
            route.counts[key] += 1

    def _publish(self, route: _Route, frame: Frame) -> str:
        """Write one frame; return the counter it goes to."""
        try:
            msg_type = self._msg_type(route, frame.data)
            writer = self._writer(route, msg_type)
            if writer.matched() == 0:
                return "unwatched"  # nobody subscribes: no message is built that nobody would read
            # A durable topic's reader may keep the history full: wait for it until a newer frame comes.
            ok = writer.write(self._sample(route, msg_type, frame), give_up=route.wake)
        except EdgeFlowError as exc:
            what = f"ros2: frame {frame.frame_id} of {route.topic!r} not published on {route.ros_name}: {exc}"
            self._problems(f"{route.topic}:{type(exc).__name__}", what)
            return "failed"
        if not ok:
            what = f"ros2: a reliable reader of {route.ros_name} is slower than the frames; the newest wins"
            self._problems(f"{route.topic}:slow-reader", what, level=logging.INFO)
            return "dropped"
        return "published"

    def _msg_type(self, route: _Route, data: Any) -> str:
        if isinstance(data, np.ndarray):
            kind = COMPRESSED_IMAGE if route.encoding == "jpeg" else IMAGE
        elif isinstance(data, (bytes, bytearray, memoryview)):
            kind = COMPRESSED_IMAGE
        else:
            kind = STRING
        if route.msg_type is not None and kind != route.msg_type:
            raise MessageError(f"{route.ros_name} carries {route.msg_type}; this frame would be a {kind}")
        return kind

    def _writer(self, route: _Route, msg_type: str) -> RawWriter:
        if route.writer is None:
            from ._dds import RawWriter

            assert self._domain is not None
            route.writer = RawWriter(self._domain, route.ros_name, msg_type, route.qos, route.depth)
            route.msg_type = msg_type
        return route.writer

    def _frame_id(self, route: _Route, frame: Frame) -> str:
        if route.frame_id is not None:
            return route.frame_id
        meta_id = frame.meta.get("frame_id") if isinstance(frame.meta, dict) else None
        return meta_id if isinstance(meta_id, str) else route.topic

    def _buffer(self, route: _Route, prefix: bytes, data_len: int) -> memoryview:
        """The topic's reusable sample buffer with `prefix` in place and `data_len` bytes after it (padded to 4)."""
        total = len(prefix) + data_len
        size = total + (-total % 4)
        if len(route.buf) != size:
            route.buf = bytearray(size)  # Cyclone copies a sample as it is written, so the buffer is reused
        view = memoryview(route.buf)
        view[: len(prefix)] = prefix
        return view

    def _sample(self, route: _Route, msg_type: str, frame: Frame) -> memoryview | bytes:
        data = frame.data
        if msg_type == STRING:
            try:
                text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"), allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise MessageError(f"data of type {type(data).__name__} is not JSON: {exc}") from exc
            return encode_string(text)
        stamp = stamp_parts(frame.timestamp)
        frame_id = self._frame_id(route, frame)
        if msg_type == COMPRESSED_IMAGE:
            if isinstance(data, np.ndarray):
                blob: bytes | bytearray | memoryview = _encode_jpeg(data, self.jpeg_quality)
                fmt = "jpeg"
            else:
                blob, fmt = data, _compressed_format(data)
            prefix = compressed_prefix(stamp, frame_id, fmt, len(blob))
            view = self._buffer(route, prefix, len(blob))
            view[len(prefix) : len(prefix) + len(blob)] = memoryview(blob).cast("B")
            return view
        encoding = choose_encoding(data, route.encoding, frame.meta.get("encoding"))
        layout = ENCODINGS[encoding]
        height, width = data.shape[:2]
        step = width * layout.channels * layout.dtype.itemsize
        prefix = image_prefix(stamp, frame_id, height, width, encoding, step, step * height)
        view = self._buffer(route, prefix, step * height)
        write_pixels(data, encoding, view[len(prefix) : len(prefix) + step * height])
        return view

    def _check_status(self, route: _Route) -> None:
        now = time.monotonic()
        if route.writer is None or now < route.next_status:
            return
        route.next_status = now + _STATUS_EVERY
        refused, policy = route.writer.refused()
        if refused > route.refused:
            from ._dds import policy_name

            route.refused = refused
            hint = " (set qos='durable' for this topic, or make the reader best effort)" if policy == 11 else ""
            log.warning("ros2: a reader of %s was refused for %s%s; %d refused so far",
                        route.ros_name, policy_name(policy), hint, refused)  # fmt: skip

    def _sync_stats(self) -> None:
        stats = getattr(getattr(self, "gateway", None), "stats", None)
        if stats is None:
            return
        totals = {"published": 0, "dropped": 0, "failed": 0}
        for route in self.routes.values():
            for key in totals:
                totals[key] += route.counts[key]
        for key, value in totals.items():
            stats.extra[f"ros2_{key}"] = value


def _compressed_format(data: bytes | bytearray | memoryview) -> str:
    head = bytes(memoryview(data)[:8])
    if head.startswith(_JPEG_MAGIC):
        return "jpeg"
    if head.startswith(_PNG_MAGIC):
        return "png"
    raise MessageError(
        f"bytes starting {head.hex()} are neither JPEG nor PNG; send images as arrays, or JPEG/PNG bytes"
    )


def _encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    import simplejpeg

    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise MessageError(f"an array of shape {image.shape} and dtype {image.dtype} can't be JPEG-encoded")
    img = image if image.ndim == 3 else image[:, :, None]
    colorspace = {1: "GRAY", 3: "BGR", 4: "BGRA"}[img.shape[2]]
    return bytes(simplejpeg.encode_jpeg(np.ascontiguousarray(img), quality=quality, colorspace=colorspace))
