"""A run's record: one JSON line per record in ``metrics.jsonl``, and a short line on stdout.

Only rank 0 writes. Every rank holds a :class:`RunLog`; only the active one writes, and
:meth:`RunLog.set_root` moves that role (after a shrink the new rank 0 continues the same file).
Each stdout line is one ``write`` so that lines from several launchers do not interleave.
:class:`Startup` times a process's start-up phases for its one ``startup`` record.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


class RunLog:
    """Append records to ``path`` (rank 0: ``active``), echoing them to stdout unless ``quiet``.
    The file is opened at the first record, so creating the log writes nothing."""

    def __init__(self, path: Path, active: bool, quiet: bool = False):
        self.path, self.quiet, self.active = path, quiet, active
        self.start = time.perf_counter()
        self._offset = 0.0  # time_s continues from the file's last record (a resumed run)
        self._file = None

    def set_root(self, active: bool) -> None:
        self.active = self.active or active

    def __call__(self, record: dict) -> None:
        if not self.active:
            return
        if self._file is None:
            self._offset = _last_time(self.path)
            self._file = open(self.path, "a")
        record = {"time_s": round(self._offset + time.perf_counter() - self.start, 4),
                  "wall": round(time.time(), 3), **record}
        self._file.write(json.dumps(record, default=str) + "\n")
        self._file.flush()
        if not self.quiet:
            sys.stdout.write(_format(record) + "\n")
            sys.stdout.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class Startup:
    """Unix times at the ends of one process's start-up phases, from the process's start
    (:func:`process_start`) to its first step: :meth:`mark` each phase as it ends, in order;
    :meth:`record` is the ``startup`` record (each phase's seconds). ``entered``: when the
    command's ``main`` began, the end of the interpreter's own start."""

    def __init__(self, entered: float):
        self.started = process_start()
        self.stamps = {"interpreter": entered}

    def mark(self, phase: str) -> None:
        self.stamps[phase] = time.time()

    def record(self) -> dict:
        """``{"event": "startup", "process_start": Unix time, "phases_s": {phase: seconds},
        "total_s": seconds}``; without a process start (no /proc) the times run from
        ``entered`` and ``interpreter`` is left out."""
        previous = self.started
        phases = {}
        for phase, stamp in self.stamps.items():
            if previous is not None:
                phases[phase] = round(stamp - previous, 4)
            previous = stamp
        first = self.started if self.started is not None else self.stamps["interpreter"]
        return {"event": "startup", "process_start": self.started, "phases_s": phases,
                "total_s": round(previous - first, 4)}


def process_start() -> float | None:
    """When this process began (Unix time), from its start in clock ticks since boot in
    /proc/self/stat (so to 1/100 s); None where there is no /proc."""
    try:
        with open("/proc/self/stat") as stat:
            ticks = int(stat.read().rpartition(")")[2].split()[19])
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    return time.time() - age


def no_log(record: dict) -> None:
    """The log of a run that keeps no record (the estimators)."""


def _format(record: dict) -> str:
    """``key=value`` pairs; "step"/"of" and "epoch"/"epochs" as ``step=40/390``, seconds left as
    ``eta=12s``; the clock split stays in the file only."""
    parts = []
    for key, value in record.items():
        if key in ("of", "epochs"):
            continue
        if key in ("step", "epoch") and ("of" if key == "step" else "epochs") in record:
            parts.append(f"{key}={value}/{record['of' if key == 'step' else 'epochs']}")
        elif key == "eta_s":
            parts.append(f"eta={_duration(value)}")
        elif isinstance(value, dict):
            parts.extend(f"{key}.{k}={_short(v)}" for k, v in value.items())
        elif key not in ("compute_s", "comm_s", "bytes_reduced", "wall", "process_start"):
            parts.append(f"{key}={_short(value)}")
    return "  ".join(parts)


def _last_time(path: Path) -> float:
    """The ``time_s`` of the last record in ``path`` (0 for a new or unreadable log)."""
    try:
        with open(path, "rb") as log:
            log.seek(0, 2)
            log.seek(max(0, log.tell() - 65536))
            lines = log.read().decode(errors="replace").strip().splitlines()
        return float(json.loads(lines[-1])["time_s"]) if lines else 0.0
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _short(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)
