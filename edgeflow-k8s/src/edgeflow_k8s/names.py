"""Kubernetes names for EdgeFlow names: `gpu_processor` becomes `gpu-processor` (DNS-1123 label)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from .errors import InvalidNameError

__all__ = ["check_label_value", "k8s_name", "k8s_names"]

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def _require(ok: bool, message: str, name: str) -> None:
    if not ok:
        raise InvalidNameError(message, name=name)


def k8s_name(name: str, what: str = "node") -> str:
    """Return `name` as a DNS-1123 label: lower case, with `_` and `.` turned into `-`."""
    mapped = name.lower().replace("_", "-").replace(".", "-")
    _require(
        len(mapped) <= 63 and bool(_DNS1123_LABEL.match(mapped)),
        f"{what} name {name!r} can't be a Kubernetes name (it maps to {mapped!r}): use at most 63 letters, "
        "digits, '-' or '_', starting and ending with a letter or digit, and rename it in main.py",
        name,
    )
    return mapped


def check_label_value(value: str, what: str) -> str:
    """Return `value` when it is a valid Kubernetes label value, else raise InvalidNameError."""
    _require(
        len(value) <= 63 and bool(_LABEL_VALUE.match(value)),
        f"{what} {value!r} can't be a Kubernetes label value: use at most 63 letters, digits, '-', '_' or '.', "
        "starting and ending with a letter or digit",
        value,
    )
    return value


def k8s_names(names: Iterable[str], reserved: Iterable[str] = ()) -> dict[str, str]:
    """Map each node name to its Kubernetes name; two names that map alike, or a reserved one, are an error."""
    taken = {r: f"EdgeFlow's own {r!r} object" for r in reserved}
    out: dict[str, str] = {}
    for name in names:
        mapped = k8s_name(name)
        check_label_value(name, "node name")
        if mapped in taken:
            raise InvalidNameError(
                f"node {name!r} maps to the Kubernetes name {mapped!r}, already used by {taken[mapped]}; "
                "rename one of them in main.py",
                name=name,
            )
        taken[mapped] = f"node {name!r}"
        out[name] = mapped
    return out
