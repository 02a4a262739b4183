"""Approximate-time matching for fusion nodes: slop, out-of-order arrival, counted drops, bounded queues."""

from __future__ import annotations

import pytest

from edgeflow.frame import Frame
from edgeflow.runtime.sync import Synchronizer


def f(ts: float, tag: str = "") -> Frame:
    return Frame(int(ts * 1000), ts, {"tag": tag}, None)


def stamps(matches: list[list[Frame]]) -> list[list[float]]:
    return [[fr.timestamp for fr in m] for m in matches]


def test_frames_within_slop_match_in_topic_order() -> None:
    s = Synchronizer(["cam", "lidar"], slop=0.05)
    assert s.add("lidar", f(1.00)) == []
    assert stamps(s.add("cam", f(1.02))) == [[1.02, 1.00]]
    assert s.dropped == 0


def test_frames_beyond_slop_never_match_and_are_counted() -> None:
    s = Synchronizer(["a", "b"], slop=0.01)
    s.add("a", f(1.00))
    assert s.add("b", f(1.50)) == []
    assert s.dropped == 1, "a@1.00 can never match anything at or after b@1.50"
    assert stamps(s.add("a", f(1.505))) == [[1.505, 1.50]]


def test_out_of_order_arrival_is_sorted_before_matching() -> None:
    s = Synchronizer(["a", "b"], slop=0.01)
    s.add("a", f(2.0))
    s.add("a", f(1.0))
    assert stamps(s.add("b", f(1.001))) == [[1.0, 1.001]]
    assert stamps(s.add("b", f(2.002))) == [[2.0, 2.002]]
    assert s.dropped == 0


def test_late_frame_older_than_a_made_match_is_dropped() -> None:
    s = Synchronizer(["a", "b"], slop=0.01)
    s.add("a", f(1.0))
    s.add("b", f(1.0))
    assert s.add("a", f(0.5)) == []
    assert s.dropped == 1


def test_nearest_candidate_is_chosen_and_skipped_ones_counted() -> None:
    s = Synchronizer(["cam", "imu"], slop=0.1)
    for ts in (1.00, 1.01, 1.02, 1.03):
        s.add("imu", f(ts))
    assert stamps(s.add("cam", f(1.03))) == [[1.03, 1.03]]
    assert s.dropped == 3


def test_queue_is_bounded_when_an_input_is_silent() -> None:
    s = Synchronizer(["a", "b"], slop=0.01, queue_size=5)
    for i in range(100):
        s.add("a", f(float(i)))
    assert s.pending() == 5
    assert s.dropped == 95


def test_three_topics() -> None:
    s = Synchronizer(["a", "b", "c"], slop=0.02)
    s.add("a", f(1.00))
    s.add("b", f(1.01))
    assert s.pending() == 2
    assert stamps(s.add("c", f(0.995))) == [[1.00, 1.01, 0.995]]
    assert s.pending() == 0


@pytest.mark.parametrize(("kwargs", "message"), [({"slop": -1}, "slop"), ({"slop": 0.1, "queue_size": 0}, "queue")])
def test_bad_settings(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Synchronizer(["a"], **kwargs)  # type: ignore[arg-type]


def test_a_stamp_from_the_future_or_a_clock_stepped_back_does_not_stop_fusion() -> None:
    import time as _time

    now = _time.time()
    sync = Synchronizer(["a", "b"], slop=0.05)
    assert sync.add("a", Frame(0, 1e300, {}, None)) == [], "a bogus future stamp is dropped, counted"
    assert (sync.dropped, sync.clock_jumps) == (1, 1)
    matches = sync.add("a", Frame(1, now, {}, None)) + sync.add("b", Frame(2, now + 0.01, {}, None))
    assert [[f.frame_id for f in m] for m in matches] == [[1, 2]]
    # b's clock steps back by a minute: its frames are far older than the match just made on it.
    sync.add("b", Frame(3, now - 60, {}, None))
    assert sync.clock_jumps == 2
    matches = sync.add("a", Frame(4, now - 59.99, {}, None))
    assert [[f.frame_id for f in m] for m in matches] == [[4, 3]], "fusion goes on on the new time base"
