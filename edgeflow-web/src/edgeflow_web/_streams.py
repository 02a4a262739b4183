"""Per-topic frame slots: timestamp order, the jitter buffer, rates, and one JPEG per frame for every viewer.

Threads and memory, in short:

* the gateway's intake threads call `TopicStream.put`, which only swaps references under a short lock;
* one encoder thread per topic, started by the first viewer, JPEG-encodes the newest frame while anyone
  watches and sleeps otherwise, so a frame is encoded at most once whatever the number of viewers;
* the encoded part goes to the server's event loop through a single-slot mailbox; viewers there read the
  newest part and wait on an event that is replaced at each part, so a slow viewer skips frames and nothing
  queues per viewer.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from ._jpeg import describe_data, encode_jpeg, is_image

if TYPE_CHECKING:
    from edgeflow.frame import Frame

__all__ = ["BOUNDARY", "StreamHub", "TopicStream"]

log = logging.getLogger("edgeflow.web")
BOUNDARY = "edgeflowframe"
_RATE_WINDOW = 2.0
# At most this many frames wait in a jitter buffer; past it the oldest leaves early rather than memory growing.
_MAX_BUFFERED = 64
# Topics a hub keeps; frames of further ones are dropped (the gateway's intake only takes linked topics anyway).
MAX_TOPICS = 256


class _Rate:
    """Events per second over a sliding window; the caller holds the lock."""

    def __init__(self) -> None:
        self._times: deque[float] = deque(maxlen=1024)

    def hit(self, now: float) -> None:
        self._times.append(now)

    def per_second(self, now: float) -> float:
        times = self._times
        while times and now - times[0] > _RATE_WINDOW:
            times.popleft()
        if len(times) < 2 or now - times[-1] > _RATE_WINDOW:
            return 0.0
        return (len(times) - 1) / max(times[-1] - times[0], 1e-6)


class TopicStream:
    """The newest frame of one topic and its JPEG, shared by every viewer of that topic."""

    def __init__(self, topic: str, *, buffer_delay: float = 0.0, quality: int = 80, max_fps: float = 0.0) -> None:
        self.topic = topic
        self.buffer_delay = max(0.0, float(buffer_delay))
        self.quality = quality
        self._period = 1.0 / max_fps if max_fps > 0 else 0.0
        self._capped = False  # the encoder is waiting for its next JPEG to be due, with a frame to encode already
        self._cond = threading.Condition()
        # Intake side, guarded by _cond.
        # The jitter buffer: frames by timestamp (to release in order) and by arrival (to know when one is due).
        self._heap: list[tuple[float, int, Frame]] = []
        self._arrivals: deque[tuple[float, int, float]] = deque()  # arrival, id, timestamp
        self._released_ids: set[int] = set()
        self._tiebreak = itertools.count()
        self._latest: Frame | None = None
        self._seq = 0
        self._released_ts = -math.inf
        self._in_rate = _Rate()
        self._out_rate = _Rate()
        self.last_frame: Frame | None = None
        self.last_arrival: float | None = None
        self.received = 0
        self.late = 0
        self.clock_jumps = 0
        self._reorder_window = max(1.0, 4 * self.buffer_delay)
        self.encoded = 0
        self.encode_failed = 0
        self.encode_ms: deque[float] = deque(maxlen=256)
        self._viewers = 0
        self._closed = False
        self._thread: threading.Thread | None = None
        self._mailbox: tuple[int, bytes] | None = None
        # Loop side: only touched on the server's event loop.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._part: tuple[int, bytes] = (0, b"")
        self._event: asyncio.Event | None = None

    # Intake ---------------------------------------------------------------------------------------------
    def put(self, frame: Frame) -> None:
        """Take a frame from the intake thread; never blocks beyond a short lock."""
        now = time.monotonic()
        image = is_image(frame.data)
        with self._cond:
            self.received += 1
            self.last_frame = frame
            self.last_arrival = time.time()
            self._in_rate.hit(now)
            if not image:
                return
            if self.buffer_delay > 0:
                n = next(self._tiebreak)
                heapq.heappush(self._heap, (frame.timestamp, n, frame))
                self._arrivals.append((now, n, frame.timestamp))
                self._release_due(now)
            else:
                self._release(frame)
            if self._viewers and not self._capped:
                self._cond.notify()  # a capped encoder sleeps until its next JPEG is due: no wake-up per frame

    def _release(self, frame: Frame) -> None:
        # A frame a little older than one already shown (replicas finishing out of order) would make the video
        # jump back: drop it. Much older means the clock jumped (a producer's clock stepped back, or one frame
        # carried a bogus future stamp): timestamps are data, so arrival order wins and the baseline moves.
        behind = self._released_ts - frame.timestamp
        if behind > 0:
            if behind <= self._reorder_window:
                self.late += 1
                return
            self.clock_jumps += 1
        self._released_ts = frame.timestamp
        self._latest = frame
        self._seq += 1

    def _release_due(self, now: float) -> None:
        # A frame is due `buffer_delay` after it arrived (whatever its timestamp says); it goes out with every frame
        # stamped no later than it, in timestamp order. A bogus or stepped-back timestamp can't hold the others.
        heap, arrivals, done = self._heap, self._arrivals, self._released_ids
        while arrivals and (arrivals[0][0] + self.buffer_delay <= now or len(heap) > _MAX_BUFFERED):
            _, n, ts = arrivals.popleft()
            if n in done:
                done.discard(n)
                continue
            while heap and heap[0][0] <= ts:
                _, m, frame = heapq.heappop(heap)
                if m != n:
                    done.add(m)
                self._release(frame)

    def _next_due(self, now: float) -> float:
        if not self._arrivals:
            return 1.0
        return min(1.0, max(0.0, self._arrivals[0][0] + self.buffer_delay - now))

    # Encoder --------------------------------------------------------------------------------------------
    def _encode_loop(self) -> None:
        encoded_seq = 0
        next_at = 0.0
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    now = time.monotonic()
                    self._release_due(now)
                    if self._viewers and self._seq != encoded_seq and self._latest is not None:
                        if now >= next_at:
                            break
                        # Capped: wait, then take whatever is newest by then (never a queue of old frames).
                        self._capped = True
                        self._cond.wait(next_at - now)
                        self._capped = False
                        continue
                    self._cond.wait(self._next_due(now))
                frame, encoded_seq = self._latest, self._seq
                next_at = now + self._period
            t0 = time.perf_counter()
            try:
                jpeg = encode_jpeg(frame.data, self.quality)
            except Exception as exc:  # a bad frame must not kill the topic's video
                with self._cond:
                    self.encode_failed += 1
                    first = self.encode_failed == 1
                if first:
                    log.warning("web: can't JPEG-encode a frame of topic %r: %s", self.topic, exc)
                continue
            ms = (time.perf_counter() - t0) * 1000.0
            head = (
                f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n"
                f"X-Frame-Id: {frame.frame_id}\r\nX-Timestamp: {frame.timestamp:.6f}\r\n\r\n"
            ).encode()
            with self._cond:
                self.encoded += 1
                self.encode_ms.append(ms)
                self._out_rate.hit(time.monotonic())
                first = self._mailbox is None
                self._mailbox = (encoded_seq, head + jpeg + b"\r\n")
                loop = self._loop
            if first and loop is not None:
                try:
                    loop.call_soon_threadsafe(self._deliver)
                except RuntimeError:  # the loop closed while shutting down
                    return

    def _deliver(self) -> None:
        with self._cond:
            mail, self._mailbox = self._mailbox, None
        if mail is None:
            return
        self._part = mail
        self._wake_viewers()

    def _wake_viewers(self) -> None:
        event, self._event = self._event, asyncio.Event()
        if event is not None:
            event.set()

    # Viewers (on the event loop) ------------------------------------------------------------------------
    def attach(self) -> None:
        """Count one more viewer; starts the encoder on first use."""
        self._loop = asyncio.get_running_loop()
        if self._event is None:
            self._event = asyncio.Event()
        with self._cond:
            self._viewers += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._encode_loop, name=f"edgeflow-web-jpeg-{self.topic}")
                self._thread.daemon = True
                self._thread.start()
            self._cond.notify()

    def detach(self) -> None:
        """Count one viewer less."""
        with self._cond:
            self._viewers -= 1

    @property
    def part(self) -> tuple[int, bytes]:
        """The newest multipart part (sequence number, bytes); read it on the event loop."""
        return self._part

    @property
    def closed(self) -> bool:
        """True once the stream shuts down."""
        return self._closed

    async def wait_part(self, timeout: float) -> None:
        """Wait until a newer part is available, or `timeout` seconds."""
        assert self._event is not None
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            pass

    # Status ---------------------------------------------------------------------------------------------
    @property
    def viewers(self) -> int:
        """How many viewers watch now."""
        return self._viewers

    def is_image_topic(self) -> bool | None:
        """True when the newest frame is an image, False when it is other data, None before any frame."""
        frame = self.last_frame
        return None if frame is None else is_image(frame.data)

    def fps(self) -> float:
        """Frames per second reaching the gateway on this topic."""
        with self._cond:
            return round(self._in_rate.per_second(time.monotonic()), 2)

    def status(self) -> dict[str, Any]:
        """Return the topic's newest frame's meta, its data described, and the stream's counters."""
        now = time.monotonic()
        with self._cond:
            frame = self.last_frame
            out: dict[str, Any] = {
                "fps": round(self._in_rate.per_second(now), 2),
                "stream_fps": round(self._out_rate.per_second(now), 2),
                "received": self.received,
                "late": self.late,
                "clock_jumps": self.clock_jumps,
                "buffered": len(self._heap),
                "encoded": self.encoded,
                "encode_ms": round(sorted(self.encode_ms)[len(self.encode_ms) // 2], 3) if self.encode_ms else None,
                "viewers": self._viewers,
                "last_arrival": self.last_arrival,
            }
        if frame is not None:
            out.update(frame_id=frame.frame_id, timestamp=frame.timestamp, meta=frame.meta)
            out["data"] = describe_data(frame.data)
        return out

    def close(self) -> None:
        """Stop the encoder and end every viewer's stream."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._wake_viewers)
            except RuntimeError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=1.0)


class StreamHub:
    """Every topic's stream, created on first frame or first mention."""

    def __init__(
        self, *, buffer_delay: float = 0.0, quality: int = 80, max_fps: float = 0.0, max_topics: int = MAX_TOPICS
    ) -> None:
        self.buffer_delay = buffer_delay
        self.quality = quality
        self.max_fps = max_fps
        self.max_topics = max_topics
        #: Frames dropped because their topic would have been one too many.
        self.dropped = 0
        self._streams: dict[str, TopicStream] = {}
        self._lock = threading.Lock()

    def stream(self, topic: str) -> TopicStream:
        """Return the stream of `topic`, creating it if needed."""
        stream = self._streams.get(topic)
        if stream is None:
            with self._lock:
                stream = self._streams.get(topic)
                if stream is None:
                    stream = TopicStream(
                        topic, buffer_delay=self.buffer_delay, quality=self.quality, max_fps=self.max_fps
                    )
                    self._streams[topic] = stream
        return stream

    def get(self, topic: str) -> TopicStream | None:
        """Return the stream of `topic` if it exists."""
        return self._streams.get(topic)

    def put(self, topic: str, frame: Frame) -> None:
        """Hand a frame to its topic's stream; a frame of a topic beyond `max_topics` is dropped, counted."""
        stream = self._streams.get(topic)
        if stream is None:
            with self._lock:
                full = topic not in self._streams and len(self._streams) >= self.max_topics
                if full:
                    self.dropped += 1
            if full:
                if self.dropped == 1:
                    log.warning("web: more than %d topics; frames of further ones are dropped (counted)",
                                self.max_topics)  # fmt: skip
                return
            stream = self.stream(topic)
        stream.put(frame)

    def names(self) -> list[str]:
        """Return the topics seen so far, in order of first appearance."""
        return list(self._streams)

    def close(self) -> None:
        """Close every stream."""
        for stream in list(self._streams.values()):
            stream.close()
