"""L-BFGS on the full data: scipy's L-BFGS-B around an objective whose every evaluation is one
fused reduction, so every rank sees bit-identical (f, g) and scipy takes the identical path
everywhere.

A resumed L-BFGS run restarts scipy from the saved parameters (its curvature history is not
saved), so it reaches the same optimum but not bit-identically.
"""

from __future__ import annotations

import numpy as np

from ..optim import lbfgs
from .gradient import GradientProblem, quiet_overflow
from .result import Fitted

DEFAULT_LBFGS_ITERATIONS = 500


def fit_lbfgs(problem: GradientProblem) -> Fitted:
    """Minimise ``problem``'s objective with L-BFGS; collective."""
    run = problem.run
    optimizer_state: dict = {}
    progress, _ = problem.restore(optimizer_state)
    evaluations = []

    def objective(params):
        value, grad, votes = problem.objective(params, progress.step)
        # identical on every rank: a NaN here would otherwise end scipy's search "abnormally"
        # with the last good parameters, and the run would report success
        problem.check_finite(value, progress.step, grad)
        evaluations.append((value, votes))
        return value, grad

    def on_iteration(params):
        progress.step += 1
        problem.params[:] = params
        value, votes = evaluations[-1]
        problem.check_finite(value, progress.step)
        run.beat(progress.step)
        if progress.step % run.config.train.log_every == 0:
            run.log({"step": progress.step, "loss": value, **problem.clock_record()})
        if votes[0] > 0 or run.checkpoints.due(progress.step, votes[1]):
            problem.checkpoint(progress, optimizer_state)
        if votes[0] > 0:
            run.stopped(progress.step)

    cfg = run.config
    limit = cfg.train.max_steps or DEFAULT_LBFGS_ITERATIONS
    iterations = limit - progress.step
    if iterations > 0 and not progress.stopped_early:  # converged stays converged
        with quiet_overflow():
            result = lbfgs(objective, problem.params.copy(), max_iter=iterations,
                           tol=cfg.optimizer.tol, history=cfg.optimizer.history,
                           callback=on_iteration)
        problem.params = np.ascontiguousarray(result.x, dtype=np.float64)
        progress.stopped_early = progress.step < limit  # converged before the limit
        run.log({"step": progress.step, "loss": float(result.fun), "lbfgs": result.message,
                 "evaluations": int(result.nfev), **problem.clock_record()})
    progress.finished = True
    if cfg.checkpoint.at_end and run.checkpoints.last_step != progress.step:
        problem.checkpoint(progress, optimizer_state)
    progress.epoch = 1
    return problem.result(progress)
