"""The compiled K-Means kernel against its numpy reference (serial): labels and distances bit for
bit, sums and inertia to float64 rounding (exactly where they are integers), over shapes from
fewer rows than a tile to several tiles, k = 1, ties, float32/float64, sample weights; the
``MPIML_KERNELS`` choice, the fallback without numba, and the on-disk cache."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest
from launch import run, single_thread_env
from mpi4py import MPI

from mpiml import kernels
from mpiml.fit.kmeans import fit_kmeans
from mpiml.models.kmeans import (
    MIN_TILE_ROWS,
    assign,
    assign_with_statistics,
    cluster_statistics,
    row_norms,
    statistics_size,
)


@pytest.fixture(autouse=True)
def fresh_kernel_choice():
    """Each test chooses the kernels afresh (the choice is made once per process)."""
    kernels.kmeans_tile.cache_clear()
    yield
    kernels.kmeans_tile.cache_clear()


def both_paths(X, centers, sample_weight=None):
    """(kernel, reference): each as (labels, distances, statistics buffer)."""
    assert kernels.kmeans_tile() is not None, "numba is a dependency: the kernel must load"
    k, d = centers.shape
    x_norms = row_norms(X)
    fused = np.full(statistics_size(k, d), np.nan)
    labels, distances = assign_with_statistics(fused, X, centers, x_norms, sample_weight)
    reference = np.empty(statistics_size(k, d))
    ref_labels, ref_distances = assign(X, centers, x_norms)
    cluster_statistics(reference, X, ref_labels, ref_distances, sample_weight)
    return (labels, distances, fused), (ref_labels, ref_distances, reference)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("n, d, k", [(5, 3, 4), (1, 2, 1), (700, 1, 1), (3 * MIN_TILE_ROWS + 7,
                                     300, 7), (20_000, 12, 16)])
def test_kernel_matches_the_reference(n, d, k, dtype, weighted):
    rng = np.random.default_rng(n + d + k)
    X = (rng.standard_normal((n, d)) * 3 + rng.integers(0, 5, (n, 1))).astype(dtype)
    centers = X[rng.choice(n, k, replace=False)].astype(np.float64) + 0.1
    weights = rng.random(n) * (rng.random(n) > 0.2) if weighted else None
    (labels, distances, fused), (ref_labels, ref_distances, reference) = both_paths(
        X, centers, weights)
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_array_equal(distances, ref_distances)
    np.testing.assert_allclose(fused, reference, rtol=1e-12, atol=1e-12 * np.abs(reference).max())
    if not weighted:
        np.testing.assert_array_equal(fused[k * d : k * d + k], reference[k * d : k * d + k])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ties_go_to_the_lowest_index_and_integer_sums_are_exact(dtype):
    # rows on the midpoint of centres 0 and 1, and centres 2 and 3 identical: every score
    # ties exactly (small integers), and integer rows and weights sum exactly in any order
    X = np.array([[0, 0], [0, 0], [5, 5], [5, 5], [1, 0], [-1, 0]], dtype=dtype)
    centers = np.array([[-1.0, 0.0], [1.0, 0.0], [5.0, 5.0], [5.0, 5.0]])
    weights = np.array([1.0, 2.0, 3.0, 0.0, 4.0, 5.0])
    for sample_weight in (None, weights):
        (labels, distances, fused), (ref_labels, _, reference) = both_paths(X, centers,
                                                                           sample_weight)
        np.testing.assert_array_equal(labels, [0, 0, 2, 2, 1, 0])
        np.testing.assert_array_equal(labels, ref_labels)
        np.testing.assert_array_equal(distances, [1, 1, 0, 0, 0, 0])
        np.testing.assert_array_equal(fused, reference)


def test_csr_rows_take_the_reference_path():
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 4))
    centers = X[:3].copy()
    (labels, distances, fused), (ref_labels, ref_distances, reference) = both_paths(
        sp.csr_matrix(X), centers)
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_array_equal(fused, reference)


def fit_with(choice, monkeypatch, X, sample_weight=None):
    monkeypatch.setenv("MPIML_KERNELS", choice)
    kernels.kmeans_tile.cache_clear()
    assert (kernels.kmeans_tile() is None) == (choice == "numpy")
    return fit_kmeans(X, 6, MPI.COMM_SELF, init=X[:6].astype(np.float64), max_iter=8, tol=0.0,
                      sample_weight=sample_weight)


@pytest.mark.filterwarnings("ignore:K-Means did not converge")
@pytest.mark.parametrize("weighted", [False, True])
def test_a_fit_with_the_kernel_equals_the_numpy_fit(monkeypatch, weighted):
    rng = np.random.default_rng(1)
    X = (rng.standard_normal((3000, 8)) + rng.integers(0, 6, (3000, 1)) * 2).astype(np.float32)
    weights = rng.random(3000) if weighted else None
    compiled = fit_with("numba", monkeypatch, X, weights)
    reference = fit_with("numpy", monkeypatch, X, weights)
    np.testing.assert_array_equal(compiled.labels, reference.labels)
    np.testing.assert_allclose(compiled.centers, reference.centers, rtol=1e-12, atol=1e-12)
    assert compiled.inertia == pytest.approx(reference.inertia, rel=1e-12)


def test_a_bad_kernel_choice_is_named(monkeypatch):
    monkeypatch.setenv("MPIML_KERNELS", "cython")
    with pytest.raises(ValueError, match=r"MPIML_KERNELS must be one of .*'cython'"):
        kernels.kmeans_tile()


def test_without_numba_the_reference_runs_and_a_warning_says_why(monkeypatch):
    monkeypatch.setitem(sys.modules, "numba", None)  # import numba now raises ImportError
    monkeypatch.delitem(sys.modules, "mpiml.kernels.kmeans", raising=False)
    with pytest.warns(RuntimeWarning, match="numba cannot be imported"):
        assert kernels.kmeans_tile() is None
    X = np.random.default_rng(2).standard_normal((40, 3))
    out = np.empty(statistics_size(2, 3))
    labels, _ = assign_with_statistics(out, X, X[:2].copy(), row_norms(X))
    np.testing.assert_array_equal(labels, assign(X, X[:2].copy())[0])


def test_the_kernels_compile_once_into_the_disk_cache(tmp_path):
    env = single_thread_env(NUMBA_CACHE_DIR=str(tmp_path))
    argv = [sys.executable, "-m", "mpiml.kernels"]
    counts = []
    for _ in range(2):
        job = run(argv, timeout=120, env=dict(env))
        assert job.returncode == 0, job.output
        found = re.search(r"(\d+) compiled, (\d+) loaded from the cache", job.output)
        assert found, job.output
        counts.append(tuple(int(n) for n in found.groups()))
    signatures = counts[0][0]
    assert signatures >= 4  # the K-Means kernel: float32/float64, with and without weights
    assert counts == [(signatures, 0), (0, signatures)]
    assert any(tmp_path.rglob("kmeans.kmeans_tile-*.nbc"))
