"""The first-order loop (SGD, momentum, Nesterov, Adam, AdaGrad, full-batch GD) in any
communication mode (:mod:`mpiml.fit.steps`).

Every branch that decides whether a collective is called (steps per epoch, evaluation,
checkpoints, early stopping, stop) depends only on the configuration or on reduced values, so
ranks never disagree on how many collectives they call. The loop position (step, epoch, next
batch, early-stopping state, epoch loss from reduced values) is plain data saved with the
parameters and optimizer state; resuming restores all of it, so a resumed run in sync mode ends
bit-identical to one never interrupted (same rank count).
"""

from __future__ import annotations

from ..comm import RankFailure
from .gradient import GradientProblem, quiet_overflow
from .progress import Progress
from .result import Fitted
from .steps import make_step
from .survive import reread_rows


def fit_first_order(problem: GradientProblem) -> Fitted:
    """Train ``problem`` with its configured first-order optimizer; collective."""
    cfg = problem.run.config.train
    optimizer = problem.optimizer()
    state = optimizer.init(problem.params)
    progress, pending_sums = problem.restore(state)
    progress.finished = progress.stopped_early or progress.epoch >= cfg.epochs or bool(
        cfg.max_steps and progress.step >= cfg.max_steps)  # a larger limit continues the run
    step = make_step(problem, optimizer, state, pending_sums)
    with quiet_overflow():
        progress = _loop(problem, step, state, progress)
    return problem.result(progress)


def _loop(problem: GradientProblem, step, state: dict, progress: Progress) -> Progress:
    """Steps until ``progress`` is finished, then the final drain and checkpoint; returns the
    position reached (a new one after a shrink)."""
    run, cfg = problem.run, problem.run.config.train
    while not progress.finished:
        if run.survival is not None:
            run.survival.remember(progress.step, (problem.params, state, progress))
        try:
            batch = (None if cfg.batch_size is None
                     else problem.plan.local_rows(progress.epoch, progress.batch))
            votes = step(batch, progress)
            progress.step += 1
            progress.batch += 1
            run.beat(progress.step)
            if progress.step % cfg.log_every == 0:
                run.log({"step": progress.step, **problem.pace(progress.step),
                         "epoch": progress.epoch + 1, "epochs": cfg.epochs,
                         "loss": problem.last_objective, "lr": problem.last_lr,
                         **problem.clock_record()})
            if (cfg.eval_every and progress.step % cfg.eval_every == 0
                    and problem.rows.test is not None):
                step.drain(progress)
                run.log({"step": progress.step, "epoch": progress.epoch,
                         "test": problem.evaluate()})
            if step.replicas_agree(votes):
                problem.check_replicas(progress.step)
            if progress.batch == problem.plan.n_batches(progress.epoch):
                step.drain(progress)
                votes = step.end_epoch(progress, votes)
                problem.end_epoch(progress)
            if cfg.max_steps and progress.step >= cfg.max_steps:
                progress.finished = True
            if votes is None:
                continue
            if votes[0] > 0 or run.checkpoints.due(progress.step, votes[1]) or (
                    progress.finished and run.config.checkpoint.at_end):
                in_flight = None if progress.finished else step.settle()
                if in_flight is None:
                    step.drain(progress)
                problem.checkpoint(progress, state, pending_sums=in_flight)
            if votes[0] > 0 and not progress.finished:
                run.stopped(progress.step)
        except RankFailure:
            if run.survival is None:
                raise
            progress = _survive(problem, state)
    step.drain(progress)
    if run.config.checkpoint.at_end and run.checkpoints.last_step != progress.step:
        problem.checkpoint(progress, state)
    return progress


def _survive(problem: GradientProblem, state: dict) -> Progress:
    """A rank died (``fault.mode: shrink``): restore the agreed step's state on the survivors,
    re-read this rank's rows for the new rank count, and return the position to carry on from;
    with too few survivors, checkpoint that state and stop."""
    run = problem.run
    (params, saved_state, progress), enough = run.survival.recover()
    problem.params[:] = params
    for name, value in saved_state.items():
        state[name][...] = value
    if not enough:
        problem.checkpoint(progress, state)
        run.stopped(progress.step)
    reread_rows(run, problem.rows)
    problem.set_rows(problem.rows)
    return progress
