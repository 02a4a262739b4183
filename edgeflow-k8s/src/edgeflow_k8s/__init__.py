"""EdgeFlow on Kubernetes: `edgeflow deploy` renders an app as manifests, builds its image and applies it."""

from .deployer import DeployPlan, KubernetesDeployer, to_yaml
from .errors import (
    BuildError,
    ClusterError,
    DeployError,
    InvalidNameError,
    NoBuilderError,
    PushError,
    RolloutTimeoutError,
)
from .manifests import RenderOptions, render
from .names import k8s_name

__all__ = [
    "BuildError",
    "ClusterError",
    "DeployError",
    "DeployPlan",
    "InvalidNameError",
    "KubernetesDeployer",
    "NoBuilderError",
    "PushError",
    "RenderOptions",
    "RolloutTimeoutError",
    "k8s_name",
    "render",
    "to_yaml",
]
