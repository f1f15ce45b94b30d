"""Serial tests of the optimizers, schedules and L-BFGS wrapper, and of lasso through SGD + prox."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import datasets, linear_model
from sklearn.preprocessing import StandardScaler

from mpiml.models import LinearRegression
from mpiml.optim import (
    OPTIMIZERS,
    adagrad,
    adam,
    lbfgs,
    make_optimizer,
    make_schedule,
    sgd,
)

# f(x) = 0.5 (x - c)^T diag(h) (x - c): condition number 10, minimum at c
CURVATURE = np.array([1.0, 0.5, 0.1, 2.0, 0.2])
MINIMUM = np.array([1.0, -2.0, 0.5, 3.0, -1.0])


def quadratic(x):
    delta = x - MINIMUM
    return 0.5 * float(delta @ (CURVATURE * delta)), CURVATURE * delta


def run(optimizer, n_steps, params=None):
    params = np.zeros_like(MINIMUM) if params is None else params
    state = optimizer.init(params)
    for _ in range(n_steps):
        optimizer.update(quadratic(params)[1], state, params)
    return params, state


# -- optimizers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, schedule, n_steps",
    [
        ("gd", 0.9, 300),
        ("sgd", 0.9, 300),
        ("momentum", 0.3, 300),
        ("nesterov", 0.3, 300),
        ("adam", make_schedule("cosine", 0.1, total_steps=1000), 1000),
        ("adagrad", 1.0, 1000),
    ],
)
def test_each_optimizer_reaches_the_minimum_of_a_convex_quadratic(name, schedule, n_steps):
    params, state = run(make_optimizer(name, schedule), n_steps)
    np.testing.assert_allclose(params, MINIMUM, atol=1e-3)
    assert int(state["step"]) == n_steps


def test_momentum_and_nesterov_follow_their_update_rules_and_differ_from_sgd():
    grad = np.array([1.0])
    paths = {}
    for name in ("sgd", "momentum", "nesterov"):
        optimizer = make_optimizer(name, 0.1, **({} if name == "sgd" else {"momentum": 0.5}))
        params = np.zeros(1)
        state = optimizer.init(params)
        path = []
        for _ in range(2):
            optimizer.update(grad, state, params)
            path.append(params[0])
        paths[name] = path
    # sgd: -0.1 per step; heavy ball: v = 1, 1.5; nesterov: g + 0.5 v = 1.5, 1.75
    np.testing.assert_allclose(paths["sgd"], [-0.1, -0.2])
    np.testing.assert_allclose(paths["momentum"], [-0.1, -0.25])
    np.testing.assert_allclose(paths["nesterov"], [-0.15, -0.325])


def test_adam_first_step_has_the_size_of_the_learning_rate():
    params = np.zeros(3)
    optimizer = adam(0.01)
    state = optimizer.init(params)
    optimizer.update(np.array([5.0, -0.2, 0.0]), state, params)
    np.testing.assert_allclose(params, [-0.01, 0.01, 0.0], rtol=1e-6)


def test_adagrad_steps_shrink_with_accumulated_gradient():
    params = np.zeros(1)
    optimizer = adagrad(1.0)
    state = optimizer.init(params)
    for expected in (-1.0, -1.0 - 1 / math.sqrt(2), -1.0 - 1 / math.sqrt(2) - 1 / math.sqrt(3)):
        optimizer.update(np.array([2.0]), state, params)
        assert params[0] == pytest.approx(expected)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_state_holds_only_numpy_arrays_and_resumes_from_a_checkpoint_copy(name):
    optimizer = make_optimizer(name, make_schedule("step", 0.2, step_size=3, gamma=0.5))
    params, state = run(optimizer, 7)
    assert all(isinstance(value, np.ndarray) for value in state.values())
    assert state["step"].dtype == np.int64 and state["step"].size == 1
    # what a checkpoint reader returns: fresh arrays, the 0-d step as a numpy scalar
    restored = {key: value[()] if value.ndim == 0 else value.copy() for key, value in state.items()}
    resumed_params = params.copy()
    continued, _ = run_more(optimizer, params, state, 5)
    resumed, _ = run_more(optimizer, resumed_params, restored, 5)
    np.testing.assert_array_equal(continued, resumed)


def run_more(optimizer, params, state, n_steps):
    learning_rates = [optimizer.update(quadratic(params)[1], state, params) for _ in range(n_steps)]
    return params, learning_rates


def test_update_returns_the_scheduled_learning_rate():
    optimizer = sgd(make_schedule("step", 1.0, step_size=2, gamma=0.5))
    params = np.zeros_like(MINIMUM)
    state = optimizer.init(params)
    _, rates = run_more(optimizer, params, state, 5)
    assert rates == [1.0, 1.0, 0.5, 0.5, 0.25]


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: make_optimizer("rmsprop", 0.1),
            r"optimizer must be one of sgd, momentum, "
            r"nesterov, adam, adagrad, gd; got 'rmsprop'",
        ),
        (lambda: make_optimizer("adam", 0.1, momentum=0.9), r"beta1, beta2, eps.*'momentum'"),
        (lambda: make_optimizer("gd", 0.1, eps=1.0), r"valid: none.*'eps'"),
        (lambda: sgd(0.1, momentum=1.0), r"momentum.*got 1.0"),
        (lambda: sgd(0.1, nesterov=True), r"nesterov"),
        (lambda: adam(0.1, beta2=-0.1), r"beta2.*got -0.1"),
        (lambda: adagrad(-0.1), r"lr.*got -0.1"),
        (lambda: make_schedule("linear", 0.1), r"constant, step, cosine, invscaling.*'linear'"),
        (lambda: make_schedule("step", 0.1), r"step_size"),
        (lambda: make_schedule("step", 0.1, step_size=0), r"step_size.*got 0"),
        (lambda: make_schedule("cosine", 0.1), r"total_steps"),
        (lambda: make_schedule("cosine", 0.1, warmup_steps=5, total_steps=5), r"total_steps"),
        (lambda: make_schedule("cosine", 0.1, total_steps=9, min_lr=0.2), r"min_lr.*got 0.2"),
        (lambda: make_schedule("constant", 0.1, warmup_steps=-1), r"warmup_steps.*got -1"),
        (lambda: make_schedule("constant", float("nan")), r"lr.*got nan"),
        (lambda: lbfgs(quadratic, np.zeros(5), max_iter=0), r"max_iter.*got 0"),
    ],
)
def test_bad_names_and_values_raise_value_errors_naming_them(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# -- schedules -------------------------------------------------------------------------------


def test_warmup_rises_linearly_to_lr_then_the_decay_starts():
    schedule = make_schedule("step", 1.0, warmup_steps=4, step_size=3, gamma=0.1)
    values = [schedule(t) for t in range(11)]
    np.testing.assert_allclose(values, [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.01])


def test_cosine_goes_from_lr_to_min_lr_at_total_steps_and_stays():
    schedule = make_schedule("cosine", 0.5, warmup_steps=10, total_steps=110, min_lr=0.1)
    assert schedule(10) == pytest.approx(0.5)
    assert schedule(60) == pytest.approx(0.3)  # half-way: the mean of lr and min_lr
    assert schedule(110) == pytest.approx(0.1)
    assert schedule(10_000) == pytest.approx(0.1)


def test_constant_and_invscaling_values():
    assert make_schedule("constant", 0.3)(12345) == 0.3
    schedule = make_schedule("invscaling", 1.0, power=0.5)
    assert [schedule(t) for t in (0, 3, 99)] == pytest.approx([1.0, 0.5, 0.1])


# -- L-BFGS ----------------------------------------------------------------------------------


def test_lbfgs_finds_the_minimum_of_a_quadratic():
    result = lbfgs(quadratic, np.zeros(5), max_iter=200, tol=1e-14)
    assert result.success
    np.testing.assert_allclose(result.x, MINIMUM, atol=1e-6)


def test_lbfgs_is_deterministic_so_ranks_stay_in_step():
    def rosenbrock(x):
        value = float(np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2))
        grad = np.zeros_like(x)
        grad[:-1] = -400 * x[:-1] * (x[1:] - x[:-1] ** 2) - 2 * (1 - x[:-1])
        grad[1:] += 200 * (x[1:] - x[:-1] ** 2)
        return value, grad

    runs = []
    for _ in range(2):
        evaluated = []

        def recording(x, evaluated=evaluated):
            evaluated.append(x.copy())
            return rosenbrock(x)

        result = lbfgs(recording, np.full(6, -1.0), max_iter=500)
        runs.append((result, evaluated))
    (first, first_points), (second, second_points) = runs
    assert first.nfev == second.nfev == len(first_points) == len(second_points)
    np.testing.assert_array_equal(np.array(first_points), np.array(second_points))
    np.testing.assert_allclose(first.x, 1.0, atol=1e-4)


def test_lbfgs_stops_at_max_iter_and_reports_it():
    result = lbfgs(quadratic, np.zeros(5), max_iter=2, tol=0.0)
    assert not result.success
    assert result.nit == 2


# -- lasso: SGD with a proximal L1 step ------------------------------------------------------------


def diabetes():
    X, y = datasets.load_diabetes(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    return X, (y - y.mean()) / y.std()


def fit_with_prox(model, optimizer, X, y, n_epochs, batch_size, seed=0):
    params = model.init_params(seed)
    state = optimizer.init(params)
    grad_sum = np.empty(model.n_params)
    rng = np.random.default_rng(seed)
    for _ in range(n_epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(y), batch_size):
            rows = order[start : start + batch_size]
            model.loss_grad_sum(params, X[rows], y[rows], grad_sum)
            _, penalty_grad = model.penalty(params)
            step = optimizer.update(grad_sum / len(rows) + penalty_grad, state, params)
            model.prox(params, step)
    return params


def test_proximal_gradient_descent_solves_the_lasso_like_sklearn():
    # ours with l1_ratio=1: (1/N) sum 0.5 r^2 + alpha ||w||_1, exactly sklearn's Lasso(alpha)
    X, y = diabetes()
    alpha = 0.05
    model = LinearRegression(X.shape[1], alpha=alpha, l1_ratio=1.0)
    lipschitz = np.linalg.eigvalsh(X.T @ X / len(y)).max() + 1.0  # + 1: the intercept
    params = fit_with_prox(model, make_optimizer("gd", 1.0 / lipschitz), X, y, 3000, len(y))
    reference = linear_model.Lasso(alpha=alpha, tol=1e-12, max_iter=100_000).fit(X, y)
    np.testing.assert_array_equal(model.coef(params)[0] == 0.0, reference.coef_ == 0.0)
    np.testing.assert_allclose(model.coef(params)[0], reference.coef_, atol=1e-6)


def test_minibatch_sgd_with_prox_gives_a_sparse_lasso_close_to_sklearn():
    # Gradient noise keeps a few coefficients sklearn zeroes slightly off zero; they stay tiny.
    X, y = diabetes()
    alpha = 0.1
    model = LinearRegression(X.shape[1], alpha=alpha, l1_ratio=1.0)
    schedule = make_schedule("invscaling", 0.2, power=0.5)
    params = fit_with_prox(model, sgd(schedule), X, y, n_epochs=200, batch_size=128)
    reference = linear_model.Lasso(alpha=alpha).fit(X, y).coef_
    coef = model.coef(params)[0]
    assert np.count_nonzero(coef) <= np.count_nonzero(reference) + 3
    assert np.all(np.abs(coef[reference == 0.0]) < 0.01)
    np.testing.assert_allclose(coef, reference, atol=0.01)
