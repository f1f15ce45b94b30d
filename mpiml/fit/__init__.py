"""The fit loops: first-order (sync, overlap, local SGD), L-BFGS, K-Means and boosting.

:func:`fit` hands a run's rows to the loop the model kind needs; each loop takes the run context
(:class:`mpiml.run.RunContext`, with the run's one reducer) and none wires its own plumbing.
:func:`fit_config` loads the rows ``config.data`` names first.
"""

from __future__ import annotations

from ..data.run_rows import RunData, load_run_data
from ..models.kinds import KINDS
from ..run.context import RunContext
from .result import FitResult, Fitted, result_of

__all__ = ["FitResult", "Fitted", "fit", "fit_config", "train"]


def fit(run: RunContext, rows: RunData) -> FitResult:
    """Train ``run.config``'s model on ``rows``; collective. The result is identical on every
    rank of the communicator the fit ended on (``FitResult.comm``)."""
    kind = run.config.model.kind
    family = KINDS[kind].family
    if family == "kmeans":
        from .kmeans import run_kmeans

        fitted = run_kmeans(run, rows)
    elif family == "hgbt":
        from .boosting import run_boosting

        fitted = run_boosting(run, rows)
    else:
        from .gradient import GradientProblem

        problem = GradientProblem(run, rows)
        if run.config.optimizer.name == "lbfgs":
            from .lbfgs import fit_lbfgs

            fitted = fit_lbfgs(problem)
        else:
            from .first_order import fit_first_order

            fitted = fit_first_order(problem)
    return result_of(kind, rows, fitted, run.comm)


def fit_config(run: RunContext) -> FitResult:
    """Load this rank's rows of ``run.config.data`` and :func:`fit` on them; collective."""
    task = KINDS[run.config.model.kind].task
    return fit(run, load_run_data(run.config, run.reducer, task))


def train(config, comm=None) -> FitResult:
    """Train ``config`` (a :class:`mpiml.config.Config`) on the rows ``config.data`` names, on
    ``comm`` (default COMM_WORLD), with no log or signal handling: the library form of
    ``python -m mpiml.train`` (which also writes the model file). Collective."""
    from ..run import open_run

    with open_run(config, comm) as run:
        return fit_config(run)
