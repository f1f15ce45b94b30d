"""Interop with scikit-learn (issue 17): ``to_sklearn()`` of every family scikit-learn has an
equivalent for predicts what the mpiml estimator predicts on held-out rows, standardised models
included; the boosted trees say why they have none; and ``mpiml.estimators.load`` opens the model
files ``python -m mpiml.train`` writes (trained under mpiexec) as estimators that predict what
``python -m mpiml.predict`` predicts."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import scipy.sparse as sp
import yaml
from datasets import make_problem, write_dense
from launch import run_mpi
from sklearn import cluster, linear_model, neural_network, svm
from sklearn.base import clone
from sklearn.datasets import make_blobs, make_classification, make_regression

import mpiml.estimators as E
from mpiml.config import dump, from_dict
from mpiml.files.model import save_model
from mpiml.models.saved import SavedModel

TOLERANCE = dict(rtol=0, atol=1e-10)
METHODS = ("predict_proba", "decision_function", "transform")


def classes_data(n_classes, n=400, d=5, seed=0):
    X, y = make_classification(n_samples=n, n_features=d, n_informative=3, n_redundant=0,
                               n_classes=n_classes, n_clusters_per_class=1, random_state=seed)
    return X * np.arange(1, d + 1) + 3.0, np.array(["ant", "bee", "cow"])[y]


def values_data(n=400, d=5, seed=0):
    X, y = make_regression(n_samples=n, n_features=d, noise=5.0, bias=3.0, random_state=seed)
    return X * np.arange(1, d + 1) + 2.0, y


def assert_same_predictions(twin, estimator, X) -> None:
    """Equal labels (values within 1e-10), and every score method within 1e-10."""
    expected = estimator.predict(X)
    if expected.dtype.kind in "fc":
        np.testing.assert_allclose(twin.predict(X), expected, **TOLERANCE)
    else:
        np.testing.assert_array_equal(twin.predict(X), expected)
    for method in METHODS:
        if hasattr(estimator, method):
            np.testing.assert_allclose(getattr(twin, method)(X), getattr(estimator, method)(X),
                                       **TOLERANCE)


MLP = dict(hidden_layer_sizes=(8, 6), max_iter=30, batch_size=64, n_iter_no_change=None)
CASES = {
    "linear": (E.LinearRegression, {}, None, linear_model.LinearRegression),
    "linear-standardized": (E.LinearRegression, {"standardize": True}, None,
                            linear_model.LinearRegression),
    "ridge-standardized": (E.Ridge, {"alpha": 3.0, "standardize": True}, None,
                           linear_model.Ridge),
    "lasso-standardized": (E.Lasso, {"alpha": 2.0, "standardize": True}, None,
                           linear_model.Lasso),
    "elastic-net": (E.ElasticNet, {"alpha": 2.0, "l1_ratio": 0.3}, None,
                    linear_model.ElasticNet),
    "logistic-binary-standardized": (E.LogisticRegression, {"standardize": True}, 2,
                                     linear_model.LogisticRegression),
    "logistic-multinomial": (E.LogisticRegression, {}, 3, linear_model.LogisticRegression),
    "softmax-two-classes": (E.SoftmaxRegression, {"standardize": True}, 2,
                            linear_model.LogisticRegression),
    "svm-standardized": (E.LinearSVC, {"standardize": True}, 2, svm.LinearSVC),
    "mlp-binary-standardized": (E.MLPClassifier, dict(MLP, standardize=True), 2,
                                neural_network.MLPClassifier),
    "mlp-multiclass-tanh-standardized": (E.MLPClassifier, dict(MLP, activation="tanh",
                                                                 standardize=True), 3,
                                         neural_network.MLPClassifier),
    "mlp-regressor-standardized": (E.MLPRegressor, dict(MLP, standardize=True), None,
                                   neural_network.MLPRegressor),
}


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("case", sorted(CASES))
def test_to_sklearn_predicts_the_same_on_held_out_rows(case):
    make, params, n_classes, twin_class = CASES[case]
    X, y = values_data() if n_classes is None else classes_data(n_classes)
    estimator = make(**params).fit(X[:300], y[:300])
    twin = estimator.to_sklearn()
    assert type(twin) is twin_class
    assert_same_predictions(twin, estimator, X[300:])
    clone(twin).fit(X[:300], y[:300])  # its hyperparameters are valid scikit-learn ones


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_mlp_to_sklearn_folds_the_scaler_of_sparse_rows_into_the_first_layer():
    X, y = classes_data(3)
    X = sp.csr_matrix(np.where(np.abs(X - 3) > 2, X, 0.0))
    estimator = E.MLPClassifier(**MLP, standardize=True).fit(X[:300], y[:300])
    twin = estimator.to_sklearn()
    assert not np.allclose(twin.coefs_[0], estimator.coefs_[0])  # ours see scaled features
    assert_same_predictions(twin, estimator, X[300:])


def test_kmeans_to_sklearn_predicts_the_same_on_held_out_rows():
    X, _ = make_blobs(n_samples=400, centers=4, n_features=3, random_state=1)
    estimator = E.KMeans(n_clusters=4).fit(X[:300])
    twin = estimator.to_sklearn()
    assert type(twin) is cluster.KMeans and twin.inertia_ == estimator.inertia_
    assert_same_predictions(twin, estimator, X[300:])


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_mlp_to_sklearn_maps_the_solver_where_scikit_learn_has_it():
    X, y = values_data()
    twin = E.MLPRegressor(**MLP, solver="nesterov", momentum=0.8, alpha=0.01).fit(X, y) \
        .to_sklearn()
    params = twin.get_params()
    assert (params["solver"], params["nesterovs_momentum"], params["momentum"],
            params["alpha"], params["hidden_layer_sizes"]) == ("sgd", True, 0.8, 0.01, (8, 6))
    twin = E.MLPRegressor(**MLP, solver="sgd").fit(X, y).to_sklearn()
    assert (twin.solver, twin.momentum) == ("sgd", 0.0)


@pytest.mark.parametrize("make", [E.HistGradientBoostingClassifier,
                                  E.HistGradientBoostingRegressor])
def test_boosted_trees_to_sklearn_says_why_not(make):
    X, y = classes_data(2) if make is E.HistGradientBoostingClassifier else values_data()
    estimator = make(max_iter=2).fit(X, y)
    with pytest.raises(NotImplementedError, match="no public way to construct"):
        estimator.to_sklearn()


# -- model files of python -m mpiml.train ----------------------------------------------------

#: kind -> (config sections, task of the generated data, estimator load returns).
RUNS = {
    "logistic": ({"model": {"kind": "logistic", "alpha": 1e-3}, "optimizer": {"name": "lbfgs"},
                  "data": {"standardize": True}}, "binary", "LogisticRegression"),
    "softmax": ({"model": {"kind": "softmax", "alpha": 1e-3}, "optimizer": {"name": "adam",
                 "lr": 0.05}}, "multiclass", "SoftmaxRegression"),
    "linear": ({"model": {"kind": "linear"}, "optimizer": {"name": "lbfgs"},
                "data": {"standardize": True}}, "regression", "LinearRegression"),
    "ridge": ({"model": {"kind": "linear", "alpha": 0.01}, "optimizer": {"name": "sgd",
               "lr": 0.05}}, "regression", "Ridge"),
    "lasso": ({"model": {"kind": "linear", "alpha": 0.05, "l1_ratio": 1.0},
               "optimizer": {"name": "gd", "lr": 0.1}, "data": {"standardize": True}},
              "regression", "Lasso"),
    "elastic_net": ({"model": {"kind": "linear", "alpha": 0.05, "l1_ratio": 0.5},
                     "optimizer": {"name": "sgd", "lr": 0.05}}, "regression", "ElasticNet"),
    "svm": ({"model": {"kind": "svm", "alpha": 1e-3}, "optimizer": {"name": "sgd", "lr": 0.1}},
            "binary", "LinearSVC"),
    "mlp_classifier": ({"model": {"kind": "mlp_classifier", "hidden": [8], "alpha": 1e-4},
                        "optimizer": {"name": "adam", "lr": 0.01},
                        "data": {"standardize": True}}, "binary", "MLPClassifier"),
    "mlp_regressor": ({"model": {"kind": "mlp_regressor", "hidden": [8, 4],
                                 "activation": "tanh"},
                       "optimizer": {"name": "adam", "lr": 0.01}}, "regression", "MLPRegressor"),
    "kmeans": ({"model": {"kind": "kmeans"}, "kmeans": {"n_clusters": 3}}, "multiclass",
               "KMeans"),
    "hgbt": ({"model": {"kind": "hgbt_classifier"}, "hgbt": {"n_estimators": 5}},
             "multiclass", "HistGradientBoostingClassifier"),
}


def train_with_the_cli(tmp_path, sections: dict, task: str):
    """Train under mpiexec on a generated file; predict its held-out rows with
    ``python -m mpiml.predict``. Returns the model file, the held-out rows and the predictions
    file."""
    X, y = make_problem(task, 500, 5, seed=3)
    data = tmp_path / "data.h5"
    write_dense(data, X[:400], y[:400], X[400:], y[400:])
    raw = {"data": {"train": str(data)}, "train": {"epochs": 3, "batch_size": 50},
           "output": {"dir": str(tmp_path / "run")}}
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    job = run_mpi(2, ["-m", "mpiml.train", str(config), "--quiet"], timeout=120)
    assert job.returncode == 0, job.output
    model, predictions = tmp_path / "run" / "model.h5", tmp_path / "pred.h5"
    job = run_mpi(3, ["-m", "mpiml.predict", str(model), str(data), "--x", "X_test", "--out",
                      str(predictions)], timeout=120)
    assert job.returncode == 0, job.output
    return model, X[400:], predictions


@pytest.mark.parametrize("kind", sorted(RUNS))
def test_a_cli_model_file_loads_as_an_estimator_that_predicts_what_mpiml_predict_does(
        tmp_path, kind):
    sections, task, name = RUNS[kind]
    model, X_test, predictions = train_with_the_cli(tmp_path, sections, task)
    loaded = E.load(model)
    assert type(loaded).__name__ == name and not hasattr(loaded, "n_iter_")
    with h5py.File(predictions) as pred:
        expected = pred["prediction"][()]
        if expected.dtype.kind == "f" and task == "regression":
            np.testing.assert_allclose(loaded.predict(X_test), expected, **TOLERANCE)
        else:
            np.testing.assert_array_equal(loaded.predict(X_test), expected)
        if "proba" in pred:
            np.testing.assert_allclose(loaded.predict_proba(X_test), pred["proba"][()],
                                       **TOLERANCE)
    if name.startswith("HistGradientBoosting"):
        with pytest.raises(NotImplementedError):
            loaded.to_sklearn()
        return
    assert_same_predictions(loaded.to_sklearn(), loaded, X_test)


# -- hyperparameters from the run's config, and what no estimator has ------------------------


def run_file(tmp_path, sections: dict, saved: SavedModel):
    """A model file as python -m mpiml.train writes it: the model and the run's config."""
    path = tmp_path / "model.h5"
    save_model(path, saved, config_yaml=dump(from_dict(sections)))
    return path


def linear_model_of(kind: str, **options) -> SavedModel:
    options = dict({"fit_intercept": True, "alpha": 0.0, "l1_ratio": 0.0}, **options)
    return SavedModel(kind, 3, {"params": np.arange(4.0)}, options)


def test_hyperparameters_come_from_the_run_config(tmp_path):
    sections = {"model": {"kind": "logistic", "alpha": 0.0, "fit_intercept": False},
                "optimizer": {"name": "adam", "lr": 0.03},
                "train": {"epochs": 7, "batch_size": 32, "seed": 5, "patience": 2,
                          "min_delta": 0.01},
                "data": {"standardize": False}, "comm": {"algorithm": "ring"}}
    saved = SavedModel("logistic", 3, {"params": np.arange(3.0)},
                       {"fit_intercept": False, "alpha": 0.0, "l1_ratio": 0.0},
                       classes=np.array([0.0, 1.0]))
    loaded = E.load(run_file(tmp_path, sections, saved))
    expected = dict(C=np.inf, fit_intercept=False, solver="adam", learning_rate_init=0.03,
                    max_iter=7, batch_size=32, random_state=5, n_iter_no_change=2, tol=0.01,
                    allreduce_algorithm="ring", standardize=False)
    assert {key: loaded.get_params()[key] for key in expected} == expected
    np.testing.assert_array_equal(loaded.coef_, [[0.0, 1.0, 2.0]])


@pytest.mark.parametrize(("alpha", "weight", "name", "penalty"), [
    (0.0, 400.0, "LinearRegression", None), (0.1, 400.0, "Ridge", 40.0),
    (0.1, None, "Ridge", None),  # a file without the training weight (older mpiml)
])
def test_a_penalty_in_scikit_learn_units_scales_with_the_training_weight(
        tmp_path, alpha, weight, name, penalty):
    sections = {"model": {"kind": "linear", "alpha": alpha}, "optimizer": {"name": "lbfgs"}}
    saved = linear_model_of("linear", alpha=alpha)
    saved.train_rows, saved.train_weight = (None, None) if weight is None else (400, weight)
    loaded = E.load(run_file(tmp_path, sections, saved))
    assert type(loaded).__name__ == name and loaded.get_params().get("alpha") == penalty
    assert loaded.get_params()["max_iter"] == 500  # lbfgs's default iterations


@pytest.mark.parametrize("weighted", [False, True])
def test_a_fitted_penalty_survives_the_model_file(tmp_path, weighted):
    """Ridge(alpha) and LogisticRegression(C) written as plain model files load with the same
    penalty: the file keeps the training weight the conversion needs."""
    X, y = values_data()
    weights = np.linspace(0.5, 2.0, len(y)) if weighted else None
    ridge = E.Ridge(alpha=3.0).fit(X, y, sample_weight=weights)
    loaded = E.load(run_file(tmp_path, {"model": {"kind": "linear", "alpha": 1.0},
                                        "optimizer": {"name": "lbfgs"}}, ridge.model_))
    assert loaded.alpha == pytest.approx(3.0, rel=1e-12)


def test_an_mlp_penalty_is_per_batch_rows(tmp_path):
    X, y = values_data()
    fitted = E.MLPRegressor(**MLP).fit(X, y)
    sections = {"model": {"kind": "mlp_regressor", "hidden": [8, 6]},
                "optimizer": {"name": "nesterov"}, "train": {"batch_size": 64}}
    loaded = E.load(run_file(tmp_path, sections, fitted.model_))
    assert loaded.get_params()["alpha"] == pytest.approx(fitted.alpha, rel=1e-12)
    assert loaded.get_params()["hidden_layer_sizes"] == (8, 6)
    assert_same_predictions(loaded, fitted, X)


def test_a_loaded_cli_model_saves_and_loads_again(tmp_path):
    X, _ = make_blobs(n_samples=200, centers=3, n_features=3, random_state=2)
    fitted = E.KMeans(n_clusters=3).fit(X)
    sections = {"model": {"kind": "kmeans"},
                "kmeans": {"n_clusters": 3, "max_iter": 40, "init": "random", "n_init": 2}}
    loaded = E.load(run_file(tmp_path, sections, fitted.model_))
    assert (loaded.max_iter, loaded.init, loaded.n_init) == (40, "random", 2)
    assert not hasattr(loaded, "inertia_")
    twin = loaded.to_sklearn()
    assert not hasattr(twin, "inertia_") and not hasattr(twin, "labels_")
    loaded.save(tmp_path / "again.h5")
    again = E.load(tmp_path / "again.h5")
    assert again.get_params() == loaded.get_params() and not hasattr(again, "n_iter_")
    np.testing.assert_array_equal(again.predict(X), fitted.predict(X))


@pytest.mark.parametrize(("l1_ratio", "name", "params"), [
    (1.0, "Lasso", {"alpha": 0.1}), (0.4, "ElasticNet", {"alpha": 0.1, "l1_ratio": 0.4})])
def test_an_l1_penalised_linear_model_loads_as_lasso_or_elastic_net(tmp_path, l1_ratio, name,
                                                                    params):
    """Their alpha is mpiml's own: no training weight needed, also for a file without it."""
    sections = {"model": {"kind": "linear", "alpha": 0.1, "l1_ratio": l1_ratio},
                "optimizer": {"name": "gd", "lr": 0.2}, "train": {"epochs": 40}}
    loaded = E.load(run_file(tmp_path, sections, linear_model_of("linear", alpha=0.1,
                                                                 l1_ratio=l1_ratio)))
    assert type(loaded).__name__ == name
    assert {key: loaded.get_params()[key] for key in params} == params
    assert (loaded.solver, loaded.learning_rate_init, loaded.max_iter) == ("gd", 0.2, 40)
    np.testing.assert_array_equal(loaded.coef_, [0.0, 1.0, 2.0])
    assert type(loaded.to_sklearn()).__name__ == name


def test_an_l1_penalised_svm_has_no_estimator_and_says_so(tmp_path):
    """LinearSVC's L1 penalty is another problem than mpiml's proximal one: refused."""
    sections = {"model": {"kind": "svm", "alpha": 0.1, "l1_ratio": 0.5},
                "optimizer": {"name": "sgd"}}
    saved = linear_model_of("svm", alpha=0.1, l1_ratio=0.5, loss="hinge")
    path = run_file(tmp_path, sections, saved)
    with pytest.raises(ValueError, match=f"{path}: a 'svm' model with an L1 penalty .*"
                                         "LinearSVC have no L1 penalty"):
        E.load(path)


def test_a_model_file_without_a_run_config_is_one_clear_error(tmp_path):
    path = tmp_path / "bare.h5"
    save_model(path, linear_model_of("linear"))
    with pytest.raises(ValueError, match="holds no run config"):
        E.load(path)
    with h5py.File(path, "a") as out:
        out.attrs["config"] = "model: {kind: [unclosed"
    with pytest.raises(ValueError, match="run config kept in the model file cannot be read"):
        E.load(path)
