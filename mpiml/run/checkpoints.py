"""A run's checkpoint policy: where, when, what to resume from, and whether it may be resumed.

Rank 0 alone reads and writes checkpoint files (:mod:`mpiml.files.checkpoint`); what it read
reaches the other ranks by broadcast (metadata as one small object, arrays as raw buffers), and
every failure is raised on all ranks together (:func:`mpiml.comm.on_root`), so a bad checkpoint
can never leave ranks disagreeing.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import yaml

from ..comm import broadcast, broadcast_object, mark_raised_together, on_root
from ..config import Config, dump, resume_conflicts
from ..files import checkpoint
from ..files.checkpoint import Checkpoint, CheckpointError


class Checkpoints:
    """Decides when to checkpoint and does the saving and loading for one run on ``comm``."""

    def __init__(self, config: Config, comm, log, fault=None):
        self.config, self.comm, self.log, self.fault = config, comm, log, fault
        cfg = config.checkpoint
        self.directory = Path(cfg.dir) if cfg.dir else Path(config.output.dir) / "checkpoints"
        self.last_step = -1
        self._last_time = time.monotonic()

    @property
    def enabled(self) -> bool:
        return self.config.checkpoint.enabled

    # -- when ---------------------------------------------------------------------------------

    def time_vote(self) -> float:
        """1.0 if this rank's clock says a time-based checkpoint is due (summed in the step's
        allreduce, so the decision is agreed, never taken on one rank's clock alone)."""
        every = self.config.checkpoint.every_seconds
        return float(every is not None and time.monotonic() - self._last_time >= every)

    def due(self, step: int, time_votes: float) -> bool:
        """Whether a checkpoint of ``step`` is due, from agreed values only."""
        if not self.enabled:
            return False
        every = self.config.checkpoint.every_steps
        by_steps = every is not None and step - max(self.last_step, 0) >= every
        return step != self.last_step and (by_steps or time_votes > 0)

    # -- saving -------------------------------------------------------------------------------

    def save(self, step: int, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """Rank 0 writes the checkpoint; a failure there is raised on every rank. A run with
        checkpoints disabled writes nothing (a stop signal then just stops it)."""
        if not self.enabled:
            return
        started = time.perf_counter()

        def write() -> str:
            full = dict(meta, config=dump(self.config), config_digest=self.config.digest(),
                        world_size=self.comm.Get_size())
            fault = None
            if self.fault is not None and self.fault.due("during_checkpoint", step, 0):
                fault = self.fault.fire
            try:
                return str(checkpoint.save(self.directory, Checkpoint(step, arrays, full),
                                           keep=self.config.checkpoint.keep, fault=fault))
            except OSError as exc:
                raise CheckpointError(f"cannot write checkpoint in {self.directory}: "
                                      f"{exc}") from exc

        path = on_root(write, self.comm)
        self.last_step = step
        self._last_time = time.monotonic()
        self.log({"event": "checkpoint", "step": step, "path": path,
                  "seconds": round(time.perf_counter() - started, 4)})

    # -- resuming -----------------------------------------------------------------------------

    def resume(self, spec: str | None = None, expected: dict | None = None) -> Checkpoint | None:
        """The checkpoint to resume from (identical on every rank), or None for a fresh start.

        ``spec``: "auto" (newest valid in the checkpoint directory; corrupt newer files are
        reported and skipped), "never", or a file path. ``expected``: metadata that must match
        (model kind, parameter count, classes...).
        """
        spec = spec or self.config.checkpoint.resume
        if not self.enabled:
            return None
        if spec == "never":
            self._set_aside_old_checkpoints()
            return None

        def find():
            found, notes = self._find(spec)
            if found is not None:
                self._check_compatible(found, expected or {})
            return found, notes

        found, notes = on_root(find, self.comm, share=False) or (None, [])
        for note in notes:
            self.log({"event": "checkpoint_skipped", "reason": note})
        return self._broadcast(found)

    def _set_aside_old_checkpoints(self) -> None:
        """A fresh start: rank 0 moves checkpoints of an earlier run out of the way."""

        def set_aside():
            try:
                moved = checkpoint.set_aside(self.directory)
            except OSError as exc:
                raise CheckpointError(f"cannot move old checkpoints in {self.directory} "
                                      f"aside: {exc}") from exc
            return None if moved is None else str(moved)

        moved = on_root(set_aside, self.comm)
        if moved is not None:
            self.log({"event": "checkpoints_set_aside", "to": moved})

    def _find(self, spec: str) -> tuple[Checkpoint | None, list[str]]:
        if spec == "auto":
            found, path, skipped = checkpoint.latest_valid(self.directory)
            if found is None and skipped:
                raise CheckpointError(f"no valid checkpoint in {self.directory}: "
                                      + "; ".join(skipped))
            if found is not None:
                self.log({"event": "resume", "path": str(path), "step": found.step})
            return found, skipped
        found = checkpoint.load(spec)
        self.log({"event": "resume", "path": spec, "step": found.step})
        return found, []

    def _check_compatible(self, found: Checkpoint, expected: dict) -> None:
        problems = [f"{key}: checkpoint has {found.meta.get(key)!r}, this run {value!r}"
                    for key, value in expected.items() if found.meta.get(key) != value]
        saved_config = yaml.safe_load(found.meta.get("config", "")) or {}
        problems += resume_conflicts(saved_config, self.config)
        if problems:
            raise CheckpointError(f"cannot resume from step {found.step} in "
                                  f"{self.directory}: " + "; ".join(problems)
                                  + " (see docs/fault-tolerance.md for what may change)")

    def _broadcast(self, found: Checkpoint | None) -> Checkpoint | None:
        """Rank 0's checkpoint on every rank: metadata as one object, arrays as raw bytes."""
        header = None
        if self.comm.Get_rank() == 0 and found is not None:
            header = (found.step, found.meta,
                      {name: (a.shape, a.dtype.str) for name, a in found.arrays.items()})
        header = broadcast_object(header, self.comm)
        if header is None:
            return None
        step, meta, layout = header
        arrays = {}
        for name in sorted(layout):
            shape, dtype = layout[name]
            array = found.arrays[name] if found is not None else np.empty(shape, dtype)
            array = np.array(array, order="C")  # keeps 0-d arrays 0-d (ascontiguousarray won't)
            if array.dtype.kind == "O":  # the same header on every rank: all raise together
                raise mark_raised_together(CheckpointError(
                    f"checkpoint array {name} holds Python objects"))
            if array.size:  # any fixed-size dtype (numbers, bools, bytes) travels as raw bytes
                broadcast(array.reshape(-1).view(np.uint8), self.comm)
            arrays[name] = array
        return Checkpoint(step, arrays, meta)
