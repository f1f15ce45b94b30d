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

__all__ = ["FitResult", "Fitted", "already_finished", "fit", "fit_config", "load_rows", "train"]

#: The config values that bound each loop: raising one continues a finished run.
_LIMITS = {"first_order": ("train.epochs", "train.max_steps"), "lbfgs": ("train.max_steps",),
           "kmeans": ("kmeans.max_iter",), "hgbt": ("hgbt.n_estimators",)}
_UNLIMITED = {"train.max_steps": {"first_order": float("inf"), "lbfgs": 500}}


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
    return result_of(kind, rows, fitted, run.reducer)


def _loop(config) -> str:
    family = KINDS[config.model.kind].family
    if family in ("kmeans", "hgbt"):
        return family
    return "lbfgs" if config.optimizer.name == "lbfgs" else "first_order"


def already_finished(meta: dict | None, config) -> bool:
    """Whether the run that saved a checkpoint with metadata ``meta`` already did all that
    ``config`` asks: it finished (its final checkpoint) and either stopped early (converged,
    early stopping) or no limit of its loop (epochs, steps, iterations, trees) was raised."""
    import yaml

    if not meta or not meta.get("finished"):
        return False
    if meta.get("stopped_early"):
        return True
    loop = _loop(config)
    saved, now = yaml.safe_load(meta.get("config", "")) or {}, config.to_dict()

    def value(values, dotted):
        section, key = dotted.split(".")
        found = values.get(section, {}).get(key)
        return _UNLIMITED.get(dotted, {}).get(loop) if found is None else found

    return all(value(now, key) <= value(saved, key) for key in _LIMITS[loop])


def load_rows(run: RunContext) -> RunData:
    """This rank's rows of ``run.config.data``, for the task of the model kind; collective."""
    task = KINDS[run.config.model.kind].task

    def reading():
        run.beat(0, phase="loading the data")

    reading()
    run.inject("load", 0)
    return load_run_data(run.config, run.reducer, task, progress=reading)


def fit_config(run: RunContext) -> FitResult:
    """Load this rank's rows of ``run.config.data`` and :func:`fit` on them; collective."""
    return fit(run, load_rows(run))


def train(config, comm=None) -> FitResult:
    """Train ``config`` (a :class:`mpiml.config.Config`) on the rows ``config.data`` names, on
    ``comm`` (default COMM_WORLD), with no log or signal handling: the library form of
    ``python -m mpiml.train`` (which also writes the model file). Collective."""
    from ..run import open_run

    with open_run(config, comm) as run:
        return fit_config(run)
