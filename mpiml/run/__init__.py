"""One run's lifecycle around the fit loops: the run context built once per fit
(:mod:`.context`), the checkpoint policy (:mod:`.checkpoints`), the record (:mod:`.log`), stop
signals (:mod:`.signals`), the stall watchdog (:mod:`.watchdog`), fault injection
(:mod:`.faults`), surviving a rank's death (:mod:`.shrink`), launch checks
(:mod:`.launchcheck`) and exit codes (:mod:`.exits`)."""

from .context import RunContext, open_run
from .exits import EXIT_STOPPED, StoppedAfterCheckpoint

__all__ = ["EXIT_STOPPED", "RunContext", "StoppedAfterCheckpoint", "open_run"]
