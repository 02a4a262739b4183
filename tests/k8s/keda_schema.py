"""KEDA's ScaledObject and TriggerAuthentication (keda.sh/v1alpha1), checked as KEDA documents them.

Written from KEDA's documentation (keda.sh/docs/2.x: "ScaledObject specification", "Authentication", and the
Redis Streams, Redis Cluster Streams and Prometheus scalers), not copied from its CRDs: the fields each object may
have (an unknown one fails, as kubernetes-validate's strict mode does for built-in kinds), their types (trigger
metadata is a map of strings), what is mandatory, and the rules the documentation states in words (a lag trigger
names its activation count; maxReplicaCount is not below minReplicaCount).
"""

from __future__ import annotations

from typing import Any

import jsonschema

_STR = {"type": "string"}
_INT = {"type": "integer", "minimum": 0}
_NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253}
_META = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": _NAME, "namespace": _NAME, "labels": {"type": "object", "additionalProperties": _STR},
                   "annotations": {"type": "object", "additionalProperties": _STR}},
    "additionalProperties": False,
}  # fmt: skip

_TRIGGER = {
    "type": "object",
    "required": ["type", "metadata"],
    "properties": {
        "type": _STR,
        "name": _STR,
        # map[string]string in KEDA: a number must be written as a string ("10").
        "metadata": {"type": "object", "additionalProperties": _STR},
        "useCachedMetrics": {"type": "boolean"},
        "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
        "authenticationRef": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": _NAME, "kind": {"enum": ["TriggerAuthentication", "ClusterTriggerAuthentication"]}},
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}

SCALED_OBJECT = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": _META,
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"apiVersion": _STR, "kind": _STR, "name": _NAME, "envSourceContainerName": _STR},
                    "additionalProperties": False,
                },
                "pollingInterval": _INT,
                "cooldownPeriod": _INT,
                "initialCooldownPeriod": _INT,
                "idleReplicaCount": {"const": 0},  # "the only supported value for this property is 0"
                "minReplicaCount": _INT,
                "maxReplicaCount": _INT,
                "fallback": {
                    "type": "object",
                    "required": ["failureThreshold", "replicas"],
                    "properties": {"failureThreshold": _INT, "replicas": _INT, "behavior": _STR},
                    "additionalProperties": False,
                },
                "advanced": {"type": "object"},
                "triggers": {"type": "array", "minItems": 1, "items": _TRIGGER},
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}

_REF = {"type": "object", "required": ["parameter", "name", "key"], "properties": {"parameter": _STR, "name": _NAME,
        "key": _STR}, "additionalProperties": False}  # fmt: skip
_ENV = {"type": "object", "required": ["parameter", "name"], "properties": {"parameter": _STR, "name": _STR,
        "containerName": _STR}, "additionalProperties": False}  # fmt: skip
TRIGGER_AUTHENTICATION = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "TriggerAuthentication"},
        "metadata": _META,
        "spec": {
            "type": "object",
            "minProperties": 1,
            "properties": {
                "podIdentity": {"type": "object"},
                "secretTargetRef": {"type": "array", "items": _REF},
                "env": {"type": "array", "items": _ENV},
                "configMapTargetRef": {"type": "array", "items": _REF},
                "hashiCorpVault": {"type": "object"},
                "azureKeyVault": {"type": "object"},
                "awsSecretManager": {"type": "object"},
                "gcpSecretManager": {"type": "object"},
                "boundServiceAccountToken": {"type": "array"},
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}

# The metadata each scaler documents (keda.sh/docs/2.x/scalers/...): a key outside these is a typo KEDA ignores.
_REDIS_COMMON = {
    "usernameFromEnv", "passwordFromEnv", "stream", "consumerGroup", "pendingEntriesCount", "streamLength",
    "lagCount", "activationLagCount", "enableTLS", "unsafeSsl", "databaseIndex",
}  # fmt: skip
_REDIS_ONE = {"address", "host", "port", "addressFromEnv", "hostFromEnv", "portFromEnv"}
_REDIS_CLUSTER = {"addresses", "hosts", "ports", "addressesFromEnv", "hostsFromEnv", "portsFromEnv"}
_PROMETHEUS = {
    "serverAddress", "query", "threshold", "activationThreshold", "namespace", "customHeaders", "ignoreNullValues",
    "queryParameters", "unsafeSsl", "timeout", "authModes",
}  # fmt: skip
SCALER_KEYS = {
    "redis-streams": _REDIS_COMMON | _REDIS_ONE,
    "redis-cluster-streams": _REDIS_COMMON | _REDIS_CLUSTER,
    "prometheus": _PROMETHEUS,
}
# The parameters a TriggerAuthentication may give the Redis scalers ("Authentication Parameters").
REDIS_AUTH_PARAMETERS = {"username", "password", "tls", "ca", "cert", "key", "keyPassword", "address", "addresses",
                         "host", "hosts", "port", "ports"}  # fmt: skip


def _check_trigger(trigger: dict[str, Any]) -> None:
    kind, meta = trigger["type"], trigger["metadata"]
    allowed = SCALER_KEYS.get(kind)
    if allowed is None:
        raise AssertionError(f"trigger type {kind!r} is not one this check knows")
    unknown = set(meta) - allowed
    if unknown:
        raise AssertionError(f"{kind} trigger: unknown metadata {sorted(unknown)}")
    if kind.startswith("redis"):
        if "stream" not in meta:
            raise AssertionError(f"{kind} trigger: stream is required")
        where = ("address", "host", "addressFromEnv", "hostFromEnv") if kind == "redis-streams" else (
            "addresses", "hosts", "addressesFromEnv", "hostsFromEnv")  # fmt: skip
        if not any(k in meta for k in where) and "authenticationRef" not in trigger:
            raise AssertionError(f"{kind} trigger: one of {where} is required")
        if "lagCount" in meta and "activationLagCount" not in meta:
            raise AssertionError(f"{kind} trigger: activationLagCount is required with lagCount")
        if ("lagCount" in meta or "pendingEntriesCount" in meta) and "consumerGroup" not in meta:
            raise AssertionError(f"{kind} trigger: lagCount and pendingEntriesCount count a consumerGroup's entries")
        for key in ("lagCount", "activationLagCount", "pendingEntriesCount", "streamLength", "databaseIndex"):
            if key in meta and not meta[key].isdigit():
                raise AssertionError(f"{kind} trigger: {key} must be a whole number, got {meta[key]!r}")
        if "enableTLS" in meta and meta["enableTLS"] not in ("true", "false"):
            raise AssertionError(f"{kind} trigger: enableTLS is 'true' or 'false'")
    if kind == "prometheus":
        for key in ("serverAddress", "query", "threshold"):
            if key not in meta:
                raise AssertionError(f"prometheus trigger: {key} is required")
        float(meta["threshold"])


def validate_keda(obj: dict[str, Any]) -> None:
    """Raise AssertionError (or jsonschema's ValidationError) when `obj` is not a valid KEDA object."""
    if obj["kind"] == "ScaledObject":
        jsonschema.validate(obj, SCALED_OBJECT)
        spec = obj["spec"]
        if spec.get("maxReplicaCount", 100) < spec.get("minReplicaCount", 0):
            raise AssertionError("maxReplicaCount is below minReplicaCount")
        for trigger in spec["triggers"]:
            _check_trigger(trigger)
    elif obj["kind"] == "TriggerAuthentication":
        jsonschema.validate(obj, TRIGGER_AUTHENTICATION)
        params = [r["parameter"] for r in obj["spec"].get("secretTargetRef", []) + obj["spec"].get("env", [])]
        unknown = set(params) - REDIS_AUTH_PARAMETERS
        if unknown:
            raise AssertionError(f"TriggerAuthentication: parameters the Redis scalers don't take: {sorted(unknown)}")
    else:
        raise AssertionError(f"{obj['kind']} is not a KEDA object")
