"""Optimizers over flat float64 parameter vectors, learning-rate schedules, and L-BFGS.

First-order optimizers are optax-style ``(init, update)`` pairs of closures: ``init(params)``
returns the state as a dict of plain numpy arrays (it saves straight into HDF5 and loads back
without conversion), and ``update(grad, state, params)`` changes ``params`` and ``state`` in
place and returns the learning rate it used. The state always holds ``"step"``, an int64 0-d
array counting the updates done; ``update`` also accepts it back as a numpy scalar or a
1-element array, whatever a checkpoint reader returns.

L-BFGS wraps ``scipy.optimize.minimize(..., method="L-BFGS-B")`` around an objective that the
caller computes collectively (see :func:`lbfgs` for why this keeps MPI ranks in step).
scipy.optimize takes 0.1 s to import, so :func:`lbfgs` imports it: a first-order run never does.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from scipy.optimize import OptimizeResult

Schedule = Callable[[int], float]
State = dict[str, np.ndarray]

SCHEDULES = ("constant", "step", "cosine", "invscaling")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adagrad", "gd")
DEFAULT_MOMENTUM = 0.9


class Optimizer(NamedTuple):
    """An optimizer as a pair of functions over flat float64 arrays.

    ``init(params) -> state``; ``update(grad, state, params) -> learning rate used``, changing
    ``params`` and ``state`` in place.
    """

    init: Callable[[np.ndarray], State]
    update: Callable[[np.ndarray, State, np.ndarray], float]


# -- validation ------------------------------------------------------------------------------


def _check_real(
    name: str, value, low: float, high: float = math.inf, *, low_open=False, high_open=False
) -> float:
    """``value`` as a float inside the given interval, or a ValueError naming it."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (
            value < high if high_open else value <= high
        )
    if not ok:
        left, right = "(" if low_open else "[", ")" if high_open or high == math.inf else "]"
        raise ValueError(
            f"{name} must be a finite number in {left}{low}, {high}{right}; got {value!r}"
        )
    return float(value)


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
    return int(value)


def _check_choice(name: str, value, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


# -- schedules -------------------------------------------------------------------------------


def make_schedule(
    kind: str = "constant",
    lr: float = 0.01,
    warmup_steps: int = 0,
    step_size: int | None = None,
    gamma: float = 0.1,
    total_steps: int | None = None,
    power: float = 0.5,
    min_lr: float = 0.0,
) -> Schedule:
    """Learning rate as a function of the 0-based update count ``t``.

    Warm-up: for ``t < warmup_steps`` the rate rises linearly, ``lr * (t + 1) / warmup_steps``
    (from ``lr / warmup_steps`` at the first update to ``lr`` at the last warm-up update).
    Afterwards, with ``u = t - warmup_steps`` the number of updates since warm-up ended:

    * ``constant``:   ``lr``
    * ``step``:       ``lr * gamma ** (u // step_size)``  (needs ``step_size``)
    * ``cosine``:     ``min_lr + (lr - min_lr) * (1 + cos(pi * u / T)) / 2`` with
      ``T = total_steps - warmup_steps``; ``min_lr`` from ``u >= T`` on (needs ``total_steps``)
    * ``invscaling``: ``lr / (u + 1) ** power``  (scikit-learn's ``invscaling``)

    Arguments that ``kind`` does not use are ignored, so one configuration can carry them all.
    """
    _check_choice("schedule kind", kind, SCHEDULES)
    lr = _check_real("lr", lr, 0.0, low_open=True)
    warmup_steps = _check_int("warmup_steps", warmup_steps, 0)

    if kind == "constant":

        def decayed(u: int) -> float:
            return lr

    elif kind == "step":
        if step_size is None:
            raise ValueError("schedule kind 'step' needs step_size (an integer >= 1); got None")
        step_size = _check_int("step_size", step_size, 1)
        gamma = _check_real("gamma", gamma, 0.0, 1.0, low_open=True)

        def decayed(u: int) -> float:
            return lr * gamma ** (u // step_size)

    elif kind == "cosine":
        if total_steps is None:
            raise ValueError("schedule kind 'cosine' needs total_steps; got None")
        total_steps = _check_int("total_steps", total_steps, warmup_steps + 1)
        min_lr = _check_real("min_lr", min_lr, 0.0, lr)
        decay_steps = total_steps - warmup_steps

        def decayed(u: int) -> float:
            progress = min(u, decay_steps) / decay_steps
            return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))

    else:  # invscaling
        power = _check_real("power", power, 0.0, low_open=True)

        def decayed(u: int) -> float:
            return lr / (u + 1) ** power

    def schedule(t: int) -> float:
        if t < warmup_steps:
            return lr * (t + 1) / warmup_steps
        return decayed(t - warmup_steps)

    return schedule


def _as_schedule(schedule: Schedule | float) -> Schedule:
    """A schedule, or a number meaning a constant learning rate."""
    if callable(schedule):
        return schedule
    return make_schedule("constant", schedule)


def _step_count(state: State) -> int:
    return int(np.asarray(state["step"]).item())


def _new_step_counter() -> np.ndarray:
    return np.zeros((), dtype=np.int64)


# -- first-order optimizers ------------------------------------------------------------------


def sgd(schedule: Schedule | float, momentum: float = 0.0, nesterov: bool = False) -> Optimizer:
    """Stochastic gradient descent, with optional heavy-ball or Nesterov momentum.

    PyTorch's formulation: ``v <- momentum * v + g``; the step direction is ``v`` (heavy ball)
    or ``g + momentum * v`` (Nesterov); ``params <- params - lr * direction``. With
    ``momentum = 0`` this is the plain step ``params <- params - lr * g``; fed the full-batch
    gradient it is gradient descent.
    """
    schedule = _as_schedule(schedule)
    momentum = _check_real("momentum", momentum, 0.0, 1.0, high_open=True)
    if nesterov and momentum == 0.0:
        raise ValueError("nesterov=True needs momentum in (0, 1); got momentum=0.0")

    def init(params: np.ndarray) -> State:
        state = {"step": _new_step_counter()}
        if momentum > 0.0:
            state["velocity"] = np.zeros_like(params, dtype=np.float64)
        return state

    def update(grad: np.ndarray, state: State, params: np.ndarray) -> float:
        lr = schedule(_step_count(state))
        if momentum > 0.0:
            velocity = state["velocity"]
            velocity *= momentum
            velocity += grad
            direction = grad + momentum * velocity if nesterov else velocity
        else:
            direction = grad
        params -= lr * direction
        state["step"] += 1
        return lr

    return Optimizer(init, update)


def adam(
    schedule: Schedule | float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8
) -> Optimizer:
    """Adam (Kingma & Ba) with bias-corrected first and second moment estimates.

    ``m <- b1 m + (1 - b1) g``, ``v <- b2 v + (1 - b2) g^2``, and
    ``params <- params - lr * m_hat / (sqrt(v_hat) + eps)`` with ``m_hat = m / (1 - b1^t)``,
    ``v_hat = v / (1 - b2^t)`` at update ``t = 1, 2, ...``.
    """
    schedule = _as_schedule(schedule)
    beta1 = _check_real("beta1", beta1, 0.0, 1.0, high_open=True)
    beta2 = _check_real("beta2", beta2, 0.0, 1.0, high_open=True)
    eps = _check_real("eps", eps, 0.0, low_open=True)

    def init(params: np.ndarray) -> State:
        return {
            "step": _new_step_counter(),
            "first_moment": np.zeros_like(params, dtype=np.float64),
            "second_moment": np.zeros_like(params, dtype=np.float64),
        }

    def update(grad: np.ndarray, state: State, params: np.ndarray) -> float:
        step = _step_count(state)
        lr = schedule(step)
        first, second = state["first_moment"], state["second_moment"]
        first *= beta1
        first += (1.0 - beta1) * grad
        second *= beta2
        second += (1.0 - beta2) * np.square(grad)
        t = step + 1
        denominator = np.sqrt(second / (1.0 - beta2**t))
        denominator += eps
        params -= (lr / (1.0 - beta1**t)) * first / denominator
        state["step"] += 1
        return lr

    return Optimizer(init, update)


def adagrad(schedule: Schedule | float, eps: float = 1e-10) -> Optimizer:
    """AdaGrad: per-coordinate steps ``lr * g / (sqrt(sum of past g^2) + eps)``."""
    schedule = _as_schedule(schedule)
    eps = _check_real("eps", eps, 0.0, low_open=True)

    def init(params: np.ndarray) -> State:
        return {
            "step": _new_step_counter(),
            "sum_squared_grad": np.zeros_like(params, dtype=np.float64),
        }

    def update(grad: np.ndarray, state: State, params: np.ndarray) -> float:
        lr = schedule(_step_count(state))
        accumulated = state["sum_squared_grad"]
        accumulated += np.square(grad)
        denominator = np.sqrt(accumulated)
        denominator += eps
        params -= lr * grad / denominator
        state["step"] += 1
        return lr

    return Optimizer(init, update)


_OPTIONS = {
    "sgd": ("momentum", "nesterov"),
    "momentum": ("momentum",),
    "nesterov": ("momentum",),
    "adam": ("beta1", "beta2", "eps"),
    "adagrad": ("eps",),
    "gd": (),
}


def make_optimizer(name: str, schedule: Schedule | float, **options) -> Optimizer:
    """Build an optimizer by name, as the configuration spells it.

    ``sgd`` (options momentum, nesterov), ``momentum`` (heavy ball, momentum default 0.9),
    ``nesterov`` (momentum default 0.9), ``adam`` (beta1, beta2, eps), ``adagrad`` (eps) and
    ``gd`` (full-batch gradient descent: the plain step; the trainer feeds it the full-batch
    gradient). ``schedule`` is a callable from :func:`make_schedule` or a constant rate.
    """
    _check_choice("optimizer", name, OPTIMIZERS)
    for option in options:
        valid = ", ".join(_OPTIONS[name]) or "none"
        _check_choice(f"option of optimizer {name!r} (valid: {valid})", option, _OPTIONS[name])
    if name == "momentum":
        return sgd(schedule, momentum=options.get("momentum", DEFAULT_MOMENTUM))
    if name == "nesterov":
        return sgd(schedule, momentum=options.get("momentum", DEFAULT_MOMENTUM), nesterov=True)
    if name == "adam":
        return adam(schedule, **options)
    if name == "adagrad":
        return adagrad(schedule, **options)
    return sgd(schedule, **options)


# -- L-BFGS ----------------------------------------------------------------------------------

#: The line search of L-BFGS-B gives up after 20 evaluations; bound the total accordingly.
_MAX_EVALUATIONS_PER_ITERATION = 20


def lbfgs(
    fun: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x0: np.ndarray,
    max_iter: int = 100,
    tol: float = 1e-10,
    history: int = 10,
    callback: Callable | None = None,
) -> OptimizeResult:
    """Minimise ``fun(x) -> (f, grad)`` with scipy's L-BFGS-B (no bounds).

    Stops when the relative decrease of ``f`` falls below ``tol`` (scipy ``ftol``), when the
    largest gradient component falls below ``tol`` (``gtol``), after ``max_iter`` iterations, or
    after ``20 * max_iter`` evaluations (the line search's own limit per iteration). ``history``
    is the number of correction pairs kept (``maxcor``); ``callback`` goes to
    ``scipy.optimize.minimize`` unchanged. Non-convergence does not warn here (every rank would
    print it): check ``result.success`` and ``result.message``.

    Safe under MPI: the caller's ``fun`` computes ``(f, grad)`` through an allreduce, so every
    rank gets bit-identical values. L-BFGS-B is deterministic, so every rank then proposes the
    same iterates, runs the same line search and calls ``fun`` the same number of times: the
    collectives inside ``fun`` stay matched and all ranks stop at the same iteration. This needs
    the same scipy build on every rank, and a ``callback`` that stops the run (raises
    ``StopIteration``) only on reduced or broadcast values, so that all ranks stop together.
    """
    max_iter = _check_int("max_iter", max_iter, 1)
    tol = _check_real("tol", tol, 0.0)
    history = _check_int("history", history, 1)
    from scipy.optimize import minimize

    return minimize(
        fun,
        np.array(x0, dtype=np.float64),
        jac=True,
        method="L-BFGS-B",
        callback=callback,
        options={
            "maxiter": max_iter,
            "maxfun": _MAX_EVALUATIONS_PER_ITERATION * max_iter,
            "maxcor": history,
            "ftol": tol,
            "gtol": tol,
        },
    )
