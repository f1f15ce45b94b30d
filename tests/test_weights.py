"""Sample weights and class weights in one process: the models' weighted sums, integer weights
equal to repeated rows, the estimators against scikit-learn's weighted fits, bad weights as
one-line errors, the config keys, and a CLI job with ``data.weight`` and
``model.class_weight``."""

from __future__ import annotations

import json
import sys
import warnings

import h5py
import numpy as np
import pytest
import yaml
from datasets import make_problem
from launch import run
from mpi4py import MPI
from sklearn import cluster, ensemble, linear_model, svm
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble._hist_gradient_boosting.binning import _BinMapper

import mpiml.estimators as E
from mpiml import config
from mpiml.config import ConfigError
from mpiml.data.shard import DataError
from mpiml.files.model import load_model
from mpiml.fit import train
from mpiml.fit.boosting import bin_edges
from mpiml.fit.layout import RowLayout
from mpiml.models import MLP, LinearRegression, LinearSVM, LogisticRegression, SoftmaxRegression
from mpiml.models.kmeans import cluster_statistics, statistics_size
from mpiml.models.trees import gradients, loss_sum, weighted_percentiles

SELF = MPI.COMM_SELF
OFF = {"checkpoint": {"enabled": False}, "fault": {"stall_seconds": None}}


def counts(n, seed=0):
    """Integer weights 0..3: the rows repeated that many times are the same data."""
    return np.random.default_rng(seed).integers(0, 4, n)


# -- the models ----------------------------------------------------------------------------------


MODELS = [LogisticRegression(4, alpha=0.1), LinearRegression(4), SoftmaxRegression(4, 3),
          LinearSVM(4, loss="hinge"), LinearSVM(4, loss="squared_hinge"),
          MLP(4, n_classes=3, hidden=(5,)), MLP(4, hidden=(5,), task="regression",
                                               activation="tanh")]


@pytest.mark.parametrize("model", MODELS, ids=repr)
@pytest.mark.parametrize("rows", [40, 70_000])  # one tile, and many (TILE_BYTES)
def test_integer_weights_give_the_sums_of_repeated_rows(model, rows):
    task = "regression" if model.kind in ("linear", "mlp_regressor") else (
        "multiclass" if model.kind in ("softmax", "mlp_classifier") else "binary")
    X, y = make_problem(task, rows, 4, seed=1)
    repeats = counts(rows)
    params = np.random.default_rng(2).normal(size=model.n_params)
    weighted, repeated = np.empty(model.n_params), np.empty(model.n_params)
    loss = model.loss_grad_sum(params, X, y, weighted, repeats.astype(float))
    reference = model.loss_grad_sum(params, np.repeat(X, repeats, 0), np.repeat(y, repeats),
                                    repeated)
    assert loss == pytest.approx(reference, rel=1e-10)
    np.testing.assert_allclose(weighted, repeated, rtol=1e-9, atol=1e-9 * np.abs(repeated).max())
    assert model.loss_sum(params, X, y, repeats.astype(float)) == pytest.approx(loss, rel=1e-12)


def test_weights_of_one_are_the_unweighted_sums():
    model = SoftmaxRegression(4, 3)
    X, y = make_problem("multiclass", 50, 4, seed=3)
    params = np.random.default_rng(0).normal(size=model.n_params)
    plain, ones = np.empty(model.n_params), np.empty(model.n_params)
    assert model.loss_grad_sum(params, X, y, plain) == pytest.approx(
        model.loss_grad_sum(params, X, y, ones, np.ones(50)), rel=1e-14)
    np.testing.assert_allclose(plain, ones, rtol=1e-14)
    with pytest.raises(ValueError, match="sample_weight must be 1-D with 50 entries"):
        model.loss_grad_sum(params, X, y, ones, np.ones(49))


@pytest.mark.parametrize("sparse", [False, True])
def test_weighted_cluster_statistics_are_those_of_repeated_rows(sparse):
    import scipy.sparse as sp

    X = np.random.default_rng(0).normal(size=(30, 3))
    labels, distances = np.arange(30) % 4, np.random.default_rng(1).uniform(size=30)
    repeats = counts(30)
    weighted, repeated = np.empty(statistics_size(4, 3)), np.empty(statistics_size(4, 3))
    cluster_statistics(weighted, sp.csr_matrix(X) if sparse else X, labels, distances,
                       repeats.astype(float))
    cluster_statistics(repeated, np.repeat(X, repeats, 0), np.repeat(labels, repeats),
                       np.repeat(distances, repeats))
    np.testing.assert_allclose(weighted, repeated, rtol=1e-12)


@pytest.mark.parametrize("task", ["binary", "regression", "multiclass"])
def test_tree_gradients_and_loss_are_weighted(task):
    raw = np.random.default_rng(0).normal(size=(20, 3 if task == "multiclass" else 1))
    targets = np.arange(20) % 3 if task == "multiclass" else (np.arange(20) % 2).astype(float)
    weights = np.random.default_rng(1).uniform(size=20)
    np.testing.assert_allclose(gradients(raw, targets, task, weights),
                               gradients(raw, targets, task) * weights)
    repeats = counts(20)
    assert loss_sum(raw, targets, task, repeats.astype(float)) == pytest.approx(
        loss_sum(np.repeat(raw, repeats, 0), np.repeat(targets, repeats), task))


def test_weighted_percentiles_equal_repeated_values():
    values = np.sort(np.random.default_rng(0).normal(size=200))
    repeats = counts(200, seed=3) + 1
    percentiles = np.linspace(0, 100, 11)[1:-1]
    np.testing.assert_array_equal(
        weighted_percentiles(values, repeats.astype(float), percentiles),
        np.percentile(np.repeat(values, repeats), percentiles, method="averaged_inverted_cdf"))


def test_weighted_bin_edges_equal_scikit_learns():
    X = np.random.default_rng(0).normal(size=(3000, 3)).round(2)  # > max_bins distinct values
    weights = np.random.default_rng(1).uniform(0, 2, 3000)
    weights[::7] = 0.0
    layout = RowLayout(X, SELF)
    edges, offsets = bin_edges(X, layout, 63, 0, SELF, sample_weight=weights)
    mapper = _BinMapper(n_bins=64, subsample=None).fit(X, sample_weight=weights)
    for j in range(3):
        np.testing.assert_allclose(edges[offsets[j]:offsets[j + 1]],
                                   mapper.bin_thresholds_[j], rtol=1e-12)


# -- the estimators against scikit-learn ---------------------------------------------------------


def classes_data(n_classes=2, n=240, seed=0):
    X, y = make_classification(n_samples=n, n_features=5, n_informative=3, n_redundant=0,
                               n_classes=n_classes, n_clusters_per_class=1, random_state=seed)
    return X, y, np.random.default_rng(seed).uniform(0, 3, n)


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("class_weight", [None, "balanced", {0: 3.0}])
def test_logistic_regression_matches_scikit_learns_weighted_fit(n_classes, class_weight):
    X, y, weights = classes_data(n_classes)
    ours = E.LogisticRegression(C=0.5, tol=1e-12, class_weight=class_weight, comm=SELF)
    ours.fit(X, y, sample_weight=weights)
    reference = linear_model.LogisticRegression(C=0.5, tol=1e-12, max_iter=10_000,
                                                class_weight=class_weight)
    reference.fit(X, y, sample_weight=weights)
    np.testing.assert_allclose(ours.coef_, reference.coef_, atol=1e-5)
    np.testing.assert_allclose(ours.intercept_, reference.intercept_, atol=1e-5)


@pytest.mark.parametrize("name", ["LinearRegression", "Ridge"])
def test_least_squares_match_scikit_learns_weighted_fit(name):
    X, y = make_regression(n_samples=200, n_features=5, noise=5.0, random_state=0)
    weights = np.random.default_rng(0).uniform(0, 3, 200)
    options = {"alpha": 3.0} if name == "Ridge" else {}
    ours = E.ESTIMATORS[name](**options, tol=1e-12, comm=SELF).fit(X, y, sample_weight=weights)
    reference = getattr(linear_model, name)(**options).fit(X, y, sample_weight=weights)
    np.testing.assert_allclose(ours.coef_, reference.coef_, rtol=1e-6, atol=1e-6)
    assert ours.intercept_ == pytest.approx(reference.intercept_, abs=1e-5)


@pytest.mark.parametrize("class_weight", [None, {1: 3.0}, "balanced"])
def test_linear_svc_matches_scikit_learns_weighted_fit(class_weight):
    X, y, weights = classes_data()
    ours = E.LinearSVC(C=0.5, fit_intercept=False, class_weight=class_weight, tol=1e-12,
                       comm=SELF).fit(X, y, sample_weight=weights)
    reference = svm.LinearSVC(C=0.5, fit_intercept=False, class_weight=class_weight,
                              tol=1e-12, max_iter=100_000).fit(X, y, sample_weight=weights)
    np.testing.assert_allclose(ours.coef_, reference.coef_, atol=1e-5)


@pytest.mark.parametrize("batch_size", [None, 40])
def test_kmeans_matches_scikit_learns_weighted_fit(batch_size):
    X, _, weights = classes_data(n=300)
    init = X[:4]
    ours = E.KMeans(4, init=init, tol=0.0, batch_size=batch_size, comm=SELF)
    ours.fit(X, sample_weight=weights)
    if batch_size is None:
        reference = cluster.KMeans(4, init=init, n_init=1, tol=0.0).fit(X, sample_weight=weights)
        np.testing.assert_allclose(ours.cluster_centers_, reference.cluster_centers_,
                                   rtol=1e-10)
        assert ours.inertia_ == pytest.approx(reference.inertia_, rel=1e-10)
    repeats = counts(300)
    weighted = E.KMeans(4, init=init, tol=0.0, batch_size=batch_size, comm=SELF)
    weighted.fit(X, sample_weight=repeats)
    if batch_size is None:  # mini-batches of repeated rows are other batches
        repeated = E.KMeans(4, init=init, tol=0.0, comm=SELF).fit(np.repeat(X, repeats, 0))
        np.testing.assert_allclose(weighted.cluster_centers_, repeated.cluster_centers_,
                                   rtol=1e-10)
        assert weighted.inertia_ == pytest.approx(repeated.inertia_, rel=1e-10)


def test_kmeans_plus_plus_never_seeds_on_a_row_of_weight_zero():
    X = np.random.default_rng(0).normal(size=(60, 2))
    weights = np.zeros(60)
    weights[[3, 17, 40]] = 1.0
    for seed in range(5):
        model = E.KMeans(3, max_iter=1, random_state=seed, comm=SELF)
        model.fit(X, sample_weight=weights)
        chosen = {tuple(center) for center in model.cluster_centers_}
        assert chosen == {tuple(X[3]), tuple(X[17]), tuple(X[40])}


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_boosted_trees_are_close_to_scikit_learns_weighted_fit(task):
    if task == "binary":
        X, y, weights = classes_data(n=600)
    else:
        X, y = make_regression(n_samples=600, n_features=5, noise=5.0, random_state=0)
        weights = np.random.default_rng(0).uniform(0, 3, 600)
    X = X.round(1)  # fewer distinct values than bins: the edges are the same midpoints
    options = dict(max_iter=20, max_depth=3, learning_rate=0.2, min_samples_leaf=10)
    name = "HistGradientBoostingClassifier" if task == "binary" else (
        "HistGradientBoostingRegressor")
    ours = E.ESTIMATORS[name](**options, comm=SELF).fit(X, y, sample_weight=weights)
    reference = getattr(ensemble, name)(**options, max_leaf_nodes=None, early_stopping=False)
    reference.fit(X, y, sample_weight=weights)
    if task == "binary":
        assert np.mean(ours.predict(X) == reference.predict(X)) >= 0.99
    else:  # depth-wise growth splits ties otherwise: the tolerance of tests/test_hgbt.py
        score = ours.score(X, y, sample_weight=weights)
        assert abs(score - reference.score(X, y, sample_weight=weights)) <= 0.03, score
    baseline = ours.model_.arrays["baseline"]
    np.testing.assert_allclose(baseline, reference._baseline_prediction.ravel(), rtol=1e-12)


def test_boosted_trees_with_integer_weights_equal_repeated_rows():
    X, y, _ = classes_data(n=300)
    X = X.round(1)
    repeats = counts(300) + 1  # min_samples_leaf counts rows: every row present once at least
    options = dict(max_iter=5, max_depth=3, min_samples_leaf=1, comm=SELF)
    weighted = E.HistGradientBoostingClassifier(**options).fit(X, y, sample_weight=repeats)
    repeated = E.HistGradientBoostingClassifier(**options).fit(np.repeat(X, repeats, 0),
                                                               np.repeat(y, repeats))
    np.testing.assert_allclose(weighted.predict_proba(X), repeated.predict_proba(X),
                               rtol=1e-9)


@pytest.mark.parametrize("name", ["LogisticRegression", "SoftmaxRegression", "Ridge",
                                  "LinearSVC", "MLPClassifier", "MLPRegressor"])
def test_integer_weights_equal_repeated_rows(name):
    regression = name in ("Ridge", "MLPRegressor")
    X, y = (make_regression(n_samples=150, n_features=4, noise=5.0, random_state=0)
            if regression else classes_data(n=150)[:2])
    repeats = counts(150)
    options = dict(tol=1e-12, comm=SELF)
    if name.startswith("MLP"):  # full batch: the same objective, so the same L-BFGS path
        options.update(hidden_layer_sizes=(4,), solver="lbfgs", max_iter=30, random_state=0)
    weighted = E.ESTIMATORS[name](**options).fit(X, y, sample_weight=repeats)
    repeated = E.ESTIMATORS[name](**options).fit(np.repeat(X, repeats, 0), np.repeat(y, repeats))
    method = "predict" if regression else "decision_function" if name == "LinearSVC" else (
        "predict_proba")
    np.testing.assert_allclose(getattr(weighted, method)(X), getattr(repeated, method)(X),
                               rtol=1e-6, atol=1e-8)


def test_mlp_matches_scikit_learns_weighted_objective():
    """The penalty scales as scikit-learn's with weights: at scikit-learn's weighted optimum,
    our full-batch gradient is zero (up to its convergence)."""
    from sklearn.neural_network import MLPRegressor

    X, y = make_regression(n_samples=120, n_features=3, noise=1.0, random_state=0)
    y = y / np.abs(y).max()
    weights = np.random.default_rng(0).uniform(0, 3, 120)
    reference = MLPRegressor(hidden_layer_sizes=(4,), solver="lbfgs", alpha=0.5, max_iter=5000,
                             tol=1e-14, random_state=0).fit(X, y, sample_weight=weights)
    params = np.concatenate([np.concatenate([w.ravel(), b]) for w, b in
                             zip(reference.coefs_, reference.intercepts_, strict=True)])

    def largest_gradient(alpha):
        model = MLP(3, hidden=(4,), task="regression", alpha=alpha)
        grad = np.empty(model.n_params)
        model.loss_grad_sum(params, X, y, grad, weights)
        grad /= weights.sum()
        return np.abs(grad + model.penalty(params)[1]).max()

    # alpha / W (what MLPRegressor(sample_weight) means) vs alpha / N (ignoring the weights)
    assert largest_gradient(0.5 / weights.sum()) < 5e-5 < 5e-4 < largest_gradient(0.5 / 120)


# -- bad weights -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("weights", "match"), [
    (np.array([1.0, -2.0, 1.0, 1.0]), "sample_weight on rank 0 holds -2.0 at row 1"),
    (np.array([1.0, 1.0, 1.0]), r"sample_weight must have shape \(4,\)"),
    (np.zeros(4), "every sample weight is zero"),
    (np.array([1.0, 1.0, np.inf, 1.0]), "sample_weight"),
    (np.array([1.0, 1.0, 0.0, 0.0]), "only class 0 has a positive weight"),
])
def test_bad_sample_weights_are_one_line_errors(weights, match):
    X, y = np.arange(8.0).reshape(4, 2), np.array([0, 0, 1, 1])
    with pytest.raises(ValueError, match=match) as raised:
        E.LogisticRegression(comm=SELF).fit(X, y, sample_weight=weights)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(("class_weight", "match"), [
    ({5: 1.0}, r"class_weight gives a weight to label 5, which is not a class of the data"),
    ({0: -1.0}, "the weight of class 0 must be a finite number >= 0"),
    ("heavy", "class_weight must be 'balanced'"),
])
def test_bad_class_weights_name_the_parameter(class_weight, match):
    X, y, _ = classes_data(n=40)
    with pytest.raises(ValueError, match=match):
        E.LogisticRegression(class_weight=class_weight, comm=SELF).fit(X, y)


def test_balanced_class_weights_need_every_class_weighed():
    X, y, _ = classes_data(n=40)
    with pytest.raises(ValueError, match="'balanced': class 0 has no weight"):
        E.HistGradientBoostingClassifier(class_weight="balanced", comm=SELF).fit(
            X, y, sample_weight=(y == 1).astype(float))


def test_the_callers_weights_are_not_modified():
    X, y, weights = classes_data(n=60)
    before = weights.copy()
    E.LogisticRegression(class_weight="balanced", comm=SELF).fit(X, y, sample_weight=weights)
    E.KMeans(3, comm=SELF).fit(X, sample_weight=weights)
    np.testing.assert_array_equal(weights, before)


# -- the config and the CLI ------------------------------------------------------------------------


def test_class_weight_config_values():
    assert config.from_dict({"model": {"class_weight": {0: 1, 1: 4}}}).model.class_weight == {
        0: 1.0, 1: 4.0}
    for bad, match in (({"class_weight": "heavy"}, "balanced or a mapping"),
                       ({"class_weight": {"a": 1}}, "label 'a' must be a number"),
                       ({"class_weight": {0: -1}}, "must be a finite number >= 0"),
                       ({"kind": "linear", "class_weight": "balanced"}, "is regression")):
        with pytest.raises(ConfigError, match=match):
            config.from_dict({"model": bad})


def weighted_file(path, n=400, bad=None):
    X, y = make_problem("binary", n, 4, seed=6)
    weights = np.random.default_rng(0).uniform(0, 2, n)
    if bad is not None:
        weights[bad] = -1.0
    with h5py.File(path, "w") as out:
        out["X"], out["y"], out["w"] = X, y, weights
    return X, y, weights


def test_a_weight_data_set_gives_the_estimators_fit(tmp_path):
    X, y, weights = weighted_file(tmp_path / "w.h5")
    total = float(weights @ np.where(y == 1, 2.0, 1.0))  # class 1 weighs twice
    raw = {"data": {"train": str(tmp_path / "w.h5"), "weight": "w"},
           "model": {"kind": "logistic", "alpha": 1.0 / (0.5 * total),
                     "class_weight": {1.0: 2.0}},
           "optimizer": {"name": "lbfgs", "tol": 1e-14}, "train": {"max_steps": 200}, **OFF}
    fitted = train(config.from_dict(raw), SELF)
    reference = linear_model.LogisticRegression(C=0.5, tol=1e-12, class_weight={1: 2.0})
    reference.fit(X, y, sample_weight=weights)
    params = fitted.params
    np.testing.assert_allclose(params[:4], reference.coef_[0], atol=1e-5)
    assert params[4] == pytest.approx(reference.intercept_[0], abs=1e-5)


@pytest.mark.parametrize(("weight", "bad", "match"), [
    ("w", 123, r"data set 'w' holds -1.0 at global row 123 \(sample weights must be finite"),
    ("nope", None, "no weight data set 'nope'"),
])
def test_a_bad_weight_data_set_is_named(tmp_path, weight, bad, match):
    weighted_file(tmp_path / "w.h5", bad=bad)
    raw = {"data": {"train": str(tmp_path / "w.h5"), "weight": weight},
           "model": {"kind": "logistic"}, **OFF}
    with pytest.raises(DataError, match=match):
        train(config.from_dict(raw), SELF)


def test_a_cli_job_with_data_weight_and_class_weight(tmp_path):
    weighted_file(tmp_path / "w.h5")
    raw = {"data": {"train": str(tmp_path / "w.h5"), "weight": "w"},
           "model": {"kind": "softmax", "alpha": 0.01, "class_weight": "balanced"},
           "optimizer": {"name": "gd", "lr": 0.5},
           "train": {"epochs": 5, "batch_size": None, "log_every": 1},
           "output": {"dir": str(tmp_path / "run")}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    job = run([sys.executable, "-m", "mpiml.train", str(tmp_path / "config.yaml")], timeout=120)
    assert job.returncode == 0, job.output
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["data"]["weight"] == "w" and saved["model"]["class_weight"] == "balanced"
    records = [json.loads(line) for line in
               (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["event"] == "done"
    assert load_model(tmp_path / "run" / "model.h5").kind == "softmax"
    bad = run([sys.executable, "-m", "mpiml.train", str(tmp_path / "config.yaml"),
               "--set", "model.class_weight={7: 2}", "--set",
               f"output.dir={tmp_path / 'other'}"], timeout=120)
    assert bad.returncode != 0
    assert "model.class_weight gives a weight to label 7" in bad.output, bad.output


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def test_a_saved_class_weight_mapping_loads_with_its_label_types(tmp_path):
    """JSON keys are text: an integer label must not come back as "1" after save and load."""
    X, y = np.random.default_rng(0).normal(size=(60, 3)), np.arange(60) % 2
    fitted = E.LogisticRegression(class_weight={1: 3.0, 0: 1.0}, comm=SELF).fit(X, y)
    fitted.save(tmp_path / "weighted.h5")
    loaded = E.load(tmp_path / "weighted.h5", comm=SELF)
    assert loaded.get_params()["class_weight"] == {1: 3.0, 0: 1.0}
    np.testing.assert_array_equal(loaded.predict(X), fitted.predict(X))
