"""L-BFGS on the full data: scipy's L-BFGS-B around an objective whose every evaluation is one
fused reduction, so every rank sees bit-identical (f, g) and scipy takes the identical path
everywhere.

A resumed L-BFGS run restarts scipy from the saved parameters (its curvature history is not
saved), so it reaches the same optimum but not bit-identically. Under ``fault.mode: shrink`` a
rank's death does the same without leaving the job: the search unwinds, the survivors restore
the parameters of the last iteration they all completed, re-read their rows and restart scipy
there with the iterations left (:mod:`mpiml.fit.survive`).
"""

from __future__ import annotations

import numpy as np

from ..optim import lbfgs
from .gradient import GradientProblem, quiet_overflow
from .progress import Progress
from .result import Fitted
from .survive import carry_on

DEFAULT_LBFGS_ITERATIONS = 500


def fit_lbfgs(problem: GradientProblem) -> Fitted:
    """Minimise ``problem``'s objective with L-BFGS; collective."""
    run = problem.run
    progress, _ = problem.restore({})  # L-BFGS keeps no optimizer state between restarts
    _remember(problem, progress)

    def attempt() -> Fitted:
        _search(problem, progress)
        progress.finished = True
        if run.config.checkpoint.at_end and run.checkpoints.last_step != progress.step:
            problem.checkpoint(progress, {})
        progress.epoch = 1
        return problem.result(progress)

    def restore(snapshot) -> int:
        nonlocal progress
        problem.params, progress = snapshot
        problem.set_rows(problem.rows)  # re-read: the batch plan of the new row range
        return progress.step

    def save() -> None:
        problem.checkpoint(progress, {})

    with quiet_overflow():
        return carry_on(run, problem.rows, attempt, restore, save)


def _remember(problem: GradientProblem, progress: Progress) -> None:
    """Under ``fault.mode: shrink``: keep the parameters and position of ``progress.step``."""
    if problem.run.survival is not None:
        problem.run.survival.remember(progress.step, (problem.params, progress))


def _search(problem: GradientProblem, progress: Progress) -> None:
    """scipy's L-BFGS from ``problem.params`` for the iterations left, counting them in
    ``progress`` (checkpoints, stop requests and the log on the way)."""
    run, cfg = problem.run, problem.run.config
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
        _remember(problem, progress)
        value, votes = evaluations[-1]
        problem.check_finite(value, progress.step)
        run.beat(progress.step)
        if progress.step % cfg.train.log_every == 0:
            run.log({"step": progress.step, "loss": value, **problem.clock_record()})
        if votes[0] > 0 or run.checkpoints.due(progress.step, votes[1]):
            problem.checkpoint(progress, {})
        if votes[0] > 0:
            run.stopped(progress.step)

    limit = cfg.train.max_steps or DEFAULT_LBFGS_ITERATIONS
    iterations = limit - progress.step
    if iterations > 0 and not progress.stopped_early:  # converged stays converged
        result = lbfgs(objective, problem.params.copy(), max_iter=iterations,
                       tol=cfg.optimizer.tol, history=cfg.optimizer.history,
                       callback=on_iteration)
        problem.params = np.ascontiguousarray(result.x, dtype=np.float64)
        progress.stopped_early = progress.step < limit  # converged before the limit
        run.log({"step": progress.step, "loss": float(result.fun), "lbfgs": result.message,
                 "evaluations": int(result.nfev), **problem.clock_record()})
