"""The data layer: this rank's rows of an HDF5 file by hyperslab, checked identically on every
rank (:mod:`.hdf5`, :mod:`.shard`), moved into whole blocks when split elsewhere
(:mod:`.rebalance`); the global batch order (:mod:`.batches`); a run's rows with
its class set and scaling (:mod:`.run_rows`, :mod:`.scaling`); and the data tools behind
``python -m mpiml.data`` (:mod:`.tools`)."""

from .batches import BatchPlan, epoch_permutation
from .hdf5 import LazyShard, iter_chunks, load_shard, open_shard
from .rebalance import rebalance_shard
from .shard import DataError, MissingDataError, Shard, row_range

__all__ = ["BatchPlan", "DataError", "LazyShard", "MissingDataError", "Shard",
           "epoch_permutation", "iter_chunks", "load_shard", "open_shard", "rebalance_shard",
           "row_range"]
