"""One update of the gradient loops (GradientProblem.apply): the objective and step from reduced
sums, and the non-finite guard, which looks at the gradient only when the parameters went bad
and still names what went bad first (loss, then gradient, then parameters)."""

import numpy as np
import pytest

from mpiml import config
from mpiml.data.run_rows import from_arrays
from mpiml.fit.gradient import CONTROL_SLOTS, GradientProblem, NonFiniteError, quiet_overflow
from mpiml.optim import make_optimizer
from mpiml.run import open_run

ALPHA, LR = 0.1, 0.5


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 3))
    cfg = config.from_dict({"model": {"kind": "logistic", "alpha": ALPHA},
                            "checkpoint": {"enabled": False}})
    with open_run(cfg) as run:
        problem = GradientProblem(run, from_arrays(X, (X[:, 0] > 0).astype(int), run.reducer,
                                                   "binary"))
        problem.params[:] = rng.normal(size=problem.n)
        yield problem


def step(problem, sums, lr=LR):
    """One update as the loops make it (inside their numpy error state)."""
    optimizer = make_optimizer("sgd", lambda t: lr)  # any rate, 0 included (a decay's end)
    with quiet_overflow():
        problem.apply(sums, np.empty(problem.n), optimizer, optimizer.init(problem.params), 7)


def reduced(problem, loss=3.0, count=4.0, grad=None):
    sums = np.zeros(problem.n + CONTROL_SLOTS)
    sums[:problem.n] = np.arange(problem.n) if grad is None else grad
    sums[problem.n], sums[problem.n + 1] = loss, count
    return sums


def test_an_update_is_the_mean_gradient_plus_the_penalty(problem):
    params = problem.params.copy()
    coef = params[:-1]
    grad = np.arange(problem.n) / 4.0
    grad[:-1] += ALPHA * coef
    step(problem, reduced(problem))
    np.testing.assert_array_equal(problem.params, params - LR * grad)
    assert problem.last_objective == 3.0 / 4.0 + 0.5 * ALPHA * float(coef @ coef)


@pytest.mark.parametrize("poison, what", [
    (dict(loss=np.nan), "loss"),
    (dict(loss=np.nan, grad=np.nan), "loss"),
    (dict(grad=np.nan), "gradient"),
    (dict(grad=np.inf), "gradient"),
    (dict(grad=1e308, count=1e-300), "gradient"),  # the mean overflows
])
def test_non_finite_sums_are_named(problem, poison, what):
    with pytest.raises(NonFiniteError, match=f"non-finite {what} at step 7"):
        step(problem, reduced(problem, **poison))


def test_an_update_that_overflows_names_the_parameters(problem):
    with pytest.raises(NonFiniteError, match="non-finite parameters at step 7"):
        step(problem, reduced(problem, grad=1e300), lr=1e300)


def test_a_learning_rate_of_zero_still_catches_a_non_finite_gradient(problem):
    with pytest.raises(NonFiniteError, match="non-finite gradient"):
        step(problem, reduced(problem, grad=np.inf), lr=0.0)
