"""Errors of `edgeflow deploy`, rooted in the core's tree so the CLI reports them the same way."""

from __future__ import annotations

from edgeflow.errors import ConfigurationError, EdgeFlowError

__all__ = [
    "BuildError",
    "ClusterError",
    "DeployError",
    "InvalidNameError",
    "NoBuilderError",
    "PushError",
    "RolloutTimeoutError",
]


class DeployError(EdgeFlowError):
    """Raised when a deployment step fails at run time."""


class InvalidNameError(ConfigurationError):
    """Raised when a node, app or namespace name can't become a Kubernetes (DNS-1123) name."""

    def __init__(self, message: str, *, name: str | None = None) -> None:
        super().__init__(message)
        self.name = name


class ClusterError(DeployError):
    """Raised when the cluster can't be reached, has no kubeconfig, or refuses a request."""


class BuildError(DeployError):
    """Raised when the image can't be built."""


class NoBuilderError(BuildError):
    """Raised when no container builder (docker buildx, podman, buildah, nerdctl) is installed."""


class PushError(BuildError):
    """Raised when the registry refuses the image push."""

    def __init__(self, message: str, *, image: str | None = None) -> None:
        super().__init__(message)
        self.image = image


class RolloutTimeoutError(DeployError):
    """Raised when Deployments are not ready before the rollout timeout; carries a summary of why."""

    def __init__(self, message: str, *, summary: str = "") -> None:
        super().__init__(message)
        self.summary = summary
