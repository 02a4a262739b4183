"""Scheduling and disruption: each node's declared `resources`, GPUs, and PodDisruptionBudgets.

- `@app.node(..., resources={"cpu": "500m", "memory": "1Gi", "gpu": 1})` (checked when the node is declared,
  `edgeflow.resources`) replaces the default requests of the node's container. CPU and memory are requests only,
  as the defaults are: a limit would OOM-kill a node on a burst of large frames. `gpu` becomes the
  `nvidia.com/gpu` limit (extended resources are requested through their limit) with the toleration of the taint
  GPU machines usually carry (`nvidia.com/gpu:NoSchedule`, as the NVIDIA device plugin's docs and GKE set it).
  `device="gpu"` alone only picks machines labelled `edgeflow.io/device=gpu`: it gives the pod no GPU.
- A node with more than one replica gets a PodDisruptionBudget of `maxUnavailable: 1`: a drain or an upgrade
  takes its pods down one at a time, never all at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgeflow.app import EdgeApp

__all__ = ["GPU_RESOURCE", "GPU_TOLERATION", "disruption_budgets", "with_resources"]

GPU_RESOURCE = "nvidia.com/gpu"
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}


def _apply(pod: dict[str, Any], resources: dict[str, Any]) -> None:
    container = pod["containers"][0]
    requests = dict(container.get("resources", {}).get("requests", {}))
    requests.update({k: v for k, v in resources.items() if k in ("cpu", "memory")})
    out: dict[str, Any] = {"requests": requests}
    if resources.get("gpu"):
        out["limits"] = {GPU_RESOURCE: resources["gpu"]}
        tolerations = pod.setdefault("tolerations", [])
        if GPU_TOLERATION not in tolerations:
            tolerations.append(dict(GPU_TOLERATION))
    container["resources"] = out


def with_resources(app: EdgeApp, objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give each node's Deployment the resources its `@app.node(resources=...)` declares; return `objects`."""
    for obj in objects:
        if obj["kind"] != "Deployment":
            continue
        spec = app.nodes.get(obj["spec"]["template"]["metadata"]["labels"].get("edgeflow.io/node", ""))
        if spec is not None and spec.params.get("resources"):
            _apply(obj["spec"]["template"]["spec"], spec.params["resources"])
    return objects


def disruption_budgets(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return a PodDisruptionBudget for every node Deployment with more than one replica."""
    out = []
    for obj in objects:
        if obj["kind"] != "Deployment" or obj["spec"].get("replicas", 1) <= 1:
            continue
        if "edgeflow.io/node" not in obj["spec"]["template"]["metadata"]["labels"]:
            continue
        meta = obj["metadata"]
        selector = {"matchLabels": dict(obj["spec"]["selector"]["matchLabels"])}
        out.append(
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": {"name": meta["name"], "namespace": meta["namespace"], "labels": dict(meta["labels"])},
                "spec": {"maxUnavailable": 1, "selector": selector},
            }
        )
    return out
