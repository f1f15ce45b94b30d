"""Run configuration: YAML (safe_load) into frozen dataclasses, strictly checked.

Every tuning knob is a field here, never a module global. Unknown keys are rejected with the
nearest valid name; types and ranges are checked with messages that name the key and the value.
``--set section.key=value`` overrides are parsed as YAML scalars and checked the same way.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .collectives import DEFAULT_RING_THRESHOLD


class ConfigError(ValueError):
    """A configuration value or key is not valid; the message names the key and the value."""


def knob(default, doc: str, **kwargs):
    """A config field with its documentation (rendered by :func:`reference_markdown`)."""
    return field(default=default, metadata={"doc": doc}, **kwargs)


@dataclass(frozen=True)
class DataConfig:
    """Where the rows come from. Every rank reads only its own rows of each HDF5 file."""

    train: str = knob("", "HDF5 file to train on (required)")
    x: str = knob("X", "data set (dense 2-D) or group (CSR) of features in `train`")
    y: str = knob("y", "data set of labels or targets in `train`")
    test: str | None = knob(None, "HDF5 file with held-out rows (may be the training file)")
    test_x: str = knob("X_test", "features in `test`")
    test_y: str = knob("y_test", "labels in `test`")
    dtype: str | None = knob(None, "convert features on load: float32 or float64 "
                                   "(null: as stored)")
    standardize: bool = knob(False, "scale features by the global mean and standard deviation "
                                    "(CSR: standard deviation only); saved with the model")


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
    patience: int | None = knob(None, "early stopping: epochs without improvement of the "
                                      "test log-loss/RMSE (or training loss) before stopping")
    min_delta: float = knob(0.0, "early stopping: smallest improvement that counts")
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
    """K-Means (model.kind: kmeans): k-means++ seeding, Lloyd or mini-batch iterations."""

    n_clusters: int = knob(8, "number of clusters")
    max_iter: int = knob(300, "Lloyd iterations (mini-batch: epochs)")
    tol: float = knob(1e-4, "stop when the squared centre shift is below tol x mean variance")
    batch_size: int | None = knob(None, "global mini-batch size (null: full-batch Lloyd)")


@dataclass(frozen=True)
class HGBTConfig:
    """Histogram gradient-boosted trees (model.kind: hgbt_classifier | hgbt_regressor).
    A single decision tree is n_estimators 1 with learning_rate 1."""

    n_estimators: int = knob(100, "boosting rounds")
    learning_rate: float = knob(0.1, "shrinkage of each tree's leaf values")
    max_depth: int = knob(6, "depth of each tree")
    min_samples_leaf: int = knob(20, "fewest rows a leaf may have")
    l2: float = knob(1.0, "L2 regularisation of leaf values")
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
    resume: str = knob("auto", "auto (newest valid checkpoint, else a fresh start), never, "
                               "or the path of a checkpoint file; `--resume` overrides it")


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


LINEAR_KINDS = ("linear", "logistic", "softmax", "svm")
MLP_KINDS = ("mlp_classifier", "mlp_regressor")
HGBT_KINDS = ("hgbt_classifier", "hgbt_regressor")
MODEL_KINDS = LINEAR_KINDS + MLP_KINDS + ("kmeans",) + HGBT_KINDS
OPTIMIZER_NAMES = ("sgd", "momentum", "nesterov", "adam", "adagrad", "gd", "lbfgs")
CHOICES = {
    ("data", "dtype"): (None, "float32", "float64"),
    ("model", "kind"): MODEL_KINDS,
    ("model", "loss"): ("hinge", "squared_hinge"),
    ("model", "activation"): ("relu", "tanh"),
    ("optimizer", "name"): OPTIMIZER_NAMES,
    ("optimizer", "schedule"): ("constant", "step", "cosine", "invscaling"),
    ("comm", "mode"): ("sync", "overlap", "local_sgd"),
    ("comm", "algorithm"): ("native", "ring", "tree", "auto"),
    ("fault", "mode"): ("restart", "shrink"),
}
# (low, high) inclusive unless noted; None = unbounded
RANGES = {
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
    ("kmeans", "max_iter"): (1, None),
    ("kmeans", "tol"): (0.0, None),
    ("kmeans", "batch_size"): (1, None),
    ("hgbt", "n_estimators"): (1, None),
    ("hgbt", "learning_rate"): (0.0, None),
    ("hgbt", "max_depth"): (1, None),
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
STRICTLY_POSITIVE = {("optimizer", "lr")}
_SECTION_CLASSES = {
    "data": DataConfig, "model": ModelConfig, "optimizer": OptimizerConfig,
    "train": TrainConfig, "comm": CommConfig, "kmeans": KMeansConfig, "hgbt": HGBTConfig,
    "checkpoint": CheckpointConfig,
    "fault": FaultConfig, "output": OutputConfig,
}


def _unknown(kind: str, name: str, valid) -> ConfigError:
    close = difflib.get_close_matches(name, list(valid), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown {kind} {name!r}{hint} (valid: {', '.join(valid)})")


def _field_types(cls) -> dict[str, str]:
    return {f.name: str(f.type) for f in fields(cls)}


def _coerce(section: str, key: str, value, type_text: str):
    """Check ``value`` against the field's annotated type; ints are accepted for floats."""
    where = f"{section}.{key}"
    optional = "None" in type_text
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where} may not be null")
    base = type_text.replace(" | None", "")
    if base == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false; got {value!r}")
    elif base == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer; got {value!r}")
    elif base == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number; got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{where} must be finite; got {value!r}")
    elif base == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string; got {value!r}")
    elif base == "tuple[int, ...]":
        if (not isinstance(value, (list, tuple)) or not value
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                           for v in value)):
            raise ConfigError(f"{where} must be a non-empty list of positive integers; "
                              f"got {value!r}")
        value = tuple(value)
    choices = CHOICES.get((section, key))
    if choices is not None and value not in choices:
        shown = ", ".join("null" if c is None else c for c in choices)
        raise ConfigError(f"{where} must be one of {shown}; got {value!r}")
    if (section, key) in STRICTLY_POSITIVE and value <= 0:
        raise ConfigError(f"{where} must be greater than 0; got {value!r}")
    bounds = RANGES.get((section, key))
    if bounds is not None:
        low, high = bounds
        if (low is not None and value < low) or (high is not None and value > high):
            span = f"[{low}, {'inf' if high is None else high}]"
            raise ConfigError(f"{where} must be in {span}; got {value!r}")
    return value


def from_dict(raw: dict | None) -> Config:
    """Build a checked Config from nested dicts (missing keys take their defaults)."""
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"a config must be a mapping of sections; got {type(raw).__name__}")
    sections = {}
    for name, values in raw.items():
        if name not in _SECTION_CLASSES:
            raise _unknown("section", str(name), _SECTION_CLASSES)
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise ConfigError(f"section {name!r} must be a mapping; got {values!r}")
        types = _field_types(_SECTION_CLASSES[name])
        checked = {}
        for key, value in values.items():
            if key not in types:
                raise _unknown(f"key in section {name!r}:", str(key), types)
            checked[key] = _coerce(name, key, value, types[key])
        sections[name] = _SECTION_CLASSES[name](**checked)
    config = Config(**sections)
    _check_consistency(config)
    return config


#: Keys that must not change when a run resumes from a checkpoint: they define the model, the
#: data it sees, or the meaning of the position stored in the checkpoint.
RESUME_LOCKED = (
    "data.train", "data.x", "data.y", "data.dtype", "data.standardize",
    "model.kind", "model.fit_intercept", "model.alpha", "model.l1_ratio", "model.loss",
    "model.hidden", "model.activation", "kmeans.n_clusters", "kmeans.batch_size",
    "hgbt.learning_rate", "hgbt.max_depth", "hgbt.min_samples_leaf", "hgbt.l2", "hgbt.max_bins",
    "optimizer.name", "train.batch_size", "train.seed", "comm.mode", "comm.local_steps",
    "train.reproducible", "train.block_rows",
)


def resume_conflicts(saved: dict, current: Config) -> list[str]:
    """``section.key: saved -> current`` for every RESUME_LOCKED key that differs."""
    now = current.to_dict()
    conflicts = []
    for dotted in RESUME_LOCKED:
        section, key = dotted.split(".")
        before, after = saved.get(section, {}).get(key), now[section][key]
        if before != after:
            conflicts.append(f"{dotted}: {before!r} -> {after!r}")
    return conflicts


def block_rows(config: Config) -> int:
    """Rows per block in reproducible mode (1 otherwise: no alignment)."""
    if not config.train.reproducible:
        return 1
    if config.train.block_rows:
        return config.train.block_rows
    return 1024 if config.train.batch_size is None else math.gcd(32, config.train.batch_size)


def _check_consistency(config: Config) -> None:
    if config.optimizer.name == "lbfgs":
        if config.model.l1_ratio > 0 and config.model.alpha > 0:
            raise ConfigError("optimizer.name lbfgs handles only smooth penalties: set "
                              "model.l1_ratio to 0 or use sgd/gd (proximal L1)")
        if config.comm.mode != "sync":
            raise ConfigError(f"optimizer.name lbfgs needs comm.mode sync; got "
                              f"{config.comm.mode!r}")
    if config.model.kind in ("kmeans",) + HGBT_KINDS and config.comm.mode != "sync":
        raise ConfigError(f"model.kind {config.model.kind} has its own loop: comm.mode must be "
                          f"sync; got {config.comm.mode!r}")
    if config.fault.mode == "shrink":
        if config.comm.mode != "sync" or config.optimizer.name == "lbfgs":
            raise ConfigError("fault.mode shrink supports comm.mode sync with a first-order "
                              f"optimizer; got comm.mode {config.comm.mode!r}, optimizer.name "
                              f"{config.optimizer.name!r}")
        if config.model.kind not in LINEAR_KINDS + MLP_KINDS:
            raise ConfigError(f"fault.mode shrink supports the gradient-trained models; got "
                              f"model.kind {config.model.kind!r}")
    if config.train.reproducible:
        if config.comm.mode != "sync":
            raise ConfigError(f"train.reproducible needs comm.mode sync; got "
                              f"{config.comm.mode!r}")
        block = config.train.block_rows
        if config.model.kind == "kmeans" and config.kmeans.batch_size is not None:
            raise ConfigError("train.reproducible supports K-Means with Lloyd iterations only: "
                              "set kmeans.batch_size to null")
        mini_batches = config.train.batch_size and config.optimizer.name != "lbfgs"
        if block and mini_batches and config.train.batch_size % block:
            raise ConfigError(f"train.reproducible: train.batch_size ({config.train.batch_size})"
                              f" must be a multiple of train.block_rows ({block})")
    if config.optimizer.schedule == "step" and config.optimizer.step_size is None:
        raise ConfigError("optimizer.schedule step needs optimizer.step_size")


def parse_override(text: str) -> tuple[str, str, Any]:
    """``"optimizer.lr=0.1"`` -> ("optimizer", "lr", 0.1); the value is a YAML scalar."""
    if "=" not in text:
        raise ConfigError(f"--set expects section.key=value; got {text!r}")
    path, value_text = text.split("=", 1)
    if path.count(".") != 1:
        raise ConfigError(f"--set expects section.key=value; got {text!r}")
    section, key = path.split(".")
    try:
        value = yaml.safe_load(value_text) if value_text.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {path}: cannot parse value {value_text!r}: {exc}") from None
    return section, key, value


def load(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read a YAML config file (or start from defaults) and apply ``--set`` overrides."""
    raw: dict = {}
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections")
    for text in overrides:
        section, key, value = parse_override(text)
        section_values = raw.setdefault(section, {})
        if not isinstance(section_values, dict):
            raise ConfigError(f"section {section!r} must be a mapping")
        section_values[key] = value
    try:
        return from_dict(raw)
    except ConfigError as exc:
        where = f" in {path}" if path is not None else ""
        raise ConfigError(f"{exc}{where}") from None


_TYPE_WORDS = {"str": "string", "int": "integer", "float": "number", "bool": "true or false",
               "tuple[int, ...]": "list of integers"}


def reference_markdown() -> str:
    """The configuration reference (docs/configuration.md), generated from the dataclasses."""
    lines = ["# Configuration reference", "",
             "Generated from `mpiml/config.py` by `python -m mpiml.config`; a test fails when",
             "this file is out of date. Unknown keys are rejected with the nearest valid name.",
             "Override any value on the command line with `--set section.key=value`.", ""]
    for section, cls in _SECTION_CLASSES.items():
        lines += [f"## `{section}`", "", cls.__doc__.strip(), "",
                  "| key | default | allowed | meaning |", "|---|---|---|---|"]
        for f in fields(cls):
            allowed = CHOICES.get((section, f.name))
            bounds = RANGES.get((section, f.name))
            if allowed:
                text = ", ".join("null" if c is None else c for c in allowed)
            elif bounds:
                low = "(0" if (section, f.name) in STRICTLY_POSITIVE else f"[{bounds[0]}"
                text = f"{low}, {'inf' if bounds[1] is None else bounds[1]}]"
            else:
                text = _TYPE_WORDS[str(f.type).replace(" | None", "")]
                text += " or null" if "None" in str(f.type) else ""
            default = yaml.safe_dump(f.default, default_flow_style=True).strip()
            default = default.removesuffix("\n...").removesuffix("...").strip()
            lines.append(f"| `{f.name}` | `{default}` | {text} | {f.metadata['doc']} |")
        lines.append("")
    return "\n".join(lines)


def dump(config: Config) -> str:
    """The resolved config as YAML (what --print-config shows and the run directory keeps)."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


if __name__ == "__main__":
    import sys

    sys.stdout.write(reference_markdown())
