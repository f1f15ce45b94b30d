"""Boosting's validation watch: the validation loss after every round, early stopping
(``train.patience`` rounds without an improvement of ``train.min_delta``) and the best round,
to which ``train.restore_best`` cuts the ensemble back.

The validation rows are binned with the training bin edges and their raw scores grow by each
round's trees, as the training rows' do. The loss is the boosting loss (log-loss, or half the
squared error) summed by the run's reducer: exact block sums in reproducible mode, so every
rank -- on any rank count -- takes the same decision. What a resume needs (best loss, best round,
rounds without improvement) travels in the round's checkpoint state.
"""

from __future__ import annotations

import math

import numpy as np

from ..comm import raise_together
from ..data.shard import Shard
from ..models import trees


class BoostingWatch:
    """Watches ``part`` (validation rows, labels as class indices or values) while boosting."""

    def __init__(self, part: Shard, task: str, n_classes: int, reducer, patience: int | None,
                 min_delta: float):
        self.part, self.task, self.reducer = part, task, reducer
        self.patience, self.min_delta = patience, min_delta
        self.best_loss, self.best_rounds, self.bad_rounds = math.inf, 0, 0
        self.last_loss, self.converged = math.nan, False
        targets, error = None, None
        try:
            targets = trees.check_local_data(part.X, part.y, task, n_classes)
        except ValueError as exc:
            error = ValueError(f"validation rows: {exc}")
        raise_together(error, reducer.comm)
        self.targets = targets
        self.binned = self.raw = None

    def start(self, baseline: np.ndarray, edges, edge_offsets, grown: list,
              saved: dict | None) -> None:
        """Bin the validation rows with the training edges and score them with the trees so
        far; ``saved`` (a resumed state) restores the watch's own counts."""
        self.binned = trees.bin_features(self.part.X, edges, edge_offsets)
        self.raw = np.tile(baseline, (self.part.n_local, 1))
        trees.add_trees(self.raw, grown, self.binned)
        if saved is not None and "best_rounds" in saved:
            self.best_loss = float(saved["best_loss"])
            self.best_rounds = int(saved["best_rounds"])
            self.bad_rounds = int(saved["bad_rounds"])
            self.last_loss = float(saved["validation_loss"])
            self.converged = bool(saved["converged"])

    def loss(self) -> float:
        """The mean validation loss of the trees so far (collective)."""
        raw, targets, task = self.raw, self.targets, self.task
        total = self.reducer.sum_over_rows(
            lambda lo, hi: np.array([trees.loss_sum(raw[lo:hi], targets[lo:hi], task)]),
            self.part.n_local, self.part.n_total)
        return float(total[0]) / self.part.n_total

    def after_round(self, rounds: int, new_trees: list) -> float:
        """Add the round's trees; returns the validation loss and updates the best round and
        whether to stop (:attr:`converged`). Collective."""
        trees.add_trees(self.raw, new_trees, self.binned)
        loss = self.last_loss = self.loss()
        if loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_rounds, self.bad_rounds = loss, rounds, 0
        else:
            self.bad_rounds += 1
        self.converged = bool(self.patience and self.bad_rounds >= self.patience)
        return loss

    def state(self) -> dict:
        """The watch's part of a round's resumable state (beside the model arrays)."""
        return {"validation_loss": self.last_loss, "best_loss": self.best_loss,
                "best_rounds": self.best_rounds, "bad_rounds": self.bad_rounds,
                "converged": self.converged}
