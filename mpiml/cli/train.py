"""The training command: ``mpirun -n N python -m mpiml.train CONFIG [--set section.key=value ...]``
(also installed as ``mpiml-train``).

Rank 0 reads and checks the config and broadcasts it, so every rank trains with the same resolved
config even if the file changes meanwhile. Only rank 0 prints and writes: ``config.yaml``,
``metrics.jsonl`` and ``model.h5`` in ``output.dir``. Any rank's exception ends the whole job
through :func:`mpiml.run_spmd` (exit 1; configuration and data errors are printed once).

SIGTERM and SIGUSR1 (Slurm time limits, preemption) make every rank stop at the next step
boundary; rank 0 writes a checkpoint and the job exits with 75. A restarted job resumes from the
newest valid checkpoint (``--resume auto``, the default). ``--dry-run`` reads the config and the
data and reports what training would hold, writing nothing (:mod:`.dry_run`).

Exit codes: 0 success (also "already finished": nothing to do), 1 error, 75 stopped on a signal
after writing a checkpoint, 76 stopped on a signal with checkpoints disabled (nothing saved), 130
interrupted.

:func:`main` blocks the stop signals and pins BLAS to one thread per rank BEFORE numpy or MPI is
imported (both start threads, which inherit the signal mask), so this module imports nothing
heavy at its top: the console script and ``python -m`` behave the same. Rank 0 records how long
each start-up phase took, from the process's start to the first step, as one ``startup`` record
(:class:`mpiml.run.log.Startup`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from . import add_version

BLAS_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
#: The least time ``MPI_Init`` is given before a rank leaves (it may take seconds on a loaded
#: machine or a large job, whatever ``fault.stall_seconds`` says).
MPI_INIT_SECONDS = 10.0


def prepare_process():
    """One BLAS thread per rank unless the user says otherwise (ranks already fill the cores),
    and the stop signals blocked and handed to a listener thread; returns its StopRequests."""
    for variable in BLAS_THREAD_VARIABLES:
        os.environ.setdefault(variable, "1")
    from ..run.signals import StopRequests

    return StopRequests().block_and_listen()


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mpiml-train", description="Train a model on the ranks of an MPI job.")
    add_version(parser)
    parser.add_argument("config", nargs="?", help="YAML config file")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value (repeatable), e.g. --set optimizer.lr=0.1")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config (defaults if no file) and exit")
    parser.add_argument("--dry-run", action="store_true",
                        help="read the config and open the data on every rank, print the rows "
                             "per rank, features, classes, steps per epoch and estimated "
                             "memory per rank, and exit without training or writing anything")
    parser.add_argument("--quiet", action="store_true", help="no per-step lines on stdout")
    parser.add_argument("--resume", metavar="auto|never|PATH",
                        help="resume from the newest valid checkpoint of this run (auto, the "
                             "default), start fresh (never), or resume from one checkpoint file")
    parser.add_argument("--break-lock", action="store_true",
                        help="take over output.dir even though another host's job holds its "
                             "lock (only when that job is surely gone)")
    args = parser.parse_args(argv)
    if args.config is None and not args.print_config:
        parser.error("a config file is required (or --print-config)")
    return args


def startup_stall_seconds(args) -> float | None:
    """``fault.stall_seconds`` as this rank reads the config itself (rank 0's copy, broadcast
    later, is the one the run uses); the default when the config cannot be read here."""
    from .. import config

    try:
        return config.load(args.config, args.set).fault.stall_seconds
    except Exception:  # noqa: BLE001 -- rank 0 reports the config's problems to every rank
        return config.FaultConfig().stall_seconds


def resolve_config(args, comm):
    """Rank 0 reads the config; every rank gets the same one, or the same error (a missing
    data file of a config that says how to make it names the command)."""
    from pathlib import Path

    from .. import config
    from ..comm import on_root

    def read():
        loaded = config.load(args.config, args.set)
        train = loaded.data.train
        recipe = config.data_recipe(args.config) if args.config else None
        if train and recipe and not Path(train).exists():
            raise config.ConfigError(f"data.train {train}: no such file; this config's data "
                                     f"is made by: {recipe}")
        return loaded.to_dict()

    return config.from_dict(on_root(read, comm))


def train(args, comm=None, stop=None, startup=None) -> int:
    """Run training as the CLI does, on the ranks of ``comm``; returns the exit code.

    ``stop``: the :class:`mpiml.run.signals.StopRequests` fed by SIGTERM/SIGUSR1 (the CLI's).
    ``startup``: the :class:`mpiml.run.log.Startup` of this process (the CLI's), marked at the
    end of each phase and logged at the first step.
    """
    from pathlib import Path

    from .. import __version__, config
    from ..comm import on_root, world
    from ..files.atomic import atomic_text
    from ..files.model import save_model
    from ..fit import already_finished, fit, load_rows
    from ..models.kinds import KINDS
    from ..run import faults, open_run
    from ..run.launchcheck import check_launch
    from ..run.log import RunLog
    from ..run.watchdog import StallWatchdog, deadline

    mark = (lambda phase: None) if startup is None else startup.mark
    mark("imports")
    # Watch from MPI_Init on: a rank stopped (or, under ULFM, lost) now would hang the others.
    # Until rank 0's config arrives, the patience is what this rank reads itself.
    patience = startup_stall_seconds(args)
    mark("config_read")
    with deadline(None if patience is None else max(patience, MPI_INIT_SECONDS)):
        world_size = world(comm).Get_size()  # MPI_Init, if MPI is not initialised yet
    mark("mpi_init")
    watchdog = None if patience is None else StallWatchdog(patience, comm)
    try:
        if comm is None:  # the CLI's job: COMM_WORLD must hold every rank the launcher started
            check_launch(world_size)
        comm = world(comm)
        fault = faults.from_env()
        if fault is not None and fault.due("start", 0, comm.Get_rank()):
            fault.fire()
        resolved = resolve_config(args, comm)
        mark("config")
    except BaseException:
        if watchdog is not None:
            watchdog.stop()
        raise
    if stop is not None:
        stop.grace_seconds = resolved.fault.stop_grace_seconds
    out_dir = Path(resolved.output.dir)
    model_path = out_dir / "model.h5"
    log = RunLog(out_dir / "metrics.jsonl", active=comm.Get_rank() == 0, quiet=args.quiet)
    started_with = comm.Get_size()
    try:
        with open_run(resolved, comm, log=log, stop=stop, fault=fault,
                      resume=args.resume, watchdog=watchdog, output_dir=True,
                      break_lock=args.break_lock) as run:
            meta = run.checkpoints.peek(args.resume)
            if already_finished(meta, resolved) and on_root(model_path.exists, comm):
                if comm.Get_rank() == 0:
                    sys.stdout.write(f"mpiml: the run in {out_dir} already finished at step "
                                     f"{meta['step']}; nothing to do (raise train.epochs, "
                                     "train.max_steps, kmeans.max_iter or hgbt.n_estimators "
                                     "to continue it, or pass --resume never to start "
                                     "afresh)\n")
                return 0
            mark("run_open")

            def started():  # once the data are read and the resume is decided: bad data or a
                # refused checkpoint leave the run directory as it was
                on_root(lambda: atomic_text(out_dir / "config.yaml", config.dump(resolved)),
                        comm)
                record = {"event": "start", "ranks": comm.Get_size(),
                          "model": resolved.model.kind, "version": __version__,
                          "config_digest": resolved.digest(), "lineage": run.checkpoints.lineage}
                if KINDS[resolved.model.kind].gradient_trained:  # trees and K-Means have neither
                    record.update(optimizer=resolved.optimizer.name, mode=resolved.comm.mode)
                log(record)
                mark("loop_setup")

            run.checkpoints.on_start.append(started)
            if startup is not None:
                def first_step():
                    startup.mark("first_step")
                    log(startup.record())

                run.on_first_step.append(first_step)
            rows = load_rows(run)
            mark("data")
            result = fit(run, rows)
            run.beat(result.steps, phase="saving the model")
            run.inject("final_save", result.steps)
            # on the final communicator (rank 0 may have died under shrink); every rank learns
            # whether the model was written
            on_root(lambda: save_model(model_path, result.saved, config.dump(resolved)),
                    result.comm, share=False)
            log({"event": "done", "steps": result.steps, "stopped_early": result.stopped_early,
                 "test": result.metrics, **({"validation": result.validation}
                                            if result.validation else {}),
                 "model": str(model_path)})
            log.close()  # before the last (watched) barrier: every record is on disk
            run.inject("finish", result.steps)
    finally:
        log.close()
        if stop is not None:
            stop.finished()
    if result.comm.Get_size() < started_with:
        # Ranks died and the survivors finished (fault.mode shrink): the model is saved and every
        # output flushed. MPI_Finalize after a rank's death was seen to hang now and then with
        # Open MPI's ULFM, so the survivors leave without it (mpirun still reports success).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


def dry_run(args, comm=None) -> None:
    """``--dry-run``: check the launch and read the config as training does, then report what
    training would hold (:func:`.dry_run.describe_run`) without writing anything; collective."""
    from ..comm import world
    from ..run.launchcheck import check_launch
    from .dry_run import describe_run

    if comm is None:  # the CLI's job: COMM_WORLD must hold every rank the launcher started
        check_launch(world(comm).Get_size())
    comm = world(comm)
    describe_run(args.config, resolve_config(args, comm), comm)


def main(argv=None) -> int:
    """Entry point of ``python -m mpiml.train`` and ``mpiml-train``."""
    entered = time.time()
    args = parse_args(argv)
    if args.print_config:
        from .. import config

        if args.config is None and not args.set:
            sys.stdout.write(config.dump(config.Config()))
            return 0
        try:
            sys.stdout.write(config.dump(config.load(args.config, args.set)))
        except config.ConfigError as exc:
            sys.stderr.write(f"mpiml: error: {exc}\n")
            return 1
        return 0
    if args.dry_run:
        for variable in BLAS_THREAD_VARIABLES:
            os.environ.setdefault(variable, "1")
        from ..comm.spmd import run_program

        return run_program(lambda: dry_run(args))
    stop = prepare_process()
    from ..comm.spmd import run_program
    from ..run.log import Startup

    return run_program(lambda: train(args, stop=stop, startup=Startup(entered)))
