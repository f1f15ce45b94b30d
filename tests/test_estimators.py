"""The estimators in one process (comm=None: COMM_WORLD of this one-rank session):
scikit-learn's check_estimator, agreement with scikit-learn's own estimators, to_sklearn,
save/load, the global score, parameter errors, and that fitting writes no file."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
from mpi4py import MPI
from sklearn import cluster, linear_model, svm
from sklearn.base import clone
from sklearn.datasets import load_iris, make_blobs, make_classification, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_estimator

import mpiml.estimators as E
from mpiml.files.model import load_model

#: Fewer boosting rounds / epochs inside check_estimator only, to keep it fast (its data sets
#: are tiny; the defaults pass too, in about twice the time).
CHECK_PARAMS = {"MLPClassifier": {"max_iter": 50}, "MLPRegressor": {"max_iter": 50},
                "HistGradientBoostingClassifier": {"max_iter": 10},
                "HistGradientBoostingRegressor": {"max_iter": 10}}
#: Checks that skip themselves when an optional package or setting is absent (they never skip
#: because of the estimator): pandas inputs, and the array-API dispatch scipy must enable.
ENVIRONMENT_SKIPS = ("pandas is not installed", "SCIPY_ARRAY_API is not set")
#: Checks expected to fail, as scikit-learn expects of its own KMeans: k-means++ draws from
#: the rows, so repeating rows instead of weighing them changes the draws and the clusters.
EXPECTED_FAILURES = {"KMeans": {
    check: "repeated rows change the k-means++ draws, so the clusters differ"
    for check in ("check_sample_weight_equivalence_on_dense_data",
                  "check_sample_weight_equivalence_on_sparse_data")}}
LINEAR = ("LinearRegression", "Ridge", "Lasso", "ElasticNet", "LogisticRegression",
          "SoftmaxRegression", "LinearSVC")
CLASSIFIERS = ("LogisticRegression", "SoftmaxRegression", "LinearSVC", "MLPClassifier",
               "HistGradientBoostingClassifier")


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("name", sorted(E.ESTIMATORS))
def test_check_estimator_passes(name):
    estimator = E.ESTIMATORS[name](**CHECK_PARAMS.get(name, {}))
    results = check_estimator(estimator, on_skip=None, on_fail=None,
                              expected_failed_checks=EXPECTED_FAILURES.get(name))
    failed = [f"{r['check_name']}: {r['exception']!r}" for r in results
              if r["status"] not in ("passed", "xfail") and not (
                  r["status"] == "skipped"
                  and any(reason in str(r["exception"]) for reason in ENVIRONMENT_SKIPS))]
    assert not failed, "\n".join(failed)
    assert sum(r["status"] == "passed" for r in results) >= 45


# -- data ------------------------------------------------------------------------------------


def classes_data(n_classes=2, n=300, d=5, seed=0, labels=None):
    X, y = make_classification(n_samples=n, n_features=d, n_informative=3, n_redundant=0,
                               n_classes=n_classes, n_clusters_per_class=1, random_state=seed)
    X = X * np.arange(1, d + 1) + 3.0  # unscaled, uncentred: standardize has work to do
    return X, (y if labels is None else np.asarray(labels)[y])


def values_data(n=300, d=5, seed=0):
    X, y = make_regression(n_samples=n, n_features=d, noise=5.0, bias=3.0, random_state=seed)
    return X * np.arange(1, d + 1) + 2.0, y


def fitted(name, **params):
    estimator = E.ESTIMATORS[name](**params)
    if name == "KMeans":
        X, _ = make_blobs(n_samples=300, centers=3, n_features=4, random_state=0)
        return estimator.fit(X), X, None
    X, y = classes_data(3 if name != "LinearSVC" else 2) if name in CLASSIFIERS \
        else values_data()
    return estimator.fit(X, y), X, y


# -- against scikit-learn ----------------------------------------------------------------------


def test_logistic_regression_matches_scikit_learn_binary_and_multinomial():
    for n_classes in (2, 3):
        X, y = classes_data(n_classes)
        X = StandardScaler().fit_transform(X)
        ours = E.LogisticRegression(C=0.5, tol=1e-12, max_iter=500).fit(X, y)
        reference = linear_model.LogisticRegression(C=0.5, tol=1e-12, max_iter=1000).fit(X, y)
        assert ours.coef_.shape == reference.coef_.shape == (1 if n_classes == 2 else 3, 5)
        np.testing.assert_allclose(ours.coef_, reference.coef_, atol=1e-5)
        np.testing.assert_allclose(ours.intercept_, reference.intercept_, atol=1e-5)


def test_softmax_regression_on_two_classes_is_the_logistic_model_with_twice_c():
    """Two penalised rows w0 = -w1 (at the optimum) give the difference w = 2 w1 the penalty
    ||w||^2 / 4: the logistic model's with C doubled."""
    X, y = classes_data(2)
    softmax = E.SoftmaxRegression(C=0.5, tol=1e-12, max_iter=500).fit(X, y)
    logistic = E.LogisticRegression(C=1.0, tol=1e-12, max_iter=500).fit(X, y)
    assert softmax.model_.kind == "softmax" and logistic.model_.kind == "logistic"
    np.testing.assert_allclose(softmax.coef_, logistic.coef_, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(softmax.predict_proba(X), logistic.predict_proba(X), atol=1e-6)


def test_linear_regression_and_ridge_match_scikit_learn():
    X, y = values_data()
    pairs = [(E.LinearRegression(), linear_model.LinearRegression()),
             (E.Ridge(alpha=30.0), linear_model.Ridge(alpha=30.0)),
             (E.Ridge(alpha=30.0, fit_intercept=False),
              linear_model.Ridge(alpha=30.0, fit_intercept=False))]
    for ours, reference in pairs:
        ours.fit(X, y), reference.fit(X, y)
        np.testing.assert_allclose(ours.coef_, reference.coef_, rtol=1e-6, atol=1e-6)
        assert ours.intercept_ == pytest.approx(reference.intercept_, rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("name, params", [
    ("Lasso", {"alpha": 2.0}), ("Lasso", {"alpha": 2.0, "fit_intercept": False}),
    ("ElasticNet", {"alpha": 2.0, "l1_ratio": 0.9}),
    ("ElasticNet", {"alpha": 0.5, "l1_ratio": 0.2})])
@pytest.mark.parametrize("weighted", [False, True])
def test_lasso_and_elastic_net_match_scikit_learn_with_its_exact_zeros(name, params, weighted):
    """Proximal gradient descent and scikit-learn's coordinate descent minimise the same
    strongly convex objective (standardised rows: well conditioned); ours runs until the loss
    stops decreasing in float64 (tol=0), theirs to a duality gap of 1e-12, so both lie within
    about 1e-10 of the one optimum: 1e-8 is the tolerance. The soft-thresholding step gives
    exact zeros, in the same coordinates as scikit-learn's."""
    X, y = make_regression(n_samples=300, n_features=8, n_informative=4, noise=5.0, bias=3.0,
                           random_state=0)
    X = StandardScaler().fit_transform(X)
    weights = np.random.default_rng(1).uniform(0.2, 3.0, len(y)) if weighted else None
    ours = E.ESTIMATORS[name](**params, tol=0.0, max_iter=5000)
    ours.fit(X, y, sample_weight=weights)
    reference = getattr(linear_model, name)(**params, tol=1e-12, max_iter=100_000)
    reference.fit(X, y, sample_weight=weights)
    assert ours.n_iter_ < 5000  # stopped: the loss no longer decreases
    np.testing.assert_allclose(ours.coef_, reference.coef_, rtol=0, atol=1e-8)
    assert ours.intercept_ == pytest.approx(reference.intercept_, abs=1e-8)
    np.testing.assert_array_equal(ours.coef_ == 0, reference.coef_ == 0)
    if params["alpha"] >= 2.0:
        assert (ours.coef_ == 0).sum() >= 2  # the zeros are tested, not just absent


def test_linear_svc_matches_scikit_learn_without_intercept():
    X, y = classes_data(2)
    X = StandardScaler().fit_transform(X)
    ours = E.LinearSVC(C=0.1, fit_intercept=False, tol=1e-12).fit(X, y)
    reference = svm.LinearSVC(C=0.1, fit_intercept=False, dual=False, tol=1e-12).fit(X, y)
    np.testing.assert_allclose(ours.coef_, reference.coef_, atol=1e-5)


@pytest.mark.parametrize("solver, comm_mode, learning_rate", [
    ("gd", "sync", 1.0), ("sgd", "sync", 0.1), ("adam", "overlap", 0.01),
    ("momentum", "local_sgd", 0.1)])
def test_first_order_solvers_approach_the_lbfgs_optimum(solver, comm_mode, learning_rate):
    X, y = classes_data(2)
    exact = E.LogisticRegression(C=0.1, standardize=True).fit(X, y)
    model = E.LogisticRegression(C=0.1, standardize=True, solver=solver, comm_mode=comm_mode,
                                 batch_size=50, max_iter=100, learning_rate_init=learning_rate,
                                 n_iter_no_change=None).fit(X, y)
    assert model.n_iter_ == 100
    np.testing.assert_allclose(model.coef_, exact.coef_, atol=0.05 * np.abs(exact.coef_).max())


def test_standardize_gives_the_same_optimum_in_original_units():
    """L-BFGS on standardised features reaches the same least-squares fit, reported on the
    original features (the scaler folded into coef_ and intercept_)."""
    X, y = values_data()
    plain = E.LinearRegression().fit(X, y)
    scaled = E.LinearRegression(standardize=True).fit(X, y)
    np.testing.assert_allclose(scaled.coef_, plain.coef_, rtol=1e-6, atol=1e-6)
    assert scaled.intercept_ == pytest.approx(plain.intercept_, rel=1e-6)
    assert scaled.model_.scaler is not None


def test_kmeans_finds_the_clusters_scikit_learn_finds():
    X, _ = make_blobs(n_samples=500, centers=4, n_features=3, cluster_std=0.5, random_state=2)
    ours = E.KMeans(n_clusters=4, random_state=1).fit(X)
    reference = cluster.KMeans(n_clusters=4, n_init=1, random_state=1).fit(X)
    order = np.lexsort(ours.cluster_centers_.T)
    expected = np.lexsort(reference.cluster_centers_.T)
    np.testing.assert_allclose(ours.cluster_centers_[order],
                               reference.cluster_centers_[expected], rtol=1e-10)
    assert ours.inertia_ == pytest.approx(reference.inertia_, rel=1e-10)
    assert ours.score(X) == pytest.approx(-ours.inertia_, rel=1e-12)


def test_mlp_and_boosted_trees_learn_iris():
    X, y = load_iris(return_X_y=True)
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    for estimator in (E.MLPClassifier(hidden_layer_sizes=(16,), learning_rate_init=0.01,
                                      standardize=True, random_state=0),
                      E.HistGradientBoostingClassifier(max_iter=20, min_samples_leaf=5)):
        estimator.fit(X, names)
        assert estimator.score(X, names) > 0.95
        assert set(estimator.predict(X)) <= set(names)
    regressor = E.MLPRegressor(hidden_layer_sizes=(16,), learning_rate_init=0.01,
                               max_iter=300, standardize=True).fit(X[:, :3], X[:, 3])
    assert regressor.score(X[:, :3], X[:, 3]) > 0.9


def test_boosted_trees_expose_rounds_and_trees_per_round():
    X, y = classes_data(3)
    model = E.HistGradientBoostingClassifier(max_iter=7).fit(X, y)
    assert model.n_iter_ == 7 and model.n_trees_per_iteration_ == 3
    assert model.decision_function(X).shape == (len(X), 3)
    regressor = E.HistGradientBoostingRegressor(max_iter=5).fit(*values_data())
    assert regressor.n_iter_ == 5 and regressor.n_trees_per_iteration_ == 1


# -- to_sklearn, save and load ---------------------------------------------------------------


@pytest.mark.parametrize("name, standardize", [(name, standardize) for name in LINEAR
                                                for standardize in (False, True)]
                         + [("KMeans", False)])
def test_to_sklearn_predicts_the_same(name, standardize):
    labels = ["cat", "dog", "emu"] if name in CLASSIFIERS else None
    params = {"standardize": True} if standardize else {}
    estimator = E.ESTIMATORS[name](**params)
    if name == "KMeans":
        X, _ = make_blobs(n_samples=300, centers=3, n_features=4, random_state=0)
        estimator.fit(X)
    else:
        X, y = (classes_data(2 if name == "LinearSVC" else 3, labels=labels[:2] if
                             name == "LinearSVC" else labels)
                if name in CLASSIFIERS else values_data())
        estimator.fit(X, y)
    twin = estimator.to_sklearn()
    assert twin.__class__.__module__.startswith("sklearn.")
    X_test = X[::3] + 0.1
    np.testing.assert_array_equal(twin.predict(X_test), estimator.predict(X_test))
    for method in ("decision_function", "predict_proba", "transform"):
        if hasattr(estimator, method):
            np.testing.assert_allclose(getattr(twin, method)(X_test),
                                       getattr(estimator, method)(X_test), rtol=1e-12)


@pytest.mark.parametrize("name", sorted(E.ESTIMATORS))
def test_save_then_load_predicts_the_same(name, tmp_path):
    params = {"standardize": True} if name not in ("KMeans",) and "Hist" not in name else {}
    estimator, X, _ = fitted(name, **params)
    path = tmp_path / "model.h5"
    estimator.save(path)
    loaded = E.load(path)
    assert type(loaded) is type(estimator) and loaded.get_params() == estimator.get_params()
    assert loaded.n_iter_ == estimator.n_iter_ and loaded.n_features_in_ == X.shape[1]
    for method in ("predict", "predict_proba", "decision_function", "transform"):
        if hasattr(estimator, method):
            np.testing.assert_array_equal(getattr(loaded, method)(X), getattr(estimator, method)(X))
    assert load_model(path).kind == estimator.model_.kind  # still an ordinary model file


def test_save_keeps_text_labels_and_feature_count(tmp_path):
    X, y = classes_data(3, labels=["ant", "bee", "cow"])
    model = E.LogisticRegression().fit(X, y)
    model.save(tmp_path / "text.h5")
    loaded = E.load(tmp_path / "text.h5")
    np.testing.assert_array_equal(loaded.classes_, ["ant", "bee", "cow"])
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def test_load_refuses_a_model_file_without_estimator_or_run_config(tmp_path):
    """A model file that neither an estimator nor a training run wrote (no config to rebuild
    the hyperparameters from) is refused with a clear message."""
    from mpiml.files.model import save_model

    model, _, _ = fitted("LinearRegression")
    save_model(tmp_path / "plain.h5", model.model_)
    with pytest.raises(ValueError, match="not written by an mpiml estimator"):
        E.load(tmp_path / "plain.h5")


# -- the global score ------------------------------------------------------------------------


def test_score_equals_scikit_learn_metrics_on_one_rank():
    X, y = classes_data(3)
    classifier = E.LogisticRegression().fit(X, y)
    weights = np.random.default_rng(0).random(len(y))
    assert classifier.score(X, y) == pytest.approx(accuracy_score(y, classifier.predict(X)))
    assert classifier.score(X, y, weights) == pytest.approx(
        accuracy_score(y, classifier.predict(X), sample_weight=weights))
    X, y = values_data()
    regressor = E.Ridge(alpha=1e4).fit(X, y)
    assert regressor.score(X, y, weights) == pytest.approx(
        r2_score(y, regressor.predict(X), sample_weight=weights), rel=1e-12)
    assert regressor.score(X, np.full(len(y), 2.0)) == 0.0  # constant targets, imperfect fit


# -- parameters, warnings, side effects ----------------------------------------------------------


@pytest.mark.parametrize("estimator, parameter", [
    (E.LogisticRegression(solver="newton"), "solver"),
    (E.LogisticRegression(C=0), "C"),
    (E.LogisticRegression(l1_ratio=0.5), "l1_ratio"),
    (E.LinearRegression(learning_rate_init=-1.0, solver="sgd"), "learning_rate_init"),
    (E.MLPClassifier(hidden_layer_sizes=(0,)), "hidden_layer_sizes"),
    (E.MLPClassifier(learning_rate="adaptive"), "learning_rate"),
    (E.KMeans(n_clusters=0), "n_clusters"),
    (E.HistGradientBoostingRegressor(max_bins=300), "max_bins"),
    (E.Ridge(random_state=-1), "random_state"),
    (E.Lasso(solver="lbfgs"), "solver 'lbfgs' cannot minimise the L1 term"),
    (E.ElasticNet(l1_ratio=1.5), "l1_ratio"),
    (E.ElasticNet(solver="sgd"), "learning_rate_init='auto' is the step of solver 'gd'"),
])
def test_bad_hyperparameters_are_named(estimator, parameter):
    X, y = classes_data(2)
    with pytest.raises(ValueError, match=parameter):
        estimator.fit(X, y)


def test_linear_svc_refuses_more_than_two_classes():
    with pytest.raises(ValueError, match="Only binary classification is supported"):
        E.LinearSVC().fit(*classes_data(3))


def test_hitting_max_iter_warns_convergence():
    X, y = classes_data(2)
    with pytest.warns(ConvergenceWarning, match="max_iter=2"):
        E.LogisticRegression(max_iter=2).fit(X, y)
    with pytest.warns(ConvergenceWarning, match="max_iter=3"):
        E.MLPClassifier(max_iter=3, n_iter_no_change=10).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        E.MLPClassifier(max_iter=3, n_iter_no_change=None).fit(X, y)  # fixed epochs: no warning


def test_fitting_writes_no_file_unless_given_a_checkpoint_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    X, y = classes_data(2)
    for name, estimator in E.ESTIMATORS.items():
        estimator(**CHECK_PARAMS.get(name, {})).fit(X, y)
    assert list(tmp_path.iterdir()) == []
    first = E.LogisticRegression(checkpoint_dir=tmp_path / "ckpt").fit(X, y)
    assert any((tmp_path / "ckpt").iterdir())
    resumed = E.LogisticRegression(checkpoint_dir=tmp_path / "ckpt").fit(X, y)
    np.testing.assert_array_equal(resumed.coef_, first.coef_)


def test_clone_shares_the_communicator():
    group = MPI.COMM_SELF.Dup()
    try:
        model = E.LogisticRegression(C=2.0, comm=group)
        twin = clone(model)
        assert twin.comm is group and twin.C == 2.0 and twin is not model
    finally:
        group.Free()


def test_import_mpiml_does_not_import_scikit_learn():
    code = ("import sys, mpiml; mpiml.load_shard; "
            "assert 'sklearn' not in sys.modules and 'mpiml.estimators' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
