"""Redis Cluster URLs and key names (no network)."""

from __future__ import annotations

import pytest

from edgeflow import RedisBroker
from edgeflow.brokers.redis.keys import hash_tag, is_cluster_url, parse_cluster_url, pop_url_options
from edgeflow.config import redact_url
from edgeflow.errors import ConfigurationError


def test_a_cluster_url_names_its_nodes_credentials_and_options() -> None:
    got = parse_cluster_url("rediss+cluster://edge:s%40cret@10.0.0.1:7000,10.0.0.2,[::1]:7002/?ssl_cert_reqs=none")
    assert got.nodes == [("10.0.0.1", 7000), ("10.0.0.2", 6379), ("::1", 7002)]
    assert (got.tls, got.username, got.password, got.options) == (True, "edge", "s@cret", {"ssl_cert_reqs": "none"})
    assert parse_cluster_url("redis+cluster://h:1").tls is False
    assert is_cluster_url("REDIS+CLUSTER://h:1") and not is_cluster_url("redis://h:1/0")


@pytest.mark.parametrize(
    ("url", "why"),
    [("redis+cluster:///", "names no node"), ("redis+cluster://h:x", "not host:port"),
     ("redis+cluster://h:1/3", "database '3'"), ("redis://h:1", "not a Redis Cluster URL")],
)  # fmt: skip
def test_bad_cluster_urls_say_what_is_wrong(url: str, why: str) -> None:
    with pytest.raises(ConfigurationError, match=why):
        parse_cluster_url(url)


def test_passwords_in_cluster_urls_are_redacted() -> None:
    assert redact_url("redis+cluster://u:pw@h1:1,h2:2/") == "redis+cluster://u:***@h1:1,h2:2/"
    with pytest.raises(ConfigurationError) as info:
        parse_cluster_url("redis+cluster://u:pw@h1:x")
    assert "pw" not in str(info.value)


def test_the_brokers_own_url_options_are_taken_out_for_redis_py() -> None:
    assert pop_url_options("redis://h:1/0?wait_replicas=1&ssl_cert_reqs=none&wait_timeout=0.5") == (
        "redis://h:1/0?ssl_cert_reqs=none",
        {"wait_replicas": "1", "wait_timeout": "0.5"},
    )
    assert pop_url_options("redis://h:1/0?db=2") == ("redis://h:1/0?db=2", {})
    assert RedisBroker("redis+cluster://h:1/?wait_replicas=2&wait_timeout=0.25").wait_replicas == (2, 250)


def test_keys_of_a_topic_share_a_hash_tag_only_on_a_cluster() -> None:
    cluster = RedisBroker("redis+cluster://h:1")
    cluster.bind("robot")
    assert cluster.cluster and cluster.tag("cam") == hash_tag("robot", "cam") == "{robot/cam}"
    assert cluster.stream_key("cam", "durable", "jpeg80") == "ef:robot:dur:{robot/cam}~jpeg80"
    assert cluster.dead_key("det") == "ef:robot:dead:{robot/det}"
    single = RedisBroker("redis://h:1/0")
    single.bind("robot")
    assert not single.cluster and single.tag("cam") == "cam"
    assert single.stream_key("cam", "durable", "jpeg80") == "ef:robot:dur:cam~jpeg80"
