"""Cyclone DDS underneath: one participant per domain and process, raw-sample writers and readers, the QoS mapping.

Samples go through cyclonedds-python's C layer as serialized bytes (`ddspy_write` takes a buffer holding the
encapsulation header and the CDR, `ddspy_take` returns the same), so nothing is packed by the IDL machinery;
the IDL types in `_msgs` only name and describe the topics. Cyclone checks every sample against that
description on write and on receipt, before Python sees it.

QoS (the ROS 2 profiles from rmw/qos_profiles.h):

==========  =========================================  ===============================================
EdgeFlow    writer                                     reader
==========  =========================================  ===============================================
realtime    best effort, keep last 5, volatile         best effort, keep all up to 5 samples, volatile
            (= rmw_qos_profile_sensor_data)            (matches sensor-data and default publishers)
durable     reliable, keep all up to 10, volatile      reliable, keep all up to 10 samples, volatile
            (matches what rmw_qos_profile_default      (matches reliable publishers only, as in ROS 2)
            subscribers ask for)
==========  =========================================  ===============================================

Histories keep all up to the depth instead of keeping the last: a keep-last history replaces samples
without telling anyone (for a reliable writer, even those a slow reader has not acknowledged), whereas a
full keep-all history counts every best-effort sample it refuses (sample_rejected), and holds reliable ones
back at the writer until there is room. Either way a drop is counted.
"""

from __future__ import annotations

import threading
from typing import Any

from cyclonedds._clayer import ddspy_take, ddspy_write
from cyclonedds.core import (
    DDSException,
    Entity,
    InstanceState,
    Policy,
    Qos,
    ReadCondition,
    SampleState,
    ViewState,
    WaitSet,
)
from cyclonedds.domain import DomainParticipant
from cyclonedds.pub import DataWriter
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic
from cyclonedds.util import duration

from ._msgs import IDL_TYPES
from ._names import dds_topic
from .errors import DdsError, Ros2ConfigurationError

__all__ = ["Domain", "RawReader", "RawWriter", "acquire", "policy_name", "reader_qos", "release", "writer_qos"]

SENSOR_DATA_DEPTH = 5
DEFAULT_DEPTH = 10
# How long a reliable write may wait for room in the writer's history. cyclonedds-python holds the GIL
# through the write, so this is short: a writer kept waiting retries after sleeping (RawWriter.write).
_MAX_BLOCKING = duration(milliseconds=1)
_MASK = SampleState.Any | ViewState.Any | InstanceState.Any
_RETCODE_TIMEOUT = -10
# The ids of dds_qos_policy_id_t that a refused match names.
_POLICIES = {2: "DURABILITY", 4: "DEADLINE", 8: "LIVELINESS", 11: "RELIABILITY", 12: "DESTINATION_ORDER",
             13: "HISTORY", 23: "PROPERTY", 24: "TYPE_CONSISTENCY (another type on this topic)",
             25: "DATA_REPRESENTATION"}  # fmt: skip
TYPE_POLICIES = frozenset({24, 25})


def policy_name(policy_id: int) -> str:
    """Name a QoS policy id the way the DDS specification does."""
    return _POLICIES.get(policy_id, f"policy {policy_id}")


def _delete(entity: Any) -> None:
    # cyclonedds-python deletes entities when they are garbage-collected; here they go when we say so.
    ref = getattr(entity, "_ref", None)
    if ref is not None and Entity._entities.pop(ref, None) is not None:
        entity._delete(ref)


def writer_qos(qos: str, depth: int | None) -> Qos:
    """The writer QoS of an EdgeFlow link kind (see the module docstring)."""
    xcdr1 = Policy.DataRepresentation(use_cdrv0_representation=True)
    if qos == "durable":
        # Keep all, bounded: a reliable keep-last writer replaces what a slow reader has not acknowledged yet,
        # and nobody is told (Cyclone reports no sample_lost for it). A full history makes the writer wait.
        n = depth or DEFAULT_DEPTH
        return Qos(Policy.Reliability.Reliable(_MAX_BLOCKING), Policy.History.KeepAll,
                   Policy.ResourceLimits(max_samples=n, max_instances=1, max_samples_per_instance=n),
                   Policy.Durability.Volatile, xcdr1)  # fmt: skip
    return Qos(Policy.Reliability.BestEffort, Policy.History.KeepLast(depth or SENSOR_DATA_DEPTH),
               Policy.Durability.Volatile, xcdr1)  # fmt: skip


def reader_qos(qos: str, depth: int | None) -> Qos:
    """The reader QoS of an EdgeFlow link kind: keep all, bounded, so that every drop is counted."""
    n = depth or (DEFAULT_DEPTH if qos == "durable" else SENSOR_DATA_DEPTH)
    reliability = Policy.Reliability.Reliable(duration(milliseconds=100)) if qos == "durable" else (
        Policy.Reliability.BestEffort)  # fmt: skip
    return Qos(reliability, Policy.History.KeepAll,
               Policy.ResourceLimits(max_samples=n, max_instances=1, max_samples_per_instance=n),
               Policy.Durability.Volatile,
               # Final types look the same in XCDR1 and XCDR2: take either, as ROS 2 publishers may use both.
               Policy.DataRepresentation(use_cdrv0_representation=True, use_xcdrv2_representation=True))  # fmt: skip


class Domain:
    """One DDS participant on one domain, shared by every reader and writer of this process on that domain."""

    def __init__(self, domain_id: int) -> None:
        self.domain_id = domain_id
        try:
            # What rmw_cyclonedds_cpp puts in a participant's user data; ROS 2 tools read it.
            self.participant = DomainParticipant(domain_id, qos=Qos(Policy.Userdata(b"enclave=/;")))
        except DDSException as exc:
            raise DdsError(
                f"Cyclone DDS can't join domain {domain_id}: {exc}; check CYCLONEDDS_URI (a configured network "
                "interface must exist) and that the domain's UDP ports are free"
            ) from exc
        self.topics: dict[str, tuple[str, Topic[Any]]] = {}
        self.users = 0

    def topic(self, ros_name: str, msg_type: str) -> Topic[Any]:
        """Return the DDS topic of `ros_name` carrying `msg_type`, created once per participant; under _create_lock."""
        name = dds_topic(ros_name)
        known = self.topics.get(name)
        if known is not None:
            if known[0] != msg_type:
                raise Ros2ConfigurationError(
                    f"ROS 2 topic {ros_name} is already used as {known[0]} in this process; one topic has one type"
                )
            return known[1]
        try:
            topic: Topic[Any] = Topic(self.participant, name, IDL_TYPES[msg_type])
        except DDSException as exc:
            raise DdsError(f"Cyclone DDS can't create topic {name} of {msg_type}: {exc}") from exc
        self.topics[name] = (msg_type, topic)
        return topic


_lock = threading.Lock()
_domains: dict[int, Domain] = {}
# cyclonedds-python builds an IDL type's description when its first topic is made, and that is not
# thread-safe: sources configured on several threads at once got "Non specific error" from Topic().
# Entities are made one at a time (a few per node, at start-up).
_create_lock = threading.Lock()


def acquire(domain_id: int) -> Domain:
    """Return this process's participant on `domain_id`, creating it on first use."""
    with _lock:
        domain = _domains.get(domain_id)
        if domain is None:
            domain = _domains[domain_id] = Domain(domain_id)
        domain.users += 1
        return domain


def release(domain: Domain) -> None:
    """Give back what `acquire` returned; the last user deletes the participant and everything in it."""
    with _lock:
        domain.users -= 1
        if domain.users > 0 or _domains.get(domain.domain_id) is not domain:
            return
        del _domains[domain.domain_id]
    for _, topic in domain.topics.values():
        _delete(topic)
    _delete(domain.participant)


class RawWriter:
    """A DDS writer of serialized samples (encapsulation header included) on one ROS 2 topic."""

    def __init__(self, domain: Domain, ros_name: str, msg_type: str, qos: str, depth: int | None) -> None:
        self.ros_name = ros_name
        with _create_lock:
            topic = domain.topic(ros_name, msg_type)
            try:
                self.writer: DataWriter[Any] = DataWriter(domain.participant, topic, qos=writer_qos(qos, depth))
            except DDSException as exc:
                raise DdsError(f"Cyclone DDS can't create a writer on {ros_name}: {exc}") from exc
        self._ref = self.writer._ref
        self.reliable = qos == "durable"

    def write(self, sample: bytes | bytearray | memoryview, give_up: threading.Event | None = None) -> bool:
        """Write one sample; a full reliable history is retried until `give_up` is set (then False).

        Each try holds the GIL for at most the 1 ms blocking time; between tries the thread sleeps without it,
        so a slow reliable reader slows this writer, not the rest of the process.
        """
        delay = 0.001
        while True:
            ret = ddspy_write(self._ref, sample)
            if ret != _RETCODE_TIMEOUT:
                break
            if give_up is None or give_up.wait(delay):
                return False
            delay = min(delay * 2, 0.02)
        if ret < 0:
            raise DdsError(f"Cyclone DDS refused a sample on {self.ros_name} (return code {ret})")
        return True

    def matched(self) -> int:
        """How many readers are matched now."""
        return int(self.writer.get_publication_matched_status().current_count)

    def refused(self) -> tuple[int, int]:
        """Readers refused so far for an incompatible QoS or type, and the last policy that refused one."""
        status = self.writer.get_offered_incompatible_qos_status()
        return int(status.total_count), int(status.last_policy_id)

    def close(self, linger: float = 0.0) -> bool:
        """Delete the writer; a reliable one first waits up to `linger` seconds for its readers' acknowledgements.

        Returns False when a reliable reader had not acknowledged everything by then.
        """
        acked = True
        if self.reliable and linger > 0:
            # dds_wait_for_acks through ctypes (without the GIL). Not DataWriter.wait_for_acks: in 11.0.1 it
            # raises AttributeError on a timeout (it compares with `Exception.DDS_RETCODE_TIMEOUT`).
            acked = self.writer._wait_for_acks(self._ref, duration(seconds=linger)) == 0
        _delete(self.writer)
        return acked


class RawReader:
    """A DDS reader of serialized samples on one ROS 2 topic, with a bounded wait for the next ones."""

    def __init__(self, domain: Domain, ros_name: str, msg_type: str, qos: str, depth: int | None) -> None:
        self.ros_name = ros_name
        self.depth = depth or (DEFAULT_DEPTH if qos == "durable" else SENSOR_DATA_DEPTH)
        with _create_lock:
            topic = domain.topic(ros_name, msg_type)
            try:
                self.reader: DataReader[Any] = DataReader(domain.participant, topic, qos=reader_qos(qos, depth))
                self.condition = ReadCondition(self.reader, _MASK)
                self.waitset = WaitSet(domain.participant)
                self.waitset.attach(self.condition)
            except DDSException as exc:
                raise DdsError(f"Cyclone DDS can't create a reader on {ros_name}: {exc}") from exc
        self._ref = self.reader._ref

    def take(self, timeout: float) -> list[tuple[bytes, Any]]:
        """Take what has arrived, waiting up to `timeout` seconds for something: (sample bytes, SampleInfo) pairs."""
        got = ddspy_take(self._ref, _MASK, self.depth)
        if isinstance(got, list) and not got:
            self.waitset.wait(duration(seconds=timeout))  # through ctypes: the GIL is released while waiting
            got = ddspy_take(self._ref, _MASK, self.depth)
        if isinstance(got, int):
            raise DdsError(f"Cyclone DDS failed to take samples on {self.ros_name} (return code {got})")
        return got

    def counters(self) -> dict[str, int]:
        """DDS's own counts: samples refused by the full history, lost on the way, writers refused and why."""
        refused = self.reader.get_requested_incompatible_qos_status()
        return {
            "cache_full": int(self.reader.get_sample_rejected_status().total_count),
            "lost": int(self.reader.get_sample_lost_status().total_count),
            "refused_writers": int(refused.total_count),
            "refused_policy": int(refused.last_policy_id),
        }

    def close(self) -> None:
        """Delete the reader and its wait set."""
        self.waitset.detach(self.condition)
        for entity in (self.waitset, self.condition, self.reader):
            _delete(entity)
