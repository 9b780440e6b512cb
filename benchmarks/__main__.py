"""`make bench`: run every benchmark and print each ratio to its same-run baseline."""

from __future__ import annotations

import importlib
import sys

MODULES = [
    "benchmarks.ledger_posting",
    "benchmarks.payments",
    "benchmarks.offline_settlement",
    "benchmarks.simulation",
    "benchmarks.http_api",
]


def main() -> int:
    only = sys.argv[1:]
    for name in MODULES:
        if only and not any(part in name for part in only):
            continue
        importlib.import_module(name).main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
