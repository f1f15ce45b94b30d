"""The training CLI: ``mpirun -n N python -m mpiml.train CONFIG [--set section.key=value ...]``.

Rank 0 reads and checks the config and broadcasts it, so every rank trains with the same resolved
config even if the file changes meanwhile. Only rank 0 prints and writes: ``config.yaml``,
``metrics.jsonl`` and ``model.h5`` in ``output.dir``. Any rank's exception ends the whole job
through :func:`mpiml.run_spmd` (exit 1; configuration and data errors are printed once).

SIGTERM and SIGUSR1 (Slurm time limits, preemption) make every rank stop at the next step
boundary; rank 0 writes a checkpoint and the job exits with ``EXIT_STOPPED`` (75). A restarted job
resumes from the newest valid checkpoint (``--resume auto``, the default).

Exit codes: 0 success, 1 error, 75 stopped on a signal after writing a checkpoint, 130
interrupted.
"""

import os

# One BLAS thread per rank unless the user says otherwise: ranks already fill the cores. Set
# before numpy is imported, which starts the BLAS thread pools.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

if __name__ == "__main__":
    # Block the stop signals before numpy or MPI start threads, so that every later thread
    # inherits the mask and one listener thread receives them (see mpiml.signals).
    from mpiml.signals import StopRequests

    STOP_REQUESTS = StopRequests().block_and_listen()

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from . import collectives, config, faults  # noqa: E402
from .launchcheck import check_launch  # noqa: E402
from .spmd import EXIT_STOPPED, run_spmd  # noqa: E402

__all__ = ["EXIT_STOPPED", "main", "train"]


class RunLog:
    """Rank 0's record of a run: one JSON line per record in metrics.jsonl, and a short line on
    stdout (one ``write`` per line so lines from launchers do not interleave). Every rank holds
    one; only the active one writes, and :meth:`set_root` moves that role (after a shrink the
    new rank 0 continues the same file)."""

    def __init__(self, path: Path, active: bool, quiet: bool = False):
        self.path, self.quiet = path, quiet
        self.start = time.perf_counter()
        self._file = open(path, "a") if active else None

    def set_root(self, active: bool) -> None:
        if active and self._file is None:
            self._file = open(self.path, "a")

    def __call__(self, record: dict) -> None:
        if self._file is None:
            return
        record = {"time_s": round(time.perf_counter() - self.start, 4), **record}
        self._file.write(json.dumps(record, default=str) + "\n")
        self._file.flush()
        if not self.quiet:
            sys.stdout.write(_format(record) + "\n")
            sys.stdout.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _format(record: dict) -> str:
    parts = []
    for key, value in record.items():
        if isinstance(value, dict):
            parts.extend(f"{key}.{k}={_short(v)}" for k, v in value.items())
        elif key not in ("compute_s", "comm_s", "bytes_reduced"):
            parts.append(f"{key}={_short(value)}")
    return "  ".join(parts)


def _short(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m mpiml.train", description="Train a model on the ranks of an MPI job.")
    parser.add_argument("config", nargs="?", help="YAML config file")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value (repeatable), e.g. --set optimizer.lr=0.1")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config (defaults if no file) and exit")
    parser.add_argument("--quiet", action="store_true", help="no per-step lines on stdout")
    parser.add_argument("--resume", metavar="auto|never|PATH",
                        help="resume from the newest valid checkpoint (auto, the default), start "
                             "fresh (never), or resume from one checkpoint file")
    args = parser.parse_args(argv)
    if args.config is None and not args.print_config:
        parser.error("a config file is required (or --print-config)")
    return args


def resolve_config(args, comm) -> config.Config:
    """Rank 0 reads the config; every rank gets the same one, or the same error."""
    resolved, error = None, None
    if comm.Get_rank() == 0:
        try:
            resolved = config.load(args.config, args.set).to_dict()
        except config.ConfigError as exc:
            error = exc
    collectives.raise_together(error, comm)
    return config.from_dict(collectives.broadcast_object(resolved, comm))


def train(args, comm=None, stop=None) -> int:
    """Run training as the CLI does, on the ranks of ``comm``; returns the exit code.

    ``stop``: the :class:`mpiml.signals.StopRequests` fed by SIGTERM/SIGUSR1 (the CLI's).
    """
    from .modelio import save_model
    from .watchdog import StallWatchdog

    if comm is None:  # the CLI's own job: COMM_WORLD must hold every rank the launcher started
        check_launch(collectives.world().Get_size())
    comm = collectives.world(comm)
    started_with = comm.Get_size()
    resolved = resolve_config(args, comm)
    fault = faults.from_env()
    if stop is not None:
        stop.grace_seconds = resolved.fault.stop_grace_seconds
    is_root = comm.Get_rank() == 0
    out_dir = Path(resolved.output.dir)
    if is_root:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(config.dump(resolved))
    log = RunLog(out_dir / "metrics.jsonl", active=is_root, quiet=args.quiet)
    watchdog = None
    try:
        if resolved.fault.stall_seconds is not None and resolved.fault.mode != "shrink":
            watchdog = StallWatchdog(resolved.fault.stall_seconds, comm)  # armed at step 1
        log({"event": "start", "ranks": comm.Get_size(), "model": resolved.model.kind,
             "optimizer": resolved.optimizer.name, "mode": resolved.comm.mode})
        saved, steps, final, stopped_early, comm = fit(resolved, comm, log, stop, fault,
                                                       args.resume, watchdog)
        if comm.Get_rank() == 0:  # the final communicator: rank 0 may have died (shrink)
            save_model(out_dir / "model.h5", saved, config.dump(resolved))
        log({"event": "done", "steps": steps, "stopped_early": stopped_early, "test": final,
             "model": str(out_dir / "model.h5")})
        if watchdog is not None:
            watchdog.close()
            watchdog = None
    finally:
        if watchdog is not None:
            watchdog.stop()
        log.close()
        if stop is not None:
            stop.finished()
    if comm.Get_size() < started_with:
        # Ranks died and the survivors finished (fault.mode shrink): the model is saved and every
        # output flushed. MPI_Finalize after a rank's death was seen to hang now and then with
        # Open MPI's ULFM, so the survivors leave without it (mpirun still reports success).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


def fit(resolved: config.Config, comm, log, stop=None, fault=None, resume=None, watchdog=None):
    """Train the configured model; returns (SavedModel, steps, final metrics, stopped early,
    the communicator training ended on: a shrunk one if ranks died in fault.mode shrink)."""
    from .modelio import SavedModel

    kind = resolved.model.kind
    if kind == "kmeans" or kind in config.HGBT_KINDS:
        from .runners import run_hgbt, run_kmeans

        runner = run_kmeans if kind == "kmeans" else run_hgbt
        outcome = runner(resolved, comm, log, stop=stop, fault=fault, resume=resume,
                         watchdog=watchdog)
        return (outcome.saved, outcome.steps, outcome.final_metrics, outcome.stopped_early,
                comm)
    from .trainer import Trainer

    trainer = Trainer(resolved, comm, log, stop=stop, fault=fault, resume=resume,
                      watchdog=watchdog)
    result = trainer.fit()
    model = result.model
    saved = SavedModel(model.kind, model.n_features, {"params": result.params}, model.options(),
                       n_classes=getattr(model, "n_classes", None) or 2, classes=result.classes,
                       scaler=result.scaler)
    return saved, result.steps, result.final_metrics, result.stopped_early, trainer.comm


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.print_config:
        if args.config is None and not args.set:
            sys.stdout.write(config.dump(config.Config()))
            return 0
        try:
            sys.stdout.write(config.dump(config.load(args.config, args.set)))
        except config.ConfigError as exc:
            sys.stderr.write(f"mpiml: error: {exc}\n")
            return 1
        return 0
    return run_spmd(lambda: train(args, stop=globals().get("STOP_REQUESTS")))


if __name__ == "__main__":
    sys.exit(main())
