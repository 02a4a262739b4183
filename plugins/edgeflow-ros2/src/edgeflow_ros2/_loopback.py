"""A Cyclone DDS configuration that keeps DDS on this host: the `lo` interface, unicast discovery."""

from __future__ import annotations

from .errors import Ros2ConfigurationError

__all__ = ["loopback_config"]


def loopback_config(max_participants: int = 32) -> str:
    """Return a CYCLONEDDS_URI value for DDS on loopback only (tests, CI, one-host setups).

    Linux's `lo` has no multicast, so discovery goes by unicast to 127.0.0.1: each participant takes a
    participant index of its own (and the unicast ports that go with it), and announces itself to the ports
    of every index up to `max_participants - 1`. Processes on one host then find each other without any
    traffic leaving it.
    """
    if not isinstance(max_participants, int) or not 1 <= max_participants <= 120:
        raise Ros2ConfigurationError(f"max_participants must be an int from 1 to 120, got {max_participants!r}")
    return (
        '<CycloneDDS><Domain id="any">'
        '<General><Interfaces><NetworkInterface name="lo"/></Interfaces><AllowMulticast>false</AllowMulticast>'
        "</General><Discovery><ParticipantIndex>auto</ParticipantIndex>"
        f"<MaxAutoParticipantIndex>{max_participants - 1}</MaxAutoParticipantIndex>"
        '<Peers><Peer address="127.0.0.1"/></Peers></Discovery>'
        "</Domain></CycloneDDS>"
    )
