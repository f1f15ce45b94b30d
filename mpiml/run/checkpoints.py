"""A run's checkpoint policy: where, when, what to resume from, and whether it may be resumed.

Every run has a **lineage**: an id written into every checkpoint it saves and recorded, as the
directory's current run, in ``lineage.json`` beside them. ``--resume auto`` considers only the
current lineage's checkpoints, and retention deletes only its own; resuming from an older
checkpoint (``--resume PATH``) starts a branch, a new lineage, after setting its newer siblings
aside (moved, never deleted, never picked by ``auto``); ``--resume never`` sets every checkpoint
aside and starts a new lineage. A checkpoint also records the config digest and the data
fingerprint (:mod:`mpiml.data.fingerprint`): a resume on changed data is refused with the
differences unless ``checkpoint.allow_data_change`` says so.

Rank 0 alone reads and writes checkpoint files (:mod:`mpiml.files.checkpoint`); what it read
reaches the other ranks by broadcast (metadata as one small object, arrays as raw buffers), and
every failure is raised on all ranks together (:func:`mpiml.comm.on_root`).
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import numpy as np
import yaml

from ..comm import broadcast, broadcast_object, mark_raised_together, on_root
from ..config import Config, dump, resume_conflicts
from ..data.fingerprint import differences
from ..files import checkpoint
from ..files.atomic import atomic_text
from ..files.checkpoint import Checkpoint, CheckpointError

LINEAGE_FILE = "lineage.json"


def new_lineage() -> str:
    return secrets.token_hex(8)


class Checkpoints:
    """Decides when to checkpoint and does the saving and loading for one run on ``comm``."""

    def __init__(self, config: Config, comm, log, fault=None):
        self.config, self.comm, self.log, self.fault = config, comm, log, fault
        cfg = config.checkpoint
        self.directory = Path(cfg.dir) if cfg.dir else Path(config.output.dir) / "checkpoints"
        self.last_step = -1
        self.lineage: str | None = None
        #: After :meth:`resume`: the data differences that ``allow_data_change`` let through.
        self.data_changed: list[str] = []
        #: The training data's fingerprint, saved in every checkpoint (given to :meth:`resume`).
        self.data: dict = {}
        #: Called on every rank once :meth:`resume` has decided (the run really starts): what
        #: a run writes before its first step waits for it, so a refused resume writes nothing.
        self.on_start: list = []
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
                        world_size=self.comm.Get_size(), lineage=self.lineage, data=self.data)
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

    def resume(self, spec: str | None = None, expected: dict | None = None,
               data: dict | None = None) -> Checkpoint | None:
        """The checkpoint to resume from (identical on every rank), or None for a fresh start;
        fixes the run's lineage (see the module docstring).

        ``spec``: "auto", "never", or a file path. ``expected``: metadata that must match
        (model kind, parameter count, classes...). ``data``: the training data's fingerprint.
        """
        spec = spec or self.config.checkpoint.resume
        self.data = dict(data or {})
        if not self.enabled:
            self.lineage = new_lineage()
            self._started()
            return None

        def decide():
            found, path, notes = self._select(spec)
            changed = []
            if found is not None:
                changed = self._check_compatible(found, expected or {}, data or {})
            lineage = self._settle_lineage(spec, found, path, notes)
            return found, lineage, notes, changed

        found, lineage, notes, changed = on_root(decide, self.comm, share=False) or (
            None, None, [], [])
        self.lineage, self.data_changed = broadcast_object((lineage, changed), self.comm)
        for note in notes:
            self.log(note)
        if changed:
            self.log({"event": "data_changed", "differences": changed,
                      "action": "resumed (checkpoint.allow_data_change)"})
        found = self._broadcast(found)
        self._started()
        return found

    def _started(self) -> None:
        callbacks, self.on_start = self.on_start, []
        for callback in callbacks:
            callback()

    def _select(self, spec: str) -> tuple[Checkpoint | None, Path | None, list[dict]]:
        """On rank 0, moving nothing: the checkpoint ``spec`` names, its path, and the records
        of skipped files."""
        if spec == "never":
            return None, None, []
        if spec != "auto":
            return checkpoint.load(_named_file(spec)), Path(spec), []
        found, path, skipped = checkpoint.latest_valid(self.directory, self._current_lineage())
        if found is None and skipped:
            raise CheckpointError(f"no valid checkpoint in {self.directory}: "
                                  + "; ".join(skipped))
        return found, path, [{"event": "checkpoint_skipped", "reason": r} for r in skipped]

    def _settle_lineage(self, spec: str, found: Checkpoint | None, path: Path | None,
                        notes: list[dict]) -> str:
        """On rank 0, once the resume is known to be possible: set checkpoints aside as the
        policy says and record the lineage this run continues or starts; returns it."""
        current = self._current_lineage()
        if found is None:
            if spec == "never":
                moved = checkpoint.set_aside(self.directory)
                if moved is not None:
                    notes.append({"event": "checkpoints_set_aside", "to": str(moved),
                                  "reason": "--resume never"})
            return self._start_lineage(new_lineage(), None)
        lineage = found.meta.get("lineage")
        if spec == "auto":
            lineage = lineage or current or new_lineage()
        else:
            newer = [p for p in checkpoint.list_checkpoints(self.directory)
                     if checkpoint.step_of(p) > found.step]
            if newer or lineage is None or lineage != current:
                moved = checkpoint.set_aside(self.directory, newer)
                if moved is not None:
                    notes.append({"event": "checkpoints_set_aside", "to": str(moved),
                                  "reason": f"resumed from the older step {found.step}"})
                branch = {"lineage": lineage, "step": found.step, "path": str(path)}
                notes.append({"event": "resume", "path": str(path), "step": found.step})
                return self._start_lineage(new_lineage(), branch)
        notes.append({"event": "resume", "path": str(path), "step": found.step})
        return self._start_lineage(lineage, None)

    def _current_lineage(self) -> str | None:
        try:
            return json.loads((self.directory / LINEAGE_FILE).read_text())["lineage"]
        except (OSError, ValueError, KeyError):
            return None

    def _start_lineage(self, lineage: str, branched_from: dict | None) -> str:
        """Record ``lineage`` as the directory's current run (atomically)."""
        record = {"lineage": lineage, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                time.gmtime())}
        if branched_from is not None:
            record["branched_from"] = branched_from
        previous = self._read_record()
        if previous is not None and previous.get("lineage") == lineage:
            return lineage
        atomic_text(self.directory / LINEAGE_FILE, json.dumps(record, sort_keys=True) + "\n")
        return lineage

    def _read_record(self) -> dict | None:
        try:
            return json.loads((self.directory / LINEAGE_FILE).read_text())
        except (OSError, ValueError):
            return None

    def _check_compatible(self, found: Checkpoint, expected: dict, data: dict) -> list[str]:
        """Raise when ``found`` cannot be resumed into this run; returns the data differences
        that ``checkpoint.allow_data_change`` lets through."""
        problems = [f"{key}: checkpoint has {found.meta.get(key)!r}, this run {value!r}"
                    for key, value in expected.items() if found.meta.get(key) != value]
        saved_config = yaml.safe_load(found.meta.get("config", "")) or {}
        problems += resume_conflicts(saved_config, self.config)
        changed = differences(found.meta["data"], data) if "data" in found.meta and data else []
        hint = " (see docs/fault-tolerance.md for what may change)"
        if changed and not self.config.checkpoint.allow_data_change:
            problems += changed
            hint = (" (the training data changed: resume on the data the run started with, "
                    "start afresh with --resume never, or set checkpoint.allow_data_change: "
                    "true to continue on these data)")
        if problems:
            raise CheckpointError(f"cannot resume from step {found.step} in "
                                  f"{self.directory}: " + "; ".join(problems) + hint)
        return changed

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

    def peek(self, spec: str | None = None) -> dict | None:
        """On every rank: the metadata of the checkpoint ``spec`` would resume from (None when
        it would start afresh), read by rank 0 without moving anything. Collective."""
        spec = spec or self.config.checkpoint.resume
        if not self.enabled or spec == "never":
            return None

        def look():
            if spec != "auto":
                return checkpoint.read_meta(_named_file(spec))
            found, _, _ = checkpoint.latest_valid(self.directory, self._current_lineage())
            return None if found is None else found.meta

        return on_root(look, self.comm)


def _named_file(spec: str) -> Path:
    """The checkpoint file a resume ``spec`` other than auto/never names; it must exist."""
    path = Path(spec)
    if not path.is_file():
        raise CheckpointError(f"resume {spec!r}: no such checkpoint file (the resume setting, "
                              "--resume or checkpoint.resume, takes auto, never or the path "
                              "of a checkpoint file)")
    return path
