"""mpiml: peer-to-peer MPI allreduce training for classic ML models.

Importing mpiml is cheap and has no side effects: it does not import mpi4py (so it never
initialises MPI), numpy, or touch any file. Public names are loaded on first use.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "allreduce": "mpiml.comm",
    "broadcast": "mpiml.comm",
    "load_shard": "mpiml.data",
    "rebalance_shard": "mpiml.data",
    "row_range": "mpiml.data",
    "run_spmd": "mpiml.comm",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mpiml' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
