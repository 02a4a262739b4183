"""Entry point of a benchmark child process: `python -m benchmarks._child module:function '{json kwargs}'`."""

from __future__ import annotations

import importlib
import json
import sys


def main() -> None:
    """Import `module:function`, call it with the JSON kwargs; it announces READY/RESULT itself."""
    target, raw = sys.argv[1], sys.argv[2]
    module, _, func = target.partition(":")
    fn = getattr(importlib.import_module(module), func)
    fn(**json.loads(raw))


if __name__ == "__main__":
    main()
