"""`@app.node(..., max_replicas=N)`: checked when declared."""

from __future__ import annotations

import pytest

from edgeflow import EdgeApp
from edgeflow.errors import NodeDefinitionError
from edgeflow.nodes import ConsumerNode, ProducerNode


def test_max_replicas_is_kept_on_the_spec() -> None:
    app = EdgeApp("scaled", broker="redis")

    @app.node(name="det", type="consumer", replicas=2, max_replicas=8)
    class Det(ConsumerNode):
        def process(self, data: object) -> None:
            return None

    assert (app.nodes["det"].replicas, app.nodes["det"].max_replicas) == (2, 8)
    assert "max_replicas" not in app.nodes["det"].params


@pytest.mark.parametrize(
    ("kind", "replicas", "max_replicas", "match"),
    [("consumer", 3, 2, r"max_replicas must be an int >= replicas \(3\), got 2"),
     ("consumer", 1, "8", "got '8'"), ("consumer", 1, True, "got True"),
     ("producer", 1, 4, "a producer has none")],
)  # fmt: skip
def test_bad_max_replicas_is_a_clear_error(kind: str, replicas: int, max_replicas: object, match: str) -> None:
    app = EdgeApp("scaled", broker="redis")
    base = ProducerNode if kind == "producer" else ConsumerNode
    with pytest.raises(NodeDefinitionError, match=match):

        @app.node(name="n", type=kind, replicas=replicas, max_replicas=max_replicas)  # type: ignore[arg-type]
        class N(base):  # type: ignore[valid-type,misc]
            def produce(self) -> None:
                return None

            def process(self, data: object) -> None:
                return None
