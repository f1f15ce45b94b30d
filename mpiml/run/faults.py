"""Fault injection, so users can test their job scripts' recovery the way the test suite does.

    MPIML_FAULT="rank=1,step=37,at=before_allreduce,action=kill"

``at``: ``start`` (as the job starts, before the config is read; step 0), ``load`` (before the
data are read; step 0), ``before_allreduce`` (in step ``step``, before its allreduce; K-Means
and boosted trees: after iteration or round ``step``, before the allreduce that follows it),
``during_checkpoint`` (half-way through writing the checkpoint of step ``step``; rank 0 writes,
so use rank=0), ``after_checkpoint``, ``final_save`` (before the model file is written;
``step`` = the steps done) or ``finish`` (the CLI: after the last record is logged, before the
last barrier). ``action``: ``kill`` (SIGKILL itself), ``raise`` (an exception), ``hang`` (stop
making progress, for the stall watchdog), ``stop`` (SIGSTOP itself: frozen, watchdog and all),
``nan`` (poison this rank's gradient,
for the non-finite guard) or ``diverge`` (perturb this rank's replica, for the replica check).
``rank`` defaults to 0 and is the process's rank when the job started (ranks renumber after a
shrink). A fault fires at most once per process. Several faults: separate them with ``;``.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

ENV_VAR = "MPIML_FAULT"
POINTS = ("start", "load", "before_allreduce", "during_checkpoint", "after_checkpoint",
          "final_save", "finish")
ACTIONS = ("kill", "raise", "hang", "stop", "nan", "diverge")


class InjectedFault(RuntimeError):
    """The exception raised by ``action=raise``."""


@dataclass
class Fault:
    step: int
    at: str
    action: str
    rank: int = 0
    fired: bool = False

    def due(self, at: str, step: int, rank: int) -> bool:
        return not self.fired and at == self.at and step == self.step and rank == self.rank

    def fire(self) -> str:
        """Carry out the action; "nan" and "diverge" are returned for the caller to apply."""
        self.fired = True
        if self.action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.action == "raise":
            raise InjectedFault(f"injected fault at {self.at} of step {self.step} on rank "
                                f"{self.rank} ({ENV_VAR})")
        if self.action == "stop":
            os.kill(os.getpid(), signal.SIGSTOP)
        if self.action == "hang":
            while True:
                time.sleep(3600)
        return self.action


class FaultPlan:
    """Every fault of ``$MPIML_FAULT``; ``due`` finds one that matches, ``fire`` carries it out."""

    def __init__(self, faults: list[Fault]):
        self.faults = faults
        self._matched: Fault | None = None

    def due(self, at: str, step: int, rank: int) -> bool:
        self._matched = next((f for f in self.faults if f.due(at, step, rank)), None)
        return self._matched is not None

    def fire(self) -> str:
        return self._matched.fire()


def from_env(environ=None) -> FaultPlan | None:
    """The faults described by ``$MPIML_FAULT``, or None; a malformed value raises ValueError."""
    text = (os.environ if environ is None else environ).get(ENV_VAR, "").strip()
    if not text:
        return None
    return FaultPlan([_parse(part.strip()) for part in text.split(";") if part.strip()])


def _parse(text: str) -> Fault:
    fields = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in ("rank", "step", "at", "action"):
            raise ValueError(f"{ENV_VAR}: cannot parse {part!r} in {text!r}; expected "
                             "rank=R,step=S,at=POINT,action=ACTION")
        fields[key.strip()] = value.strip()
    missing = {"step", "at", "action"} - set(fields)
    if missing:
        raise ValueError(f"{ENV_VAR}={text!r} lacks {', '.join(sorted(missing))}")
    if fields["at"] not in POINTS:
        raise ValueError(f"{ENV_VAR}: at={fields['at']!r}; valid: {', '.join(POINTS)}")
    if fields["action"] not in ACTIONS:
        raise ValueError(f"{ENV_VAR}: action={fields['action']!r}; valid: {', '.join(ACTIONS)}")
    try:
        return Fault(step=int(fields["step"]), at=fields["at"], action=fields["action"],
                     rank=int(fields.get("rank", 0)))
    except ValueError:
        raise ValueError(f"{ENV_VAR}: rank and step must be integers in {text!r}") from None
