"""Metrics from sufficient statistics and the distributed scaler, against scikit-learn."""

import numpy as np
import pytest
import scipy.sparse as sp
from mpi4py import MPI
from sklearn import metrics as skm
from sklearn.preprocessing import StandardScaler

from mpiml.comm import Reducer
from mpiml.data.scaling import fit_scaler
from mpiml.models import metrics
from mpiml.models.scaling import apply_scaler


def binary_case(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(0.35 * y + 0.65 * rng.random(n), 0, 1)
    return y, np.column_stack([1 - p, p])


def test_binary_metrics_match_sklearn():
    y, proba = binary_case()
    got = metrics.classification_metrics(metrics.classification_stats(proba, y), 2)
    predicted = proba.argmax(axis=1)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, predicted))
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, proba))
    assert got["precision"] == pytest.approx(skm.precision_score(y, predicted))
    assert got["recall"] == pytest.approx(skm.recall_score(y, predicted))
    assert got["f1"] == pytest.approx(skm.f1_score(y, predicted))
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(y, proba[:, 1]), abs=1e-3)


def test_stats_of_split_rows_sum_to_stats_of_all_rows():
    y, proba = binary_case()
    whole = metrics.classification_stats(proba, y)
    parts = sum(metrics.classification_stats(proba[s], y[s])
                for s in (slice(0, 1000), slice(1000, 1001), slice(1001, None)))
    np.testing.assert_allclose(parts, whole)
    assert whole.size == metrics.classification_stats_size(2)


def test_multiclass_and_regression_metrics_match_sklearn():
    rng = np.random.default_rng(1)
    proba = rng.dirichlet(np.ones(4), size=500)
    y = rng.integers(0, 4, 500)
    got = metrics.classification_metrics(metrics.classification_stats(proba, y), 4)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, proba.argmax(1)))
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, proba, labels=range(4)))
    target = rng.standard_normal(400)
    predicted = target + 0.3 * rng.standard_normal(400)
    reg = metrics.regression_metrics(metrics.regression_stats(predicted, target))
    assert reg["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(target, predicted)))
    assert reg["mae"] == pytest.approx(skm.mean_absolute_error(target, predicted))
    assert reg["r2"] == pytest.approx(skm.r2_score(target, predicted))


def test_empty_evaluation_gives_no_metrics():
    assert metrics.classification_metrics(np.zeros(metrics.classification_stats_size(2)), 2) == {}
    assert metrics.regression_metrics(np.zeros(5)) == {}


def test_scaler_matches_sklearn_dense_and_sparse():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((300, 5)) * [1, 10, 100, 0, 3] + [5, -2, 1e4, 7, 0]
    mean, scale = fit_scaler(X, Reducer(MPI.COMM_SELF), X.shape[0])
    reference = StandardScaler().fit(X)
    np.testing.assert_allclose(mean, reference.mean_)
    np.testing.assert_allclose(scale, reference.scale_)
    np.testing.assert_allclose(apply_scaler(X.copy(), mean, scale), reference.transform(X),
                               atol=1e-12)
    sparse = sp.random(200, 6, density=0.3, random_state=3, format="csr") * 50
    mean, scale = fit_scaler(sparse, Reducer(MPI.COMM_SELF), sparse.shape[0])
    sparse_reference = StandardScaler(with_mean=False).fit(sparse)
    assert not mean.any()
    np.testing.assert_allclose(scale, sparse_reference.scale_)
    np.testing.assert_allclose(apply_scaler(sparse.copy(), mean, scale).toarray(),
                               sparse_reference.transform(sparse).toarray())
