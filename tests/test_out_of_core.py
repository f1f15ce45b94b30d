"""Training on data larger than memory (``data.memory_budget``): every family streams X from the
file and gives the model it gives in memory; the block-shuffled mini-batch order is the same
at any rank count; and a real 2-rank job over a file 8x the budget stays within the budget in
RSS (measured, against the baseline of the same program without data)."""

from __future__ import annotations

import json
import sys

import h5py
import numpy as np
import pytest
import scipy.sparse as sp
from datasets import make_problem, write_csr, write_dense
from launch import ROOT, run, run_mpi
from mpi4py import MPI

from mpiml import config
from mpiml.comm import Reducer
from mpiml.data.batches import BatchPlan, BlockBatchPlan, order_block_rows
from mpiml.data.run_rows import load_run_data
from mpiml.data.shard import DataError, row_range
from mpiml.data.stream import chunk_rows_for, is_streamed
from mpiml.fit import train

SELF = MPI.COMM_SELF
OFF = {"checkpoint": {"enabled": False}, "fault": {"stall_seconds": None}}
BUDGET = 1 << 20  # X below is 3.2 MB: chunks of one 1 MiB tile (16,384 rows), 4 of them
PROGRAM = ROOT / "tests" / "programs" / "out_of_core_program.py"


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ooc") / "binary.h5"
    X, y = make_problem("binary", 50_000, 8, seed=3)
    X_test, y_test = make_problem("binary", 2000, 8, seed=4)
    write_dense(path, X, y, X_test, y_test)
    return str(path)


def fit(path, budget, **sections):
    raw = {"data": {"train": path, "memory_budget": budget},
           "train": {"log_every": 10**6}, **OFF}
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return train(config.from_dict(raw), SELF)


def rows_of(path, budget, **data):
    cfg = config.from_dict({"data": {"train": path, "memory_budget": budget, **data}})
    return load_run_data(cfg, Reducer(SELF), "binary")


FAMILIES = {
    "logistic-lbfgs": {"optimizer": {"name": "lbfgs"}, "train": {"max_steps": 30}},
    "logistic-gd": {"optimizer": {"name": "gd", "lr": 0.5},
                    "train": {"epochs": 10, "batch_size": None}},
    "logistic-gd-weighted-standardized": {
        "data": {"standardize": True}, "model": {"class_weight": "balanced"},
        "optimizer": {"name": "gd", "lr": 0.5}, "train": {"epochs": 10, "batch_size": None}},
    "softmax-sgd-reproducible": {
        "model": {"kind": "softmax"}, "optimizer": {"name": "sgd", "lr": 0.1},
        "train": {"epochs": 1, "batch_size": 512, "reproducible": True}},
    "kmeans-lloyd": {"model": {"kind": "kmeans"}, "kmeans": {"n_clusters": 5, "max_iter": 15}},
    "kmeans-random-reproducible": {"model": {"kind": "kmeans"},
                                   "kmeans": {"n_clusters": 4, "init": "random", "max_iter": 10},
                                   "train": {"reproducible": True}},
    "hgbt": {"model": {"kind": "hgbt_classifier"}, "hgbt": {"n_estimators": 5}},
}


@pytest.mark.filterwarnings("ignore:K-Means did not converge")
@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_streams_to_the_in_memory_model(data_file, family):
    """Bit for bit where the sums keep their order (gradient tiles, block sums, bins); within
    1e-10 where a chunk's sums are added to the next's (K-Means, the scaler)."""
    sections = FAMILIES[family]
    alone, streamed = fit(data_file, None, **sections), fit(data_file, BUDGET, **sections)
    for name, value in alone.saved.arrays.items():
        value, other = np.asarray(value), np.asarray(streamed.saved.arrays[name])
        if family.startswith("kmeans") or "standardized" in family:
            np.testing.assert_allclose(other, value, rtol=1e-10, atol=1e-10, err_msg=name)
        else:
            assert value.tobytes() == other.tobytes(), name
    assert streamed.steps == alone.steps


def test_the_budget_decides_what_streams(data_file):
    assert is_streamed(rows_of(data_file, BUDGET).shard.X)
    assert not is_streamed(rows_of(data_file, 3_200_000).shard.X)  # X is exactly 3,200,000 B
    assert not is_streamed(rows_of(data_file, None).shard.X)


def test_streamed_rows_read_what_memory_holds(data_file):
    rows, held = rows_of(data_file, BUDGET, standardize=True), rows_of(data_file, None,
                                                                     standardize=True)
    X, expected = rows.shard.X, held.shard.X
    assert X.chunk_rows == 16384 and X.shape == expected.shape and X.nbytes == expected.nbytes
    np.testing.assert_allclose(X[100:200], expected[100:200], rtol=1e-12, atol=1e-12)
    picks = np.array([49_999, 3, 20_000, 4, 16_384, 16_383])
    np.testing.assert_allclose(X[picks], expected[picks], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(X[-1], expected[-1], rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="at most 16384 rows"):
        X[0:16385]


def test_chunks_read_in_order_reuse_two_buffers(data_file):
    """A pass in row order reads into the same two arrays every time (no fresh chunk per
    read), and a chunk stays valid until the chunk after the next is read."""
    rows, held = rows_of(data_file, BUDGET, standardize=True), rows_of(data_file, None,
                                                                     standardize=True)
    X, expected, size = rows.shard.X, held.shard.X, rows.shard.X.chunk_rows
    for _ in range(2):
        first = X[0:size]
        second = X[size:2 * size]
        assert not np.shares_memory(first, second)
        np.testing.assert_allclose(first, expected[:size], rtol=1e-12, atol=1e-12)
        third = X[2 * size:3 * size]
        assert np.shares_memory(first, third)
        np.testing.assert_allclose(second, expected[size:2 * size], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(third, expected[2 * size:3 * size], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(X[[5, 3 * size]], expected[[5, 3 * size]], rtol=1e-12,
                               atol=1e-12)  # a gather out of order copies: the chunks stay
    np.testing.assert_allclose(third, expected[2 * size:3 * size], rtol=1e-12, atol=1e-12)


def test_chunks_hold_whole_tiles_or_blocks():
    assert chunk_rows_for(64 << 20, 8, 8) == 131072  # 8 MiB of 64-byte rows: 8 tiles
    assert chunk_rows_for(1, 8, 8) == 16384  # never below one 1 MiB tile
    assert chunk_rows_for(1 << 20, 8, 8, block_rows=100) == 2000  # 128 KiB in whole blocks


def test_csr_over_the_budget_and_held_out_fractions_are_refused(tmp_path, data_file):
    X, y = make_problem("binary", 500, 6, seed=1)
    write_csr(tmp_path / "csr.h5", sp.csr_matrix(X), y)
    with pytest.raises(DataError, match="CSR group 'X' does not fit data.memory_budget"):
        rows_of(str(tmp_path / "csr.h5"), 1000)
    with pytest.raises(DataError, match="validation_fraction .* streams"):
        rows_of(data_file, BUDGET, validation_fraction=0.1)


def test_streamed_sgd_trains_as_well_as_in_memory(data_file):
    """Non-reproducible SGD takes the block-shuffled order when it streams: other batches, the
    same quality."""
    sections = {"data": {"test": data_file}, "optimizer": {"name": "sgd", "lr": 0.1},
                "train": {"epochs": 2, "batch_size": 256}}
    alone, streamed = fit(data_file, None, **sections), fit(data_file, BUDGET, **sections)
    assert alone.params.tobytes() != streamed.params.tobytes()
    assert abs(streamed.metrics["accuracy"] - alone.metrics["accuracy"]) < 0.01


@pytest.mark.parametrize(("n_total", "batch_size", "block_rows"),
                         [(1000, 64, 8), (1003, 100, 7), (50, 256, 32)])
def test_the_block_order_is_the_same_on_any_rank_count(n_total, batch_size, block_rows):
    def global_batches(size):
        plans = [BlockBatchPlan(n_total, batch_size, 5, *row_range(n_total, r, size),
                                block_rows) for r in range(size)]
        return [[np.concatenate([plan.local_rows(epoch, t) + plan.start for plan in plans])
                 for t in range(plans[0].n_batches(epoch))] for epoch in (0, 1)]

    alone = global_batches(1)
    for size in (2, 3, 4):
        assert all(np.array_equal(a, b) for e, f in zip(alone, global_batches(size), strict=True)
                   for a, b in zip(e, f, strict=True))
    for epoch in alone:  # every row once per epoch; a batch is few runs of consecutive rows
        assert np.array_equal(np.sort(np.concatenate(epoch)), np.arange(n_total))
        for batch in epoch:
            assert np.count_nonzero(np.diff(batch) != 1) <= -(-batch_size // block_rows) + 1
    if n_total > batch_size:  # not the in-memory order (every row shuffled)
        assert not np.array_equal(BatchPlan(n_total, batch_size, 5).local_rows(0, 0),
                                  alone[0][0])


def test_order_blocks_are_small_reads_within_a_batch():
    assert order_block_rows(256, 128) == 32  # an eighth of the batch
    assert order_block_rows(1 << 20, 128) == 512  # 64 KiB of rows
    assert order_block_rows(4, 1 << 20) == 1


def test_dry_run_says_the_rows_stream(tmp_path, data_file):
    path = tmp_path / "c.yaml"
    path.write_text(f"data: {{train: {data_file}, memory_budget: {BUDGET}}}\n")
    job = run([sys.executable, "-m", "mpiml.train", str(path), "--dry-run"], timeout=120)
    assert job.returncode == 0, job.output
    assert "training rows stream from" in job.output and "chunks of 16384 rows" in job.output


def write_large(path, rows: int, features: int) -> None:
    """A float32 binary problem written a slice at a time (the test holds ~16 MB of it)."""
    rng = np.random.default_rng(0)
    weights = rng.standard_normal(features).astype(np.float32)
    with h5py.File(path, "w") as out:
        X = out.create_dataset("X", (rows, features), dtype=np.float32)
        y = out.create_dataset("y", (rows,), dtype=np.float32)
        for lo in range(0, rows, 1 << 17):
            hi = min(rows, lo + (1 << 17))
            block = rng.standard_normal((hi - lo, features), dtype=np.float32)
            X[lo:hi], y[lo:hi] = block, (block @ weights > 0)


def test_peak_rss_stays_within_the_budget(tmp_path):
    """2 ranks train on 256 MiB of float32 X (128 MiB per rank) under a 32 MiB budget.

    Asserted per rank: peak RSS <= baseline + budget + model + 64 MiB, where the baseline is
    the peak RSS of the same program on 2 ranks without data (imports: mpiml.fit, numpy,
    scipy, h5py, mpi4py; MPI started) and the model is the parameters with L-BFGS's state.
    y (float64 labels here, 8 MiB per rank) fits in the 64 MiB. Holding the shard alone would
    exceed the bound, so the test fails if X is loaded."""
    budget, rows, features = 32 << 20, 1 << 21, 32
    write_large(tmp_path / "big.h5", rows, features)
    baseline = run_mpi(2, [str(PROGRAM), "--baseline"], timeout=120)
    assert baseline.returncode == 0, baseline.output
    streamed = run_mpi(2, [str(PROGRAM), str(tmp_path / "big.h5"), str(budget)], timeout=300)
    assert streamed.returncode == 0, streamed.output
    base = json.loads(baseline.output.strip().splitlines()[-1])["rss"]
    report = json.loads(streamed.output.strip().splitlines()[-1])
    assert report["streamed"]
    model = report["n_params"] * 8 * (2 + 2 * 10)  # params, gradient, 10 L-BFGS pairs
    shard = rows // 2 * features * 4
    for rank, (peak, start) in enumerate(zip(report["rss"], base, strict=True)):
        bound = start + budget + model + (64 << 20)
        assert start + shard > bound, "the data set is too small to tell streaming apart"
        assert peak <= bound, (f"rank {rank}: peak RSS {peak / 2**20:.0f} MiB > baseline "
                               f"{start / 2**20:.0f} MiB + budget + model + 64 MiB")


def test_bench_out_of_core_quick_prints_both_rows():
    job = run([sys.executable, str(ROOT / "scripts" / "bench_out_of_core.py"), "--quick"],
              timeout=300)
    assert job.returncode == 0, job.output
    assert "| logistic full-batch pass |" in job.output and "| K-Means Lloyd" in job.output
