"""Where each gateway takes frames (edgeflow.runtime.addresses), with no network."""

from __future__ import annotations

import pytest

from edgeflow import EdgeApp
from edgeflow.nodes import GatewayNode
from edgeflow.runtime.addresses import gateway_addresses, gateway_env


def _app(*gateways: tuple[str, dict[str, object]]) -> EdgeApp:
    app = EdgeApp("sites", broker="redis")
    for name, params in gateways:

        @app.node(name=name, type="gateway", **params)
        class Gw(GatewayNode):
            pass

    return app


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("GATEWAY_HOST", "GATEWAY_TCP_PORT", "GATEWAY_NORTH_TCP_PORT", "GATEWAY_SOUTH_1_TCP_PORT",
                "GATEWAY_NORTH_HOST", "GATEWAY_SOUTH_1_HOST", "GATEWAY_GW_TCP_PORT"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)


def test_names_become_variable_prefixes() -> None:
    assert gateway_env("south-1") == "GATEWAY_SOUTH_1"
    assert gateway_env("site.a") == "GATEWAY_SITE_A"


def test_one_gateway_keeps_the_seeds_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_HOST", "gw.local")
    monkeypatch.setenv("GATEWAY_TCP_PORT", "9000")
    (gw,) = gateway_addresses(_app(("gw", {}))).values()
    assert (gw.host, gw.port, gw.bind, gw.source) == ("gw.local", 9000, "0.0.0.0", "GATEWAY_TCP_PORT")
    (gw,) = gateway_addresses(_app(("gw", {"tcp_port": 7000}))).values()
    assert gw.port == 7000, "the node's tcp_port wins over GATEWAY_TCP_PORT, as before"


def test_several_gateways_get_distinct_ports_every_process_agrees_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_TCP_PORT", "9000")
    app = _app(("north", {}), ("mid", {"tcp_port": 9001}), ("south-1", {}))
    got = gateway_addresses(app)
    assert {n: a.port for n, a in got.items()} == {"north": 9000, "mid": 9001, "south-1": 9002}
    assert "GATEWAY_TCP_PORT 9000 + 2" in got["south-1"].source and got["south-1"].setting == "GATEWAY_SOUTH_1_TCP_PORT"
    assert gateway_addresses(app) == got


def test_per_gateway_settings_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_HOST", "fallback")
    monkeypatch.setenv("GATEWAY_SOUTH_1_TCP_PORT", "7100")
    monkeypatch.setenv("GATEWAY_SOUTH_1_HOST", "south.site")
    app = _app(("north", {"tcp_host": "10.0.0.5", "tcp_port": 7000}), ("south-1", {"tcp_port": 7001}))
    got = gateway_addresses(app)
    assert (got["north"].host, got["north"].port, got["north"].bind) == ("10.0.0.5", 7000, "10.0.0.5")
    assert (got["south-1"].host, got["south-1"].port, got["south-1"].bind) == ("south.site", 7100, "0.0.0.0")
