"""Serial tests of K-Means (one rank, MPI.COMM_SELF): Lloyd against scikit-learn from the same
initial centres, dense and CSR; k-means++ quality; empty-cluster reseeding; bit-exact resume;
the mini-batch variant against Lloyd."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from mpi4py import MPI
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs

from mpiml.fit.kmeans import fit_kmeans

SELF = MPI.COMM_SELF


def blobs(n=601, d=5, k=4, seed=0, sparse_fraction=0.0):
    X, _ = make_blobs(n_samples=n, n_features=d, centers=k, cluster_std=2.0, random_state=seed)
    if sparse_fraction:
        X[np.random.default_rng(seed).random(X.shape) < sparse_fraction] = 0.0
    return X


@pytest.mark.parametrize("layout", ["dense", "csr"])
def test_lloyd_matches_scikit_learn_from_the_same_centres(layout):
    X = blobs(sparse_fraction=0.3 if layout == "csr" else 0.0)
    init = X[[3, 50, 100, 200, 400]]
    data = sp.csr_matrix(X) if layout == "csr" else X
    ours = fit_kmeans(data, 5, SELF, init=init, max_iter=100, tol=1e-6)
    reference = KMeans(n_clusters=5, init=init, n_init=1, algorithm="lloyd", tol=1e-6,
                       max_iter=100).fit(data)
    assert ours.converged and ours.n_iter == reference.n_iter_
    np.testing.assert_allclose(ours.centers, reference.cluster_centers_, rtol=1e-6, atol=1e-9)
    assert ours.inertia == pytest.approx(reference.inertia_, rel=1e-6)
    np.testing.assert_array_equal(ours.labels, reference.labels_)


def test_max_iter_stops_without_convergence_and_warns():
    X = blobs()
    init = X[:6]
    with pytest.warns(RuntimeWarning, match="did not converge"):
        result = fit_kmeans(X, 6, SELF, init=init, max_iter=2, tol=0.0)
    reference = KMeans(n_clusters=6, init=init, n_init=1, algorithm="lloyd", tol=0.0,
                       max_iter=2).fit(X)
    assert result.n_iter == 2 and not result.converged
    np.testing.assert_allclose(result.centers, reference.cluster_centers_, rtol=1e-6)
    assert result.inertia == pytest.approx(reference.inertia_, rel=1e-6)


def test_kmeans_plusplus_is_seeded_and_finds_the_blobs():
    X = blobs(k=4, seed=3)
    first = fit_kmeans(X, 4, SELF, seed=5)
    again = fit_kmeans(X, 4, SELF, seed=5)
    np.testing.assert_array_equal(first.centers, again.centers)
    best = min(KMeans(n_clusters=4, n_init=1, random_state=s).fit(X).inertia_ for s in range(5))
    assert first.inertia <= best * 1.01


def test_kmeans_plusplus_with_fewer_distinct_rows_than_clusters():
    X = np.repeat(np.eye(3), 5, axis=0)  # 3 distinct rows, 4 clusters: one draw has no weight
    result = fit_kmeans(X, 4, SELF, seed=0, max_iter=5)
    assert result.inertia == 0.0 and np.isfinite(result.centers).all()


@pytest.mark.filterwarnings("ignore:K-Means did not converge")
def test_empty_cluster_is_reseeded_on_the_farthest_row():
    X = blobs(n=200)
    init = X[[0, 0, 7]]  # a duplicate centre: cluster 1 gets no rows in the first iteration
    states = []
    result = fit_kmeans(X, 3, SELF, init=init, max_iter=1, tol=0.0, on_iteration=states.append)
    distances = ((X[:, None, :] - init[None, [0, 2], :]) ** 2).sum(axis=2).min(axis=1)
    np.testing.assert_array_equal(states[0]["centers"][1], X[np.argmax(distances)])
    assert len(np.unique(result.labels)) == 3


@pytest.mark.filterwarnings("ignore:K-Means did not converge")
@pytest.mark.parametrize("batch_size", [None, 64])
@pytest.mark.parametrize("layout", ["dense", "csr"])
def test_resume_from_a_captured_state_is_bit_exact(layout, batch_size):
    X = blobs(sparse_fraction=0.2)
    data = sp.csr_matrix(X) if layout == "csr" else X
    options = dict(max_iter=30, tol=1e-8, seed=2, batch_size=batch_size)
    whole = fit_kmeans(data, 5, SELF, **options)
    states = []
    fit_kmeans(data, 5, SELF, **dict(options, max_iter=1 if batch_size else 3),
               on_iteration=states.append)
    resumed = fit_kmeans(data, 5, SELF, start=states[2], **options)
    assert resumed.n_iter == whole.n_iter and resumed.converged == whole.converged
    assert np.array_equal(resumed.centers, whole.centers) and resumed.inertia == whole.inertia
    np.testing.assert_array_equal(resumed.labels, whole.labels)


def test_minibatch_inertia_is_close_to_lloyd():
    X = blobs(n=3001, k=6, seed=4)
    lloyd = fit_kmeans(X, 6, SELF, seed=0)
    minibatch = fit_kmeans(X, 6, SELF, seed=0, batch_size=256, max_iter=50)
    assert minibatch.converged
    assert abs(minibatch.inertia - lloyd.inertia) <= 0.03 * lloyd.inertia, (minibatch.inertia,
                                                                           lloyd.inertia)


def test_float32_rows_are_accepted():
    X = blobs()
    wide = fit_kmeans(X, 3, SELF, init=X[:3])
    narrow = fit_kmeans(X.astype(np.float32), 3, SELF, init=X[:3])
    np.testing.assert_allclose(narrow.centers, wide.centers, rtol=1e-5)


@pytest.mark.parametrize("bad, match", [
    (dict(n_clusters=0), "n_clusters"),
    (dict(n_clusters=1000), "exceeds"),
    (dict(init="random"), "init"),
    (dict(init=np.zeros((2, 2))), r"shape \(3, 5\)"),
    (dict(batch_size=0), "batch_size"),
    (dict(tol=-1.0), "tol"),
    (dict(n_total=7), "n_total=7"),
    (dict(row_offset=4), "row_offset"),
])
def test_bad_arguments_are_named(bad, match):
    arguments = {"n_clusters": 3, **bad}
    with pytest.raises(ValueError, match=match):
        fit_kmeans(blobs(n=100), comm=SELF, **arguments)
