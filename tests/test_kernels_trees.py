"""The boosting kernels (mpiml/kernels) against their numpy references (in mpiml/models), bit
for bit: node histograms of quantized gradients (a root's from every row, several sparse nodes'
in one pass), the split search, the partition of a node's rows, and binning; and whole fits
with the kernels off (MPIML_KERNELS=numpy) equal to fits with them."""

from __future__ import annotations

import numpy as np
import pytest

from mpiml.kernels.binning import bin_rows
from mpiml.kernels.histograms import (
    best_split,
    node_histogram,
    partition_rows,
    root_histogram,
    union_histograms,
)
from mpiml.models.tree_growth import best_split as best_split_reference
from mpiml.models.tree_growth import node_histogram as node_histogram_reference
from mpiml.models.tree_growth import partition_rows as partition_rows_reference
from mpiml.models.tree_growth import root_histogram as root_histogram_reference
from mpiml.models.tree_growth import union_histograms as union_histograms_reference
from mpiml.models.trees import bin_rows as bin_rows_reference


def binned_rows(rng, n=3000, d=7, n_bins=33):
    return np.asfortranarray(rng.integers(0, n_bins, size=(n, d)).astype(np.uint8))


@pytest.mark.parametrize("every_row", [True, False])
def test_node_histogram_equals_bincounts_bit_for_bit(every_row):
    rng = np.random.default_rng(0)
    binned = binned_rows(rng)
    n = len(binned)
    rows = np.arange(n) if every_row else np.sort(rng.choice(n, n // 3, replace=False))
    gradients = np.rint(rng.normal(size=n) * 2.0**40)  # integers on a grid, as quantized
    hessians = np.rint(rng.random(n) * 2.0**40)
    got, want = np.zeros((7, 33, 3)), np.zeros((7, 33, 3))
    node_histogram(binned, rows, gradients, hessians, got)
    node_histogram_reference(binned, rows, gradients, hessians, want)
    assert np.array_equal(got, want)
    assert got[..., 2].sum() == 7 * len(rows)


def quantized(rng, n):
    """Gradients and hessians as integers on a grid, as :func:`quantize_rows` makes them."""
    return np.rint(rng.normal(size=n) * 2.0**40), np.rint(rng.random(n) * 2.0**40)


@pytest.mark.parametrize("d", [7, 8])  # with and without features beyond the passes of four
def test_root_histogram_equals_every_rows_node_histogram_bit_for_bit(d):
    rng = np.random.default_rng(4)
    binned = binned_rows(rng, d=d)
    gradients, hessians = quantized(rng, len(binned))
    got, want, reference = (np.zeros((d, 33, 3)) for _ in range(3))
    root_histogram(binned, gradients, hessians, got)
    node_histogram(binned, np.arange(len(binned)), gradients, hessians, want)
    root_histogram_reference(binned, gradients, hessians, reference)
    assert np.array_equal(got, want) and np.array_equal(got, reference)


@pytest.mark.parametrize("d", [7, 8])
def test_union_histograms_equal_each_nodes_histogram_bit_for_bit(d):
    rng = np.random.default_rng(5)
    binned = binned_rows(rng, d=d)
    gradients, hessians = quantized(rng, len(binned))
    owner = rng.integers(-1, 3, size=len(binned)).astype(np.int32)  # slots 0..2; -1: none
    rows = np.flatnonzero(owner >= 0)
    got, reference = np.zeros((3, d, 33, 3)), np.zeros((3, d, 33, 3))
    union_histograms(binned, rows, owner[rows], gradients, hessians, got)
    union_histograms_reference(binned, rows, owner[rows], gradients, hessians, reference)
    assert np.array_equal(got, reference)
    for slot in range(3):
        want = np.zeros((d, 33, 3))
        node_histogram(binned, np.flatnonzero(owner == slot), gradients, hessians, want)
        assert np.array_equal(got[slot], want)


@pytest.mark.parametrize("l2, min_samples_leaf, scales", [
    (0.0, 20, (2.0**30, 2.0**30)), (1.0, 1, (2.0**30, 2.0**30)),
    (0.5, 1600, (2.0**30, 2.0**30)), (1.0, 20, (2.0**45, 2.0**-3))])
def test_best_split_equals_the_reference_bit_for_bit(l2, min_samples_leaf, scales):
    rng = np.random.default_rng(3)
    binned = binned_rows(rng)
    rows = np.arange(len(binned))
    gradients = np.rint(rng.normal(size=len(rows)) * 2.0**30 + binned[:, 2] * 2.0**28)
    hessians = np.rint(rng.random(len(rows)) * 2.0**30)
    hist = np.zeros((7, 33, 3))
    node_histogram(binned, rows, gradients, hessians, hist)
    hist[4] = hist[2]  # an exact tie: the first feature wins
    totals = hist[0].sum(axis=0)
    arguments = (hist, totals, *scales, min_samples_leaf, l2, 1e-3)
    gain, feature, split_bin, left = best_split(*arguments)
    want = best_split_reference(*arguments)
    assert (gain, feature, split_bin) == want[:3] and np.array_equal(left, want[3])
    if min_samples_leaf < 1600:  # 1600: no split leaves that many rows on both sides
        assert gain > 0 and feature == 2
    else:
        assert gain == -np.inf


def test_partition_rows_equals_the_reference_and_keeps_the_order():
    rng = np.random.default_rng(1)
    binned = binned_rows(rng)
    rows = np.sort(rng.choice(len(binned), 1000, replace=False))
    got, want = rows.copy(), rows.copy()
    n_left = partition_rows(binned, got, 3, 16, np.empty(len(rows), dtype=rows.dtype))
    assert n_left == partition_rows_reference(binned, want, 3, 16, np.empty_like(rows))
    assert np.array_equal(got, want)
    assert (binned[got[:n_left], 3] <= 16).all() and (binned[got[n_left:], 3] > 16).all()
    assert (np.diff(got[:n_left]) > 0).all() and (np.diff(got[n_left:]) > 0).all()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_bin_rows_equals_searchsorted(dtype):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(500, 4)).astype(dtype)
    per_feature = [np.sort(rng.normal(size=k)) for k in (1, 5, 254, 0)]
    per_feature[1][2] = float(X[7, 1])  # a value equal to an edge: bin = edges strictly below
    edges = np.concatenate(per_feature)
    offsets = np.concatenate([[0], np.cumsum([len(e) for e in per_feature])])
    got = np.zeros((510, 4), dtype=np.uint8, order="F")
    want = np.zeros((510, 4), dtype=np.uint8, order="F")
    bin_rows(X, edges, offsets, got, 10)
    bin_rows_reference(X, edges, offsets, want, 10)
    assert np.array_equal(got, want)


def test_a_fit_with_the_references_equals_the_fit_with_the_kernels(monkeypatch):
    from mpi4py import MPI
    from sklearn.datasets import load_breast_cancer

    import mpiml.models.tree_growth as growth
    import mpiml.models.trees as trees
    from mpiml.fit.boosting import fit_hgbt

    X, y = load_breast_cancer(return_X_y=True)
    with_kernels = fit_hgbt(X, y, MPI.COMM_SELF, n_estimators=5).model
    monkeypatch.setattr(growth, "tree_kernels", lambda: None)
    monkeypatch.setattr(trees, "binning_kernel", lambda: None)
    references = fit_hgbt(X, y, MPI.COMM_SELF, n_estimators=5).model
    for key, array in with_kernels.items():
        assert np.array_equal(references[key], array), key
