"""`@app.node(..., resources=...)`: checked where the node is declared, so a typo fails `python main.py` too."""

from __future__ import annotations

from typing import Any

import pytest

from edgeflow import EdgeApp
from edgeflow.errors import NodeDefinitionError
from edgeflow.nodes import ConsumerNode
from edgeflow.resources import check_resources


def _declare(resources: Any) -> dict[str, Any]:
    app = EdgeApp("res")

    @app.node(name="detector", type="consumer", resources=resources)
    class Detector(ConsumerNode):
        def process(self, data: Any) -> Any:
            return data

    params: dict[str, Any] = app.nodes["detector"].params
    return params


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ({"cpu": "500m", "memory": "1Gi", "gpu": 1}, {"cpu": "500m", "memory": "1Gi", "gpu": 1}),
        ({"cpu": 2, "memory": 1 << 30}, {"cpu": "2", "memory": "1073741824"}),
        ({"cpu": 0.25, "memory": "512M", "gpu": 0}, {"cpu": "0.25", "memory": "512M", "gpu": 0}),
        ({}, {}),
    ],
)
def test_valid_resources_are_kept_in_the_nodes_params(given: dict[str, Any], kept: dict[str, Any]) -> None:
    """Numbers become the quantity strings deployers hand on; gpu stays a count."""
    assert _declare(given)["resources"] == kept


@pytest.mark.parametrize(
    ("given", "match"),
    [
        ({"memroy": "1Gi"}, r"node 'detector': resources has an unknown key 'memroy'; did you mean 'memory'\?"),
        ({"gpus": 1}, r"unknown key 'gpus'; did you mean 'gpu'\?"),
        ({"disk": "1Gi"}, r"unknown key 'disk'; the keys are cpu, memory, gpu"),
        ({"cpu": "500 m"}, r"resources\['cpu'\]='500 m' is not valid; cpu is CPU cores"),
        ({"cpu": -1}, r"resources\['cpu'\]=-1"),
        ({"memory": 1.5}, r"resources\['memory'\]=1.5"),
        ({"memory": "1 GB"}, r"resources\['memory'\]='1 GB'"),
        ({"gpu": True}, r"resources\['gpu'\]=True"),
        ({"gpu": -1}, r"resources\['gpu'\]=-1 is not valid; gpu is whole GPUs"),
        ("500m", r"resources must be a dict"),
    ],
)
def test_a_mistake_names_the_node_and_the_key(given: Any, match: str) -> None:
    """Each refusal is a NodeDefinitionError that names the node, the key and what it should be."""
    with pytest.raises(NodeDefinitionError, match=match) as info:
        _declare(given)
    assert info.value.node == "detector"


def test_check_resources_alone() -> None:
    """The checker deployers may call on a spec's params: it returns a new dict and leaves its input as it was."""
    given = {"cpu": 1}
    assert check_resources("n", given) == {"cpu": "1"} and given == {"cpu": 1}
