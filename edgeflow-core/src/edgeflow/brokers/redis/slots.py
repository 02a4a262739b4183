"""Reading on a Redis Cluster, where one XREADGROUP may name the streams of one slot only.

A reader's streams are its links' (each on its source topic's slot) and, on durable links, the target's replay
stream (on the target's slot). `SlotReads` hands the subscription a pipeline that takes its one XREADGROUP over
every stream and splits it by slot:

* The replay stream, written only when someone replays dead letters or the broker's log, is read without
  blocking, at most every SIDE_EVERY seconds, in the same pipeline (a cluster pipeline writes to every node before
  it reads a reply, so this costs no round trip of its own).
* The links' streams, when they share one slot (one input, or several topics that hash alike), are read as on one
  Redis: one blocking XREADGROUP in the pipeline.
* Links on several slots are read by one waiter thread per slot, each blocking on its own connection, so that a
  frame on any of them is handed over at once (one blocking read per slot in one pipeline would return only when
  the slowest did). A waiter reads one batch and waits until the subscription took it; what it read while the
  subscription was busy is its next read's. On a clean stop, what a waiter read last is released with the rest.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .subscription import RedisSubscription

__all__ = ["SIDE_EVERY", "SlotReads"]

#: Seconds between reads of the replay stream when it lives on another slot than the links.
SIDE_EVERY = 0.2


class SlotReads:
    """The reads of one subscription on a cluster, grouped by slot."""

    def __init__(self, sub: RedisSubscription) -> None:
        self.sub = sub
        client = sub.broker.client
        # A stream without a source is the target's replay stream: each entry names its own.
        streams = {key: "link" if stream.source else "side" for key, stream in sub._streams.items()}
        by_slot: dict[int, list[str]] = {}
        sides: set[int] = set()
        for key, kind in streams.items():
            slot = int(client.keyslot(key))
            by_slot.setdefault(slot, []).append(key)
            if kind == "side":
                sides.add(slot)
        # A slot with a link's stream is read as the links are; a slot of side streams alone, now and then.
        self.main = [keys for slot, keys in by_slot.items() if any(streams[k] == "link" for k in keys)]
        self.side = [keys for slot, keys in by_slot.items() if all(streams[k] == "side" for k in keys)]
        self._side_due = 0.0
        self._cond = threading.Condition()
        self._waiters: list[_Waiter] = []
        self._error: BaseException | None = None
        self._closed = False
        if len(self.main) > 1:
            self._waiters = [_Waiter(self, keys) for keys in self.main]

    @property
    def slots(self) -> int:
        """How many slots the links' streams are on (more than one: waiter threads read them)."""
        return len(self.main)

    def pipeline(self) -> _SlotPipeline:
        """A pipeline for one read: everything but XREADGROUP as the cluster pipeline does it."""
        return _SlotPipeline(self, self.sub.broker.client.pipeline(transaction=False))

    def close(self) -> None:
        """Stop the waiters (each within its blocking read's time)."""
        with self._cond:
            self._closed = True
        for w in self._waiters:
            w.want.set()
        for w in self._waiters:
            w.join(5.0)

    def collect(self, timeout: float, have_some: bool) -> list[Any]:
        """The waiters' replies: wait up to `timeout` for a first one, unless `have_some` already came."""
        waiters = self._waiters
        with self._cond:
            for w in waiters:
                if w.result is None and not w.want.is_set():
                    w.block_ms = max(1, int(timeout * 1000))
                    w.want.set()
            deadline = time.monotonic() + (0.0 if have_some else timeout)
            while not any(w.result is not None for w in waiters):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            out: list[Any] = []
            for w in waiters:
                got, w.result = w.result, None
                if isinstance(got, BaseException):
                    # Raised with the next read, before anything of it is sent: this read's acknowledgements and
                    # skip counts went through, and what the other waiters read is handed over now.
                    self._error = self._error or got
                elif got:
                    out.extend(got)
        return out

    def raise_pending(self) -> None:
        """Raise what a waiter met on its last read (the subscription translates it, as its own reads' errors)."""
        if self._error is not None:
            exc, self._error = self._error, None
            raise exc


class _Waiter(threading.Thread):
    """Blocks on one slot's streams for the subscription, one batch at a time."""

    def __init__(self, reads: SlotReads, keys: list[str]) -> None:
        super().__init__(name=f"edgeflow-read-{reads.sub.group}-{keys[0].rsplit(':', 1)[-1]}", daemon=True)
        self.reads = reads
        self.keys = keys
        self.want = threading.Event()
        self.block_ms = 200
        self.result: Any = None
        self.start()

    def run(self) -> None:
        reads = self.reads
        sub = reads.sub
        client = sub.broker.client
        while not reads._closed:
            if not self.want.wait(0.5) or reads._closed:
                continue  # close() may set `want` while a read is under way, before it is cleared
            got: Any
            try:
                got = client.xreadgroup(sub.group, sub.consumer, dict.fromkeys(self.keys, ">"), count=sub._batch,
                                        block=self.block_ms, noack=sub._noack)  # fmt: skip
            except Exception as exc:  # handed to the subscription's thread, which raises it with its next read
                got = exc
                time.sleep(0.05)  # a broken connection is not hammered: the subscription's backoff paces reads
            with reads._cond:
                self.result = got if got is not None else []
                self.want.clear()
                reads._cond.notify_all()


class _SlotPipeline:
    """A cluster pipeline whose XREADGROUP over the subscription's streams is split by slot."""

    def __init__(self, reads: SlotReads, pipe: Any) -> None:
        self._reads = reads
        self._pipe = pipe
        self._queued = 0  # read commands queued in the pipeline, at its end
        self._timeout = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        """Queue a command in the cluster pipeline (scripts go this way)."""
        return self._pipe.execute_command(*args, **kwargs)

    def xreadgroup(self, groupname: str, consumername: str, streams: dict[str, str], count: int, block: int | None,
                   noack: bool) -> _SlotPipeline:  # fmt: skip
        """Queue the subscription's read: side streams when due, then the links' slot if there is one."""
        reads = self._reads
        self._timeout = (block or 0) / 1000  # None: a poll, no BLOCK
        now = time.monotonic()
        if reads.side and now >= reads._side_due:
            reads._side_due = now + SIDE_EVERY
            for keys in reads.side:  # first: on a node that also serves the links, it must not wait behind them
                self._pipe.xreadgroup(groupname, consumername, dict.fromkeys(keys, ">"), count=count, noack=noack)
                self._queued += 1
        if len(reads.main) == 1:
            self._pipe.xreadgroup(groupname, consumername, dict.fromkeys(reads.main[0], ">"), count=count,
                                  block=block, noack=noack)  # fmt: skip
            self._queued += 1
        return self

    def execute(self) -> list[Any]:
        """Run the pipeline; its last reply is every slot's read, merged."""
        reads = self._reads
        reads.raise_pending()
        results = self._pipe.execute() if len(self._pipe) else []
        queued = self._queued
        replies: list[Any] = []
        for got in results[len(results) - queued :] if queued else []:
            replies.extend(got or [])
        if reads._waiters:
            replies.extend(reads.collect(self._timeout, bool(replies)))
        return [*(results[: len(results) - queued] if queued else results), replies]
