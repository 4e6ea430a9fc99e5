"""`python -m bench [--quick]`: run the benchmarks and print their tables.

The snapshot benchmark (bench/snapshot.py) measures the snapshot stage beside a bare
fetch-and-parse floor; bench/store_keys.py measures the store's key strategies; the
simulator's own throughput is bench/simulator_throughput.py.
"""

from __future__ import annotations

import sys

from bench import snapshot, store_keys


def main(argv: list[str] | None = None) -> None:
    """Run every benchmark with the same options (`--quick` for a small fleet)."""
    args = sys.argv[1:] if argv is None else argv
    snapshot.main(args)
    store_keys.main(args)


if __name__ == "__main__":
    main()
