"""Where each gateway of an app takes frames over TCP, as every process of the app works it out alike.

For the gateway NAME (upper-cased, '-' and '.' as '_'), in this order:

* the port: `GATEWAY_<NAME>_TCP_PORT`, else the node's `tcp_port`, else `GATEWAY_TCP_PORT` (8080). An app with
  several gateways that leaves some of them unset gives each of those a port of its own: GATEWAY_TCP_PORT plus the
  gateway's place among the app's gateways (in the order they were declared, from 0), skipping ports set
  explicitly, so that `python main.py` runs them side by side and every process agrees;
* the host nodes connect to: `GATEWAY_<NAME>_HOST`, else the node's `tcp_host` (unless it is a wildcard such as
  0.0.0.0, which is where it listens), else `GATEWAY_HOST` (localhost);
* where the gateway listens: its `tcp_host`, else 0.0.0.0.

The seed's GATEWAY_HOST and GATEWAY_TCP_PORT keep meaning what they meant for an app with one gateway.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config import int_env, settings

if TYPE_CHECKING:
    from ..app import EdgeApp

__all__ = ["GatewayAddress", "gateway_addresses", "gateway_env"]

_WILDCARDS = {"", "0.0.0.0", "::", "[::]", "*"}


def gateway_env(name: str) -> str:
    """Return the `GATEWAY_<NAME>` prefix of the gateway `name`'s variables (`GATEWAY_<NAME>_TCP_PORT`, ...)."""
    return "GATEWAY_" + re.sub(r"[-.]", "_", name).upper()


@dataclass(frozen=True)
class GatewayAddress:
    """One gateway's TCP intake: where nodes connect, where it listens, and which setting chose the port."""

    host: str
    port: int
    bind: str
    #: How the port was chosen, for the log.
    source: str
    #: The setting that changes the port, for error messages ("set ... to another one").
    setting: str


def gateway_addresses(app: EdgeApp) -> dict[str, GatewayAddress]:
    """Return every gateway of `app` and its address."""
    gateways = [spec for spec in app.nodes.values() if spec.type == "gateway"]
    ports: dict[str, tuple[int, str, str]] = {}  # name -> (port, how it was chosen, the setting that changes it)
    for spec in gateways:
        var = gateway_env(spec.name) + "_TCP_PORT"
        if os.environ.get(var, "").strip():
            ports[spec.name] = (int_env(var, 0), var, var)
        elif "tcp_port" in spec.params:
            param = f"the tcp_port of the gateway node {spec.name!r}"
            ports[spec.name] = (int(spec.params["tcp_port"]), param, param)
    taken = {port for port, _, _ in ports.values()}
    base = settings.GATEWAY_TCP_PORT
    for i, spec in enumerate(gateways):
        if spec.name in ports:
            continue
        var = gateway_env(spec.name) + "_TCP_PORT"
        if len(gateways) == 1:
            ports[spec.name] = (base, "GATEWAY_TCP_PORT", f"GATEWAY_TCP_PORT or {var}")
            continue
        port = base + i
        while port in taken:
            port += 1
        taken.add(port)
        how = f"GATEWAY_TCP_PORT {base} + {port - base}: gateway {i + 1} of the app's {len(gateways)}; {var} sets it"
        ports[spec.name] = (port, how, var)
    out: dict[str, GatewayAddress] = {}
    for spec in gateways:
        bind = str(spec.params.get("tcp_host") or "0.0.0.0")
        host = os.environ.get(gateway_env(spec.name) + "_HOST", "").strip()
        if not host:
            host = bind if bind not in _WILDCARDS else settings.GATEWAY_HOST
        port, how, setting = ports[spec.name]
        out[spec.name] = GatewayAddress(host, port, bind, how, setting)
    return out
