"""What a node asks of the machine it runs on: `@app.node(..., resources={"cpu": "500m", "memory": "1Gi", "gpu": 1})`.

Checked when the node is declared, so a typo fails `python main.py` as it would `edgeflow deploy`; deployers turn
the request into their own terms (edgeflow-k8s: container requests, and `nvidia.com/gpu` limits for `gpu`).
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from .errors import NodeDefinitionError

__all__ = ["RESOURCE_KEYS", "check_resources"]

#: The keys a node's `resources` may have, and what each is.
RESOURCE_KEYS = {
    "cpu": "CPU cores: a number (0.5, 2) or millicores ('500m')",
    "memory": "bytes: an int or a quantity with a unit ('512Mi', '1Gi', '2G')",
    "gpu": "whole GPUs: an int >= 0",
}
_CPU = re.compile(r"^(\d+(\.\d+)?|\d+m)$")
_MEMORY = re.compile(r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")


def _bad(node: str, key: str, value: Any) -> NodeDefinitionError:
    return NodeDefinitionError(
        f"node {node!r}: resources[{key!r}]={value!r} is not valid; {key} is {RESOURCE_KEYS[key]}", node=node
    )


def check_resources(node: str, value: Any) -> dict[str, Any]:
    """Return `value` as a node's resources (cpu and memory as strings, gpu an int), or raise NodeDefinitionError."""
    if not isinstance(value, dict):
        raise NodeDefinitionError(
            f"node {node!r}: resources must be a dict such as {{'cpu': '500m', 'memory': '1Gi', 'gpu': 1}}, "
            f"got {value!r}",
            node=node,
        )
    out: dict[str, Any] = {}
    for key, v in value.items():
        if key not in RESOURCE_KEYS:
            close = difflib.get_close_matches(str(key), RESOURCE_KEYS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise NodeDefinitionError(
                f"node {node!r}: resources has an unknown key {key!r}; {hint}the keys are {', '.join(RESOURCE_KEYS)}",
                node=node,
            )
        if isinstance(v, bool) or v is None:
            raise _bad(node, key, v)
        if key == "gpu":
            if not isinstance(v, int) or v < 0:
                raise _bad(node, key, v)
            out[key] = v
            continue
        if isinstance(v, (int, float)):
            if v <= 0 or (key == "memory" and not isinstance(v, int)):
                raise _bad(node, key, v)
            out[key] = str(v)
        elif isinstance(v, str) and (_CPU if key == "cpu" else _MEMORY).match(v) and float(re.sub(r"\D+$", "", v)) > 0:
            out[key] = v
        else:
            raise _bad(node, key, v)
    return out
