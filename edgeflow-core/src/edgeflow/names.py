"""Names: what a node, topic or app name may be, and how a name from the outside is shown in logs."""

from __future__ import annotations

import re

__all__ = ["NAME", "is_name", "safe"]

#: A node, topic, app or device name: letters, digits, '-', '_' or '.', starting with a letter, at most 63.
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$")


def is_name(text: object) -> bool:
    """Return True when `text` is a valid node, topic or app name."""
    return isinstance(text, str) and NAME.match(text) is not None


def safe(text: object, limit: int = 80) -> str:
    """`text` as it may appear in a log line: valid names as they are, anything else quoted with its control
    characters escaped and cut at `limit`, so that a name from the wire can't forge or flood a line."""
    if is_name(text):
        return str(text)
    raw = text if isinstance(text, str) else repr(text)
    # repr() escapes every character that is not printable: newlines, terminal escapes, line separators.
    return repr(raw[:limit]) + ("..." if len(raw) > limit else "")
