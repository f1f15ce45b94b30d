"""``python -m mpiml.kernels``: compile every kernel for every dtype it is used with into numba's
on-disk cache, and say how long that took (``make`` runs it once when it sets up the venv, so
that the ranks of the first run do not each compile)."""

from __future__ import annotations

import sys
import time

from .warm import warm_all


def main() -> int:
    start = time.perf_counter()
    compiled, loaded = warm_all()
    sys.stdout.write(f"mpiml kernels: {compiled} compiled, {loaded} loaded from the cache in "
                     f"{time.perf_counter() - start:.1f} s\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
