"""Serial tests of the linear models: gradients against finite differences, sums that split over
rows (why p ranks equal 1 rank), numerical stability, and optima against scikit-learn."""

from __future__ import annotations

import re
import warnings
from itertools import pairwise

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import datasets, linear_model, svm
from sklearn.preprocessing import StandardScaler

from mpiml.models import (
    LinearRegression,
    LinearSVM,
    LogisticRegression,
    SoftmaxRegression,
    make_model,
)
from mpiml.optim import lbfgs

N_ROWS, N_FEATURES, N_CLASSES = 40, 6, 4

# (kind, extra constructor arguments) covering every loss
MODEL_CASES = [
    ("linear", {}),
    ("logistic", {}),
    ("softmax", {}),
    ("svm", {"loss": "hinge"}),
    ("svm", {"loss": "squared_hinge"}),
]
CASE_IDS = ["linear", "logistic", "softmax", "hinge", "squared_hinge"]


def build(kind, extra, **params):
    n_classes = N_CLASSES if kind == "softmax" else 2
    return make_model(kind, N_FEATURES, n_classes=n_classes, **extra, **params)


def make_data(kind, n_rows=N_ROWS, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_rows, N_FEATURES))
    X[rng.random(X.shape) < 0.3] = 0.0  # some sparsity, so CSR differs from dense storage
    if kind == "linear":
        y = rng.normal(size=n_rows)
    elif kind == "softmax":
        y = rng.integers(0, N_CLASSES, size=n_rows).astype(np.float64)
    else:
        y = rng.integers(0, 2, size=n_rows)
    return X, y


def random_params(model, seed=1):
    return np.random.default_rng(seed).normal(scale=0.5, size=model.n_params)


def smooth_objective(model, X, y, n_total):
    """J without the L1 term, as the trainer forms it: sums / N + penalty."""
    grad_sum = np.empty(model.n_params)

    def objective(params):
        loss = model.loss_grad_sum(params, X, y, grad_sum)
        penalty, penalty_grad = model.penalty(params)
        return loss / n_total + penalty, grad_sum / n_total + penalty_grad

    return objective


def full_objective(model, params, X, y):
    value, _ = smooth_objective(model, X, y, X.shape[0])(params)
    return value + model.l1_penalty(params)


# -- gradients ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, extra", MODEL_CASES, ids=CASE_IDS)
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("alpha, l1_ratio", [(0.0, 0.0), (0.3, 0.0), (0.3, 0.4)])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
def test_gradient_matches_central_differences(kind, extra, fit_intercept, alpha, l1_ratio, sparse):
    model = build(kind, extra, fit_intercept=fit_intercept, alpha=alpha, l1_ratio=l1_ratio)
    X, y = make_data(kind)
    if sparse:
        X = sp.csr_matrix(X)
    objective = smooth_objective(model, X, y, N_ROWS)
    params = random_params(model)
    _, grad = objective(params)
    step = 1e-6
    numeric = np.empty_like(params)
    for i in range(model.n_params):
        shift = np.zeros_like(params)
        shift[i] = step
        numeric[i] = (objective(params + shift)[0] - objective(params - shift)[0]) / (2 * step)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kind, extra", MODEL_CASES, ids=CASE_IDS)
def test_penalty_value_and_gradient(kind, extra):
    model = build(kind, extra, alpha=0.5, l1_ratio=0.2)
    params = random_params(model)
    value, grad = model.penalty(params)
    coef = model.coef(params)
    assert value == pytest.approx(0.5 * 0.5 * 0.8 * np.sum(coef**2), rel=1e-14)
    np.testing.assert_allclose(model.coef(grad), 0.5 * 0.8 * coef, rtol=1e-14)
    np.testing.assert_array_equal(grad[coef.size :], 0.0)  # intercept is never penalised
    assert model.l1_penalty(params) == pytest.approx(0.5 * 0.2 * np.abs(coef).sum(), rel=1e-14)


@pytest.mark.parametrize("kind, extra", MODEL_CASES, ids=CASE_IDS)
def test_add_penalty_adds_in_place_what_penalty_returns(kind, extra):
    """The loop's in-place form gives the same bits as adding penalty()'s new vector."""
    model = build(kind, extra, alpha=0.5, l1_ratio=0.2)
    params = random_params(model)
    value, grad = model.penalty(params)
    start = random_params(model, seed=2)
    target = start.copy()
    assert model.add_penalty(params, target) == value
    np.testing.assert_array_equal(target, start + grad)


@pytest.mark.parametrize("kind, extra", MODEL_CASES, ids=CASE_IDS)
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
def test_loss_grad_sum_agrees_with_loss_sum_and_overwrites_a_view(kind, extra, sparse):
    model = build(kind, extra)
    X, y = make_data(kind)
    if sparse:
        X = sp.csr_matrix(X)
    params = random_params(model)
    buffer = np.full(model.n_params + 2, np.nan)  # [grad | loss | n_rows] as the trainer packs it
    grad_view = buffer[: model.n_params]
    loss = model.loss_grad_sum(params, X, y, grad_view)
    assert isinstance(loss, float)
    assert loss == pytest.approx(model.loss_sum(params, X, y), rel=1e-14)
    assert np.isfinite(grad_view).all()
    assert np.isnan(buffer[model.n_params :]).all()


@pytest.mark.parametrize("kind, extra", MODEL_CASES, ids=CASE_IDS)
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
def test_empty_shard_gives_zero_loss_and_gradient(kind, extra, sparse):
    model = build(kind, extra)
    X, y = make_data(kind, n_rows=0)
    if sparse:
        X = sp.csr_matrix(X)
    grad = np.full(model.n_params, np.nan)
    assert model.loss_grad_sum(random_params(model), X, y, grad) == 0.0
    np.testing.assert_array_equal(grad, 0.0)
    assert model.loss_sum(random_params(model), X, y) == 0.0


def sums_over_parts(model, params, X, y, cuts):
    total_loss, total_grad, grad = 0.0, np.zeros(model.n_params), np.empty(model.n_params)
    bounds = [0, *sorted(cuts), X.shape[0]]
    for start, stop in pairwise(bounds):
        total_loss += model.loss_grad_sum(params, X[start:stop], y[start:stop], grad)
        total_grad += grad
    return total_loss, total_grad


@pytest.mark.parametrize("kind, extra", MODEL_CASES, ids=CASE_IDS)
@settings(max_examples=15, deadline=None)
@given(cuts=st.lists(st.integers(0, N_ROWS), max_size=4))
def test_sums_over_any_split_of_rows_equal_the_sum_over_all_rows(kind, extra, cuts):
    model = build(kind, extra, alpha=0.1)
    X, y = make_data(kind)
    params = random_params(model)
    whole_grad = np.empty(model.n_params)
    whole_loss = model.loss_grad_sum(params, X, y, whole_grad)
    for rows in (X, sp.csr_matrix(X)):
        loss, grad = sums_over_parts(model, params, rows, y, cuts)
        assert loss == pytest.approx(whole_loss, rel=1e-12)
        np.testing.assert_allclose(grad, whole_grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind, extra", MODEL_CASES, ids=CASE_IDS)
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
def test_float32_rows_give_float64_sums_close_to_float64_rows(kind, extra, sparse):
    model = build(kind, extra)
    X, y = make_data(kind)
    X32 = X.astype(np.float32)
    X64 = X32.astype(np.float64)
    if sparse:
        X32, X64 = sp.csr_matrix(X32), sp.csr_matrix(X64)
    params = random_params(model)
    grad32, grad64 = np.empty(model.n_params), np.empty(model.n_params)
    loss32 = model.loss_grad_sum(params, X32, y, grad32)
    loss64 = model.loss_grad_sum(params, X64, y, grad64)
    assert grad32.dtype == np.float64
    assert loss32 == pytest.approx(loss64, rel=1e-5)
    np.testing.assert_allclose(grad32, grad64, rtol=1e-4, atol=1e-4)
    assert model.decision_function(params, X32).dtype == np.float64


# -- numerical stability and labels -----------------------------------------------------------


@pytest.mark.parametrize("kind, extra", MODEL_CASES[1:], ids=CASE_IDS[1:])
def test_huge_scores_give_finite_loss_and_gradient_without_warnings(kind, extra):
    model = build(kind, extra, fit_intercept=False)
    X, y = make_data(kind)
    params = np.full(model.n_params, 1e4)
    if kind == "softmax":
        model.coef(params)[1] *= -1.0
    grad = np.empty(model.n_params)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = model.loss_grad_sum(params, X, y, grad)
    assert np.isfinite(loss) and loss > 1e4
    assert np.isfinite(grad).all()


def test_logistic_loss_is_exact_far_in_the_tails():
    model = LogisticRegression(1, fit_intercept=False)
    X = np.array([[1.0], [1.0], [1.0]])
    params = np.array([1e4])
    # z = 1e4: label 1 costs log(1 + e^-1e4) (underflows to 0), label 0 costs 1e4
    assert model.loss_sum(params, X, np.array([1, 1, 0])) == pytest.approx(1e4, rel=1e-15)
    grad = np.empty(1)
    model.loss_grad_sum(params, X, np.array([0, 0, 0]), grad)
    assert grad[0] == pytest.approx(3.0)


@pytest.mark.parametrize(
    "model, labels",
    [
        (LogisticRegression(2), [0, -1, 1]),
        (LogisticRegression(2), [0.0, 2.0, 1.0]),
        (LinearSVM(2), [0, 2, 1]),
        (SoftmaxRegression(2, n_classes=3), [0, 3, 1]),
        (SoftmaxRegression(2, n_classes=3), [0, -1, 1]),
        (SoftmaxRegression(2, n_classes=3), [0, 1.5, 1]),
    ],
)
def test_labels_outside_the_expected_set_are_rejected(model, labels):
    """Each dtype's check (int64 labels take the one-reduction path) names the bad label."""
    X, y = np.ones((3, 2)), np.array(labels)
    with pytest.raises(ValueError, match="labels.*got " + re.escape(repr(y[1]))):
        model.loss_sum(model.init_params(0), X, y)


def test_shape_mismatches_are_rejected_with_the_shapes():
    model = LinearRegression(3)
    grad = np.empty(model.n_params)
    with pytest.raises(ValueError, match="3 columns"):
        model.loss_grad_sum(model.init_params(0), np.ones((4, 2)), np.ones(4), grad)
    with pytest.raises(ValueError, match="4 entries"):
        model.loss_grad_sum(model.init_params(0), np.ones((4, 3)), np.ones(5), grad)
    with pytest.raises(ValueError, match="length 4"):
        model.loss_grad_sum(np.zeros(3), np.ones((4, 3)), np.ones(4), grad)


# -- interface ----------------------------------------------------------------------------------


def test_make_model_names_the_valid_kinds_on_an_unknown_one():
    with pytest.raises(ValueError, match="linear, logistic, softmax, svm.*'ridge'"):
        make_model("ridge", 3)
    with pytest.raises(ValueError, match="n_classes=2"):
        make_model("logistic", 3, n_classes=3)
    with pytest.raises(ValueError, match="hinge, squared_hinge"):
        make_model("svm", 3, loss="log")
    with pytest.raises(ValueError, match="l1_ratio"):
        make_model("linear", 3, l1_ratio=1.5)
    with pytest.raises(ValueError, match="alpha"):
        make_model("linear", 3, alpha=-1.0)


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_parameter_layout_is_coef_rows_then_intercepts(fit_intercept):
    model = make_model("softmax", 3, n_classes=4, fit_intercept=fit_intercept)
    assert (model.kind, model.n_outputs) == ("softmax", 4)
    assert model.n_params == 12 + (4 if fit_intercept else 0)
    params = np.arange(model.n_params, dtype=np.float64)
    np.testing.assert_array_equal(model.coef(params), np.arange(12).reshape(4, 3))
    expected_intercept = np.arange(12, 16) if fit_intercept else np.zeros(4)
    np.testing.assert_array_equal(model.intercept(params), expected_intercept)
    model.coef(params)[1, 2] = -1.0
    assert params[5] == -1.0  # coef is a view
    init = model.init_params(seed=7)
    assert init.dtype == np.float64 and init.shape == (model.n_params,) and not init.any()


def test_predictions_have_the_documented_shapes_and_values():
    X, y = make_data("softmax")
    softmax = SoftmaxRegression(N_FEATURES, n_classes=N_CLASSES)
    params = random_params(softmax)
    proba = softmax.predict_proba(params, X)
    assert proba.shape == (N_ROWS, N_CLASSES)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(softmax.predict(params, X), proba.argmax(axis=1))

    logistic = LogisticRegression(N_FEATURES)
    params = random_params(logistic)
    proba = logistic.predict_proba(params, X)
    assert proba.shape == (N_ROWS, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(logistic.predict(params, X), (proba[:, 1] > 0.5).astype(int))
    assert set(LinearSVM(N_FEATURES).predict(params, X)) <= {0, 1}


def test_prox_soft_thresholds_coef_exactly_and_leaves_the_intercept():
    model = LinearRegression(4, alpha=2.0, l1_ratio=0.5)
    params = np.array([3.0, -0.4, 0.5, -2.0, 7.0])  # 4 coef, then the intercept
    model.prox(params, step=0.5)  # threshold 0.5 * 2.0 * 0.5 = 0.5
    np.testing.assert_array_equal(params, [2.5, 0.0, 0.0, -1.5, 7.0])
    ridge = LinearRegression(4, alpha=2.0)
    untouched = np.array([3.0, -0.4, 0.5, -2.0, 7.0])
    ridge.prox(untouched, step=0.5)
    np.testing.assert_array_equal(untouched, [3.0, -0.4, 0.5, -2.0, 7.0])


# -- optima against scikit-learn on real data ----------------------------------------------------


def minimise(model, X, y):
    result = lbfgs(
        smooth_objective(model, X, y, X.shape[0]), model.init_params(0), max_iter=5000, tol=1e-14
    )
    return result.x


def flat(coef, intercept=()):
    """scikit-learn's fitted attributes in our parameter layout."""
    return np.concatenate([np.ravel(coef), np.ravel(intercept)]).astype(np.float64)


def assert_same_optimum(model, ours, theirs, X, y):
    ours_value = full_objective(model, ours, X, y)
    theirs_value = full_objective(model, theirs, X, y)
    assert ours_value <= theirs_value * (1 + 1e-9)  # never worse than the reference
    assert ours_value == pytest.approx(theirs_value, rel=1e-6)
    ours_accuracy = np.mean(model.predict(ours, X) == y)
    theirs_accuracy = np.mean(model.predict(theirs, X) == y)
    assert abs(ours_accuracy - theirs_accuracy) <= 0.005


def standardized(load):
    X, y = load(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def test_logistic_matches_sklearn_on_breast_cancer():
    X, y = standardized(datasets.load_breast_cancer)
    alpha = 1e-2
    model = LogisticRegression(X.shape[1], alpha=alpha)
    reference = linear_model.LogisticRegression(C=1 / (len(y) * alpha), tol=1e-12, max_iter=10_000)
    reference.fit(X, y)
    theirs = flat(reference.coef_, reference.intercept_)
    assert_same_optimum(model, minimise(model, X, y), theirs, X, y)


def test_ridge_matches_sklearn_on_diabetes():
    # sklearn Ridge: ||y - Xw - b||^2 + a ||w||^2 = 2N * [(1/N) sum 0.5 r^2 + 0.5 (a/N) ||w||^2]
    X, y = datasets.load_diabetes(return_X_y=True)
    alpha = 1e-3
    model = LinearRegression(X.shape[1], alpha=alpha)
    reference = linear_model.Ridge(alpha=len(y) * alpha).fit(X, y)
    ours = minimise(model, X, y)
    theirs = flat(reference.coef_, reference.intercept_)
    assert full_objective(model, ours, X, y) == pytest.approx(
        full_objective(model, theirs, X, y), rel=1e-9
    )
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-3)


def test_squared_hinge_svm_matches_sklearn_linear_svc_on_breast_cancer():
    # LinearSVC penalises its intercept (intercept_scaling), so compare without one.
    X, y = standardized(datasets.load_breast_cancer)
    alpha = 1e-2
    model = LinearSVM(X.shape[1], fit_intercept=False, alpha=alpha, loss="squared_hinge")
    reference = svm.LinearSVC(
        C=1 / (len(y) * alpha),
        loss="squared_hinge",
        fit_intercept=False,
        tol=1e-12,
        max_iter=100_000,
    ).fit(X, y)
    theirs = flat(reference.coef_)
    assert_same_optimum(model, minimise(model, X, y), theirs, X, y)


@pytest.mark.parametrize(
    "load, alpha",
    [(datasets.load_wine, 1e-2), (datasets.load_digits, 1e-3)],
    ids=["wine", "digits"],
)
def test_softmax_matches_sklearn_multinomial_logistic(load, alpha):
    X, y = standardized(load)
    n_classes = len(np.unique(y))
    model = SoftmaxRegression(X.shape[1], n_classes=n_classes, alpha=alpha)
    reference = linear_model.LogisticRegression(
        C=1 / (len(y) * alpha), tol=1e-12, max_iter=10_000
    ).fit(X, y)
    theirs = flat(reference.coef_, reference.intercept_)
    assert_same_optimum(model, minimise(model, X, y), theirs, X, y)
