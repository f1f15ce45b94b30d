"""Serial tests of the MLP: backpropagation against finite differences, sums that split over rows,
seeded initialisation, and convergence on scikit-learn's digits with Adam."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn import datasets
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from mpiml.data import BatchPlan
from mpiml.models.mlp import MLP
from mpiml.optim import make_optimizer

N_ROWS, N_FEATURES, N_CLASSES = 30, 5, 3


def make_data(task, n_rows=N_ROWS, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_rows, N_FEATURES))
    X[rng.random(X.shape) < 0.3] = 0.0  # some zeros, so CSR storage differs from dense
    if task == "regression":
        return X, rng.normal(size=n_rows)
    return X, rng.integers(0, N_CLASSES, size=n_rows).astype(np.float64)


def build(task, activation="tanh", alpha=0.0, hidden=(4, 3)):
    return MLP(N_FEATURES, n_classes=N_CLASSES, hidden=hidden, activation=activation, task=task,
               alpha=alpha)


def objective(model, params, X, y):
    """Mean loss plus penalty, as the trainer forms it."""
    return model.loss_sum(params, X, y) / X.shape[0] + model.penalty(params)[0]


def objective_grad(model, params, X, y):
    grad = np.empty(model.n_params)
    model.loss_grad_sum(params, X, y, grad)
    return grad / X.shape[0] + model.penalty(params)[1]


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("layout", ["dense", "csr"])
def test_gradient_matches_finite_differences(task, activation, layout):
    X, y = make_data(task)
    X = sp.csr_matrix(X) if layout == "csr" else X
    model = build(task, activation, alpha=0.3)
    params = model.init_params(seed=5)
    params += np.random.default_rng(1).normal(scale=0.1, size=model.n_params)  # nonzero biases
    analytic = objective_grad(model, params, X, y)
    step = 1e-6
    numeric = np.empty(model.n_params)
    for j in range(model.n_params):
        bump = np.zeros(model.n_params)
        bump[j] = step
        numeric[j] = (objective(model, params + bump, X, y)
                      - objective(model, params - bump, X, y)) / (2 * step)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_loss_and_gradient_sums_split_over_rows(task):
    X, y = make_data(task, n_rows=41)
    model = build(task, "relu")
    params = model.init_params(seed=2)
    whole = np.empty(model.n_params)
    whole_loss = model.loss_grad_sum(params, X, y, whole)
    parts, parts_loss = np.zeros(model.n_params), 0.0
    for rows in (slice(0, 0), slice(0, 13), slice(13, 14), slice(14, 41)):
        buffer = np.full(model.n_params + 2, np.nan)  # grad_out as a view of a larger buffer
        parts_loss += model.loss_grad_sum(params, X[rows], y[rows], buffer[1:-1])
        parts += buffer[1:-1]
    np.testing.assert_allclose(parts, whole, rtol=1e-12, atol=1e-12)
    assert parts_loss == pytest.approx(whole_loss, rel=1e-12)


def test_empty_rows_give_zero_sums():
    model = build("classification")
    grad = np.full(model.n_params, np.nan)
    loss = model.loss_grad_sum(model.init_params(0), np.empty((0, N_FEATURES)), np.empty(0), grad)
    assert loss == 0.0 and not grad.any()


def test_float32_rows_match_float64():
    X, y = make_data("classification")
    model = build("classification", "relu")
    params = model.init_params(seed=3)
    grad64, grad32 = np.empty(model.n_params), np.empty(model.n_params)
    loss64 = model.loss_grad_sum(params, X, y, grad64)
    loss32 = model.loss_grad_sum(params, X.astype(np.float32), y, grad32)
    assert loss32 == pytest.approx(loss64, rel=1e-5)
    np.testing.assert_allclose(grad32, grad64, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_init_is_deterministic_per_seed_with_zero_biases(activation):
    model = build("classification", activation)
    first, again, other = model.init_params(7), model.init_params(7), model.init_params(8)
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    for _, bias in model.layers(first):
        assert not bias.any()


def test_penalty_skips_biases_and_interface_matches_linear_models():
    model = build("regression", alpha=2.0)
    params = model.init_params(0) + 1.0
    value, grad = model.penalty(params)
    weights = [w for w, _ in model.layers(params)]
    assert value == pytest.approx(0.5 * 2.0 * sum(float((w * w).sum()) for w in weights))
    for (w, _), (gw, gb) in zip(model.layers(params), model.layers(grad), strict=True):
        np.testing.assert_array_equal(gw, 2.0 * w)
        assert not gb.any()
    target = params.copy()  # the loop's in-place form: the same bits
    assert model.add_penalty(params, target) == value
    np.testing.assert_array_equal(target, params + grad)
    before = params.copy()
    model.prox(params, 0.5)
    assert np.array_equal(params, before) and model.l1_penalty(params) == 0.0
    assert model.kind == "mlp_regressor" and model.fit_intercept and model.l1_ratio == 0.0
    rebuilt = MLP(N_FEATURES, n_classes=N_CLASSES, **model.options())
    assert rebuilt.n_params == model.n_params and repr(rebuilt) == repr(model)


def test_predictions_have_the_documented_shapes():
    X, _ = make_data("classification")
    classifier = build("classification")
    params = classifier.init_params(0)
    proba = classifier.predict_proba(params, X)
    assert proba.shape == (N_ROWS, N_CLASSES)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(classifier.predict(params, X), proba.argmax(axis=1))
    regressor = build("regression")
    assert regressor.predict(regressor.init_params(0), X).shape == (N_ROWS,)


@pytest.mark.parametrize("bad", [dict(activation="sigmoid"), dict(task="ranking"),
                                 dict(hidden=(4, 0)), dict(alpha=-1.0), dict(n_classes=1)])
def test_bad_arguments_are_named(bad):
    arguments = dict(n_features=3, **bad)
    with pytest.raises(ValueError, match=next(iter(bad)).replace("hidden", "hidden layer")):
        MLP(**arguments)


def test_adam_minibatches_reach_96_percent_on_digits():
    X, y = datasets.load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0,
                                                        stratify=y)
    scaler = StandardScaler().fit(X_train)
    X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    model = MLP(X.shape[1], n_classes=10, hidden=(64,), activation="relu", alpha=1e-4)
    params = model.init_params(seed=0)
    optimizer = make_optimizer("adam", 1e-2)
    state = optimizer.init(params)
    plan = BatchPlan(len(y_train), batch_size=64, seed=0)
    grad = np.empty(model.n_params)
    for epoch in range(15):
        for t in range(plan.n_batches(epoch)):
            rows = plan.local_rows(epoch, t)
            model.loss_grad_sum(params, X_train[rows], y_train[rows], grad)
            grad /= len(rows)
            grad += model.penalty(params)[1]
            optimizer.update(grad, state, params)
    accuracy = float((model.predict(params, X_test) == y_test).mean())
    assert accuracy >= 0.96, accuracy
