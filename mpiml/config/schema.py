"""The configuration schema: one frozen dataclass per YAML section, the allowed values and
ranges of every field, and the keys a resumed run may not change.

Every tuning knob is a field here, never a module global; :mod:`.parse` reads and checks them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from ..comm.collectives import ALGORITHMS, DEFAULT_RING_THRESHOLD
from ..models.kinds import KINDS


def knob(default, doc: str, **kwargs):
    """A config field with its documentation (rendered by :func:`reference_markdown`)."""
    return field(default=default, metadata={"doc": doc}, **kwargs)


@dataclass(frozen=True)
class DataConfig:
    """Where the rows come from. Every rank reads only its own rows of each HDF5 file."""

    train: str = knob("", "HDF5 file to train on (required)")
    x: str = knob("X", "data set (dense 2-D) or group (CSR) of features in `train`")
    y: str = knob("y", "data set of labels or targets in `train`")
    weight: str | None = knob(None, "data set of per-row sample weights in `train` (finite, "
                                    ">= 0, not all 0): the loss becomes sum w_i l_i / sum w_i; "
                                    "null: every row weighs 1")
    test: str | None = knob(None, "HDF5 file with held-out rows (may be the training file)")
    test_x: str = knob("X_test", "features in `test`")
    test_y: str = knob("y_test", "labels in `test`")
    validation: str | None = knob(None, "HDF5 file with validation rows, which early "
                                        "stopping and train.restore_best watch (may be the "
                                        "training file; not with validation_fraction)")
    validation_x: str = knob("X_val", "features in `validation`")
    validation_y: str = knob("y_val", "labels in `validation`")
    validation_fraction: float = knob(0.0, "hold out this share of the training rows as the "
                                           "validation set: chosen by global row (whole blocks "
                                           "in reproducible mode) from train.seed, the same "
                                           "rows on any number of ranks; 0: none")
    dtype: str | None = knob(None, "convert features on load: float32 or float64 "
                                   "(null: as stored)")
    standardize: bool = knob(False, "scale features by the global mean and standard deviation "
                                    "(CSR: standard deviation only); saved with the model")
    memory_budget: int | None = knob(None, "bytes of training features per rank (an integer, "
                                           "e.g. 1073741824 for 1 GiB): when the largest "
                                           "rank's rows of dense X exceed it, every model "
                                           "streams them from the file in chunks instead of "
                                           "loading them (see docs/data.md); null: load them")


@dataclass(frozen=True)
class ModelConfig:
    """The model and its penalty: J = mean loss + alpha (l1_ratio |w|_1 + (1-l1_ratio)/2 |w|^2)."""

    kind: str = knob("logistic", "linear (squared loss), logistic (binary), softmax "
                                 "(multiclass), svm (binary, linear), mlp_classifier, "
                                 "mlp_regressor, kmeans (see `kmeans`), hgbt_classifier or "
                                 "hgbt_regressor (see `hgbt`)")
    fit_intercept: bool = knob(True, "learn an intercept (never penalised)")
    alpha: float = knob(0.0, "penalty strength")
    l1_ratio: float = knob(0.0, "share of L1 in the penalty (L1 by proximal steps; not with "
                                "lbfgs)")
    loss: str = knob("hinge", "svm only: hinge or squared_hinge")
    hidden: tuple[int, ...] = knob((64,), "mlp: widths of the hidden layers, e.g. [128, 64]")
    activation: str = knob("relu", "mlp: relu (He init) or tanh (Glorot init)")
    init_from: str | None = knob(None, "a saved model.h5 to continue training from")
    class_weight: str | dict | None = knob(None, "classifiers: multiply each row's weight by "
                                                 "its class's: balanced (total weight / "
                                                 "(classes x the class's total weight), from "
                                                 "all ranks' rows) or a mapping {label: "
                                                 "weight} (other classes weigh 1); null: none")


@dataclass(frozen=True)
class OptimizerConfig:
    """How parameters move: first-order optimizers with a learning-rate schedule, or L-BFGS."""

    name: str = knob("sgd", "sgd, momentum, nesterov, adam, adagrad, gd (full-batch steps) or "
                            "lbfgs (full batch, scipy's L-BFGS-B)")
    lr: float = knob(0.1, "base learning rate")
    momentum: float = knob(0.9, "momentum and nesterov: momentum coefficient")
    beta1: float = knob(0.9, "adam: first-moment decay")
    beta2: float = knob(0.999, "adam: second-moment decay")
    schedule: str = knob("constant", "constant, step, cosine or invscaling")
    warmup_steps: int = knob(0, "linear warm-up steps before the schedule starts")
    step_size: int | None = knob(None, "step schedule: steps between decays")
    gamma: float = knob(0.1, "step schedule: decay factor")
    power: float = knob(0.5, "invscaling: lr / (t + 1) ** power")
    min_lr: float = knob(0.0, "cosine: final learning rate")
    tol: float = knob(1e-10, "lbfgs: stop when the relative objective change or the "
                             "gradient falls below this")
    history: int = knob(10, "lbfgs: correction pairs kept")


@dataclass(frozen=True)
class TrainConfig:
    """How long, in which order, and when to evaluate or stop."""

    epochs: int = knob(10, "passes over the training rows")
    max_steps: int | None = knob(None, "stop after this many steps (lbfgs: iterations, "
                                       "default 500)")
    batch_size: int | None = knob(256, "GLOBAL mini-batch size: the same batches on any "
                                       "number of ranks; null = full batch")
    seed: int = knob(0, "seed of the global batch order and of the initial parameters")
    log_every: int = knob(50, "steps between loss lines in metrics.jsonl")
    eval_every: int | None = knob(None, "steps between test-set evaluations (each epoch's end "
                                        "is always evaluated)")
    patience: int | None = knob(None, "early stopping: epochs (boosting: rounds) without "
                                      "improvement of the validation log-loss/RMSE (without a "
                                      "validation set: the training loss) before stopping; "
                                      "never the test set")
    min_delta: float = knob(0.0, "early stopping: smallest improvement that counts")
    restore_best: bool = knob(True, "with a validation set: end with the parameters (trees)"
                                    " of the best validation score, not the last")
    reproducible: bool = knob(False, "bit-identical results on any number of ranks (exact "
                                     "block sums; sync mode; see docs/reproducibility.md)")
    block_rows: int | None = knob(None, "reproducible mode: rows per block, the unit of the "
                                        "row split and of mini-batches (null: 32 for "
                                        "mini-batches, 1024 for full batches)")


@dataclass(frozen=True)
class CommConfig:
    """How ranks combine their work."""

    mode: str = knob("sync", "sync (one fused allreduce per step), overlap (the allreduce of "
                             "step t runs during step t+1; one-step-stale updates) or "
                             "local_sgd (average replicas every local_steps)")
    algorithm: str = knob("auto", "allreduce algorithm: native, ring, tree or auto")
    ring_threshold: int = knob(DEFAULT_RING_THRESHOLD, "auto: message size in bytes from "
                                                       "which the ring is used")
    local_steps: int = knob(8, "local_sgd: local steps between parameter averages")


@dataclass(frozen=True)
class KMeansConfig:
    """K-Means (model.kind: kmeans): k-means++ or random seeding, or centres from a file; Lloyd
    or mini-batch iterations; the best of n_init fits."""

    n_clusters: int = knob(8, "number of clusters")
    init: str = knob("k-means++", "initial centres: k-means++ or random (n_clusters distinct "
                                  "rows drawn uniformly); the same centres on any number of "
                                  "ranks. Not used with init_file")
    init_file: str | None = knob(None, "HDF5 file with the initial centres: data set `centers` "
                                       "of shape n_clusters x n_features, or `file.h5:name` "
                                       "for another data set (e.g. a K-Means model.h5:"
                                       "model/centers)")
    n_init: int = knob(1, "fits run, fit i seeded with train.seed + i; the one with the lowest "
                          "inertia is kept. With init_file one fit is run (more warns)")
    max_iter: int = knob(300, "Lloyd iterations (mini-batch: epochs)")
    tol: float = knob(1e-4, "stop when the squared centre shift is below tol x mean variance")
    batch_size: int | None = knob(None, "global mini-batch size (null: full-batch Lloyd)")


@dataclass(frozen=True)
class HGBTConfig:
    """Histogram gradient-boosted trees (model.kind: hgbt_classifier | hgbt_regressor).
    The defaults are scikit-learn's HistGradientBoosting defaults. A single decision tree is
    n_estimators 1 with learning_rate 1."""

    n_estimators: int = knob(100, "boosting rounds")
    learning_rate: float = knob(0.1, "shrinkage of each tree's leaf values")
    max_leaf_nodes: int | None = knob(31, "grow each tree best-first (the leaf of largest gain "
                                          "splits next) to at most this many leaves; null: "
                                          "depth-wise, every leaf of a level splits")
    max_depth: int | None = knob(None, "deepest level a leaf may have, the root being 0 "
                                       "(null: no limit; without max_leaf_nodes either, "
                                       "trees grow until min_samples_leaf stops them)")
    min_samples_leaf: int = knob(20, "fewest rows a leaf may have")
    l2: float = knob(0.0, "L2 regularisation of leaf values")
    max_bins: int = knob(255, "histogram bins per feature (at most 255)")


@dataclass(frozen=True)
class CheckpointConfig:
    """When rank 0 writes a checkpoint (atomically) and what a restarted job resumes from."""

    enabled: bool = knob(True, "write and resume checkpoints at all (false: no files are "
                               "read, written or moved)")
    dir: str | None = knob(None, "checkpoint directory (null: `<output.dir>/checkpoints`); "
                                 "on a cluster it must be on a shared filesystem")
    every_steps: int | None = knob(None, "write every this many steps (null: off)")
    every_seconds: float | None = knob(300.0, "write when this much time passed since the last "
                                              "one (agreed by all ranks; null: off)")
    keep: int = knob(3, "checkpoints kept (the newest)")
    at_end: bool = knob(True, "write one when training ends")
    resume: str = knob("auto", "auto (the newest valid checkpoint of this run, else a fresh "
                               "start), never (a fresh start: earlier checkpoints are set "
                               "aside), or the path of a checkpoint file (a branch: newer "
                               "checkpoints are set aside); `--resume` overrides it")
    allow_data_change: bool = knob(False, "resume even though the training data differ from "
                                          "the checkpoint's (rows, features or sampled content;"
                                          " see docs/fault-tolerance.md); the position within "
                                          "the epoch restarts")


@dataclass(frozen=True)
class FaultConfig:
    """What happens when something fails: guards that turn hangs and silent corruption into
    clear errors, and what a rank's death does to the job."""

    mode: str = knob("restart", "restart (a dead rank ends the job; resume it from the newest "
                                "checkpoint) or shrink (survivors carry on without it: needs "
                                "Open MPI started with `mpirun --with-ft ulfm`; falls back to "
                                "restart elsewhere)")
    min_ranks: int = knob(1, "shrink: fewest survivors that carry on; below it they write a "
                             "checkpoint and exit 75")

    stall_seconds: float | None = knob(600.0, "abort the job if a step makes no progress for "
                                              "this long (a stalled or stopped rank); null: off")
    check_every: int | None = knob(1000, "steps between replica consistency checks (hash of "
                                         "the parameters compared across ranks); null: off")
    stop_grace_seconds: float = knob(120.0, "after SIGTERM/SIGUSR1, exit hard if the job "
                                            "has not stopped cleanly within this time")


@dataclass(frozen=True)
class OutputConfig:
    """Where rank 0 writes config.yaml, metrics.jsonl and model.h5."""

    dir: str = knob("runs/default", "output directory (created if missing)")


@dataclass(frozen=True)
class Config:
    """A run's whole configuration (one frozen dataclass per YAML section)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    comm: CommConfig = field(default_factory=CommConfig)
    kmeans: KMeansConfig = field(default_factory=KMeansConfig)
    hgbt: HGBTConfig = field(default_factory=HGBTConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    fault: FaultConfig = field(default_factory=FaultConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dicts, tuples as lists (so YAML and JSON round trips compare equal)."""
        return {section: {key: list(value) if isinstance(value, tuple) else value
                          for key, value in values.items()}
                for section, values in dataclasses.asdict(self).items()}

    def digest(self) -> str:
        """SHA-256 of the resolved config (stable key order), for checkpoints and run records."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def block_rows(self) -> int:
        """Reproducible mode's block of global rows, the unit of the row split, of mini-batches
        and of exact sums; 1 when the mode is off. (``train.block_rows`` is resolved when the
        config is read: see :func:`mpiml.config.parse.from_dict`.)"""
        return self.train.block_rows if self.train.reproducible else 1


OPTIMIZER_NAMES = ("sgd", "momentum", "nesterov", "adam", "adagrad", "gd", "lbfgs")
CHOICES = {
    ("data", "dtype"): (None, "float32", "float64"),
    ("model", "kind"): tuple(KINDS),
    ("model", "loss"): ("hinge", "squared_hinge"),
    ("model", "activation"): ("relu", "tanh"),
    ("optimizer", "name"): OPTIMIZER_NAMES,
    ("optimizer", "schedule"): ("constant", "step", "cosine", "invscaling"),
    ("comm", "mode"): ("sync", "overlap", "local_sgd"),
    ("comm", "algorithm"): ALGORITHMS,
    ("kmeans", "init"): ("k-means++", "random"),
    ("fault", "mode"): ("restart", "shrink"),
}
# (low, high) inclusive unless noted; None = unbounded
RANGES = {
    ("data", "validation_fraction"): (0.0, 0.9),
    ("data", "memory_budget"): (1, None),
    ("model", "alpha"): (0.0, None),
    ("model", "l1_ratio"): (0.0, 1.0),
    ("optimizer", "lr"): (0.0, None),
    ("optimizer", "momentum"): (0.0, 1.0),
    ("optimizer", "beta1"): (0.0, 1.0),
    ("optimizer", "beta2"): (0.0, 1.0),
    ("optimizer", "warmup_steps"): (0, None),
    ("optimizer", "step_size"): (1, None),
    ("optimizer", "gamma"): (0.0, None),
    ("optimizer", "power"): (0.0, None),
    ("optimizer", "min_lr"): (0.0, None),
    ("optimizer", "tol"): (0.0, None),
    ("optimizer", "history"): (1, None),
    ("train", "epochs"): (1, None),
    ("train", "max_steps"): (1, None),
    ("train", "batch_size"): (1, None),
    ("train", "seed"): (0, None),
    ("train", "log_every"): (1, None),
    ("train", "eval_every"): (1, None),
    ("train", "patience"): (1, None),
    ("train", "min_delta"): (0.0, None),
    ("train", "block_rows"): (1, None),
    ("comm", "ring_threshold"): (0, None),
    ("comm", "local_steps"): (1, None),
    ("kmeans", "n_clusters"): (1, None),
    ("kmeans", "n_init"): (1, None),
    ("kmeans", "max_iter"): (1, None),
    ("kmeans", "tol"): (0.0, None),
    ("kmeans", "batch_size"): (1, None),
    ("hgbt", "n_estimators"): (1, None),
    ("hgbt", "learning_rate"): (0.0, None),
    ("hgbt", "max_depth"): (1, None),
    ("hgbt", "max_leaf_nodes"): (2, None),
    ("hgbt", "min_samples_leaf"): (1, None),
    ("hgbt", "l2"): (0.0, None),
    ("hgbt", "max_bins"): (2, 255),
    ("checkpoint", "every_steps"): (1, None),
    ("checkpoint", "every_seconds"): (0.0, None),
    ("checkpoint", "keep"): (1, None),
    ("fault", "stall_seconds"): (0.0, None),
    ("fault", "min_ranks"): (1, None),
    ("fault", "check_every"): (1, None),
    ("fault", "stop_grace_seconds"): (0.0, None),
}
STRICTLY_POSITIVE = {("optimizer", "lr"), ("fault", "stall_seconds"),
                     ("fault", "stop_grace_seconds")}
SECTIONS = {
    "data": DataConfig, "model": ModelConfig, "optimizer": OptimizerConfig,
    "train": TrainConfig, "comm": CommConfig, "kmeans": KMeansConfig, "hgbt": HGBTConfig,
    "checkpoint": CheckpointConfig, "fault": FaultConfig, "output": OutputConfig,
}



#: Keys that must not change when a run resumes from a checkpoint: they define the model, the
#: data it sees, or the meaning of the position stored in the checkpoint.
RESUME_LOCKED = (
    "data.train", "data.x", "data.y", "data.weight", "data.dtype", "data.standardize",
    "data.validation_fraction",
    "model.kind", "model.fit_intercept", "model.alpha", "model.l1_ratio", "model.loss",
    "model.hidden", "model.activation", "model.class_weight", "kmeans.n_clusters",
    "kmeans.batch_size",
    "kmeans.init", "kmeans.init_file", "kmeans.n_init",
    "hgbt.learning_rate", "hgbt.max_depth", "hgbt.max_leaf_nodes", "hgbt.min_samples_leaf",
    "hgbt.l2", "hgbt.max_bins",
    "optimizer.name", "train.batch_size", "train.seed", "comm.mode", "comm.local_steps",
    "train.reproducible", "train.block_rows",
)
