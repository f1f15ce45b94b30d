"""Where a gradient loop is: plain data saved in every checkpoint, identical on every rank."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..files.checkpoint import Checkpoint


@dataclass
class Progress:
    """Step, epoch and batch within it, early-stopping state, and the epoch's loss from reduced
    values (``[sum, rows]``)."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    best: float = math.inf
    bad_evals: int = 0
    epoch_loss: np.ndarray = field(default_factory=lambda: np.zeros(2))
    finished: bool = False
    stopped_early: bool = False

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"progress/epoch_loss": self.epoch_loss.copy(),
                "progress/best": np.array(self.best)}

    def to_meta(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch, "bad_evals": self.bad_evals,
                "finished": self.finished, "stopped_early": self.stopped_early}

    @classmethod
    def restore(cls, found: Checkpoint) -> Progress:
        meta, arrays = found.meta, found.arrays
        return cls(step=found.step, epoch=int(meta["epoch"]), batch=int(meta["batch"]),
                   best=float(arrays["progress/best"]), bad_evals=int(meta["bad_evals"]),
                   epoch_loss=np.array(arrays["progress/epoch_loss"], dtype=np.float64),
                   finished=bool(meta["finished"]), stopped_early=bool(meta["stopped_early"]))
