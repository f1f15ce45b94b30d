"""Reading a configuration: YAML (safe_load) and ``--set`` overrides into a checked
:class:`~mpiml.config.schema.Config`.

Unknown keys are rejected with the nearest valid name; types and ranges are checked with
messages that name the key, the value and where it came from (the file and line, or the ``--set``
argument). ``--set section.key=value`` overrides are parsed as YAML scalars and checked the same
way. Numbers are read as users write them: YAML 1.1 (PyYAML) reads ``1e-3`` as a string, this
reader as a number (as YAML 1.2 does); an integer setting takes an integral number (``1e6``).
Derived values (reproducible mode's ``train.block_rows``) are resolved here, once.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from ..models.kinds import KINDS
from .schema import CHOICES, RANGES, RESUME_LOCKED, SECTIONS, STRICTLY_POSITIVE, Config


class ConfigError(ValueError):
    """A configuration value or key is not valid; the message names the key and the value."""

    user_error = True  # printed as one line: the message says what to change


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading exponents without a dot (``1e-3``, ``1E6``) as numbers."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def read_yaml(text: str):
    """``text`` as YAML, with numbers read as users write them (see the module docstring)."""
    return yaml.load(text, Loader=_Loader)


def _value_lines(text: str) -> dict[tuple[str, str], int]:
    """(section, key) -> the 1-based line of its value in the YAML ``text``; (section, "") ->
    the line of the section's name."""
    lines = {}
    root = yaml.compose(text, Loader=_Loader)
    if not isinstance(root, yaml.MappingNode):
        return lines
    for section_node, values in root.value:
        lines[(str(section_node.value), "")] = section_node.start_mark.line + 1
        if isinstance(values, yaml.MappingNode):
            for key_node, value_node in values.value:
                lines[(str(section_node.value), str(key_node.value))] = (
                    value_node.start_mark.line + 1)
    return lines


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
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # 1e6 epochs
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
    elif base == "str | dict":
        value = _class_weights(where, value)
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


def from_dict(raw: dict | None, sources: dict[tuple[str, str], str] | None = None) -> Config:
    """Build a checked Config from nested dicts (missing keys take their defaults).

    ``sources``: (section, key) -> where the value was written ("c.yaml, line 4", "--set
    optimizer.lr=x"), named in the message when that value is rejected."""
    raw = {} if raw is None else raw
    sources = sources or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"a config must be a mapping of sections; got {type(raw).__name__}")
    sections = {}
    for name, values in raw.items():
        where = sources.get((name, ""))
        if name not in SECTIONS:
            error = _unknown("section", str(name), SECTIONS)
            raise error if where is None else _located(f"{error} ({where})")
        if values is None:
            values = {}
        if not isinstance(values, dict):
            message = f"section {name!r} must be a mapping; got {values!r}"
            raise ConfigError(message) if where is None else _located(f"{message} ({where})")
        types = _field_types(SECTIONS[name])
        checked = {}
        for key, value in values.items():
            try:
                if key not in types:
                    raise _unknown(f"key in section {name!r}:", str(key), types)
                checked[key] = _coerce(name, key, value, types[key])
            except ConfigError as exc:
                source = sources.get((name, key))
                if source is None:
                    raise
                raise _located(f"{exc} ({source})") from None
        sections[name] = SECTIONS[name](**checked)
    config = Config(**sections)
    _check_consistency(config)
    return _resolve(config)


def _located(message: str) -> ConfigError:
    """A ConfigError whose message already says where the value came from."""
    error = ConfigError(message)
    error.located = True
    return error


#: The value a key had, in effect, in runs saved before it existed, where that is not its
#: default: trees grew depth-wise before ``hgbt.max_leaf_nodes``.
BEFORE_THE_KEY = {"hgbt.max_leaf_nodes": None}


def resume_conflicts(saved: dict, current: Config) -> list[str]:
    """``section.key: saved -> current`` for every RESUME_LOCKED key that differs. A key the
    saved config lacks (a run saved before the key existed) counts as what such runs did: its
    default, or its entry in :data:`BEFORE_THE_KEY`."""
    now, defaults = current.to_dict(), Config().to_dict()
    conflicts = []
    for dotted in RESUME_LOCKED:
        section, key = dotted.split(".")
        missing = BEFORE_THE_KEY.get(dotted, defaults[section][key])
        before, after = saved.get(section, {}).get(key, missing), now[section][key]
        if before != after:
            conflicts.append(f"{dotted}: {before!r} -> {after!r}")
    return conflicts


def _resolve(config: Config) -> Config:
    """Fill in derived values: reproducible mode's ``train.block_rows`` (null means 32 rows for
    mini-batches, or their gcd with 32; 1024 for full batches)."""
    train = config.train
    if train.reproducible and train.block_rows is None:
        rows = 1024 if train.batch_size is None else math.gcd(32, train.batch_size)
        config = dataclasses.replace(config, train=dataclasses.replace(train, block_rows=rows))
    return config


def _class_weights(where: str, value):
    """``balanced``, or a mapping of numeric labels to finite weights >= 0 (a new dict)."""
    if value == "balanced":
        return value
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"{where} must be balanced or a mapping {{label: weight}}; got "
                          f"{value!r}")
    weights = {}
    for label, weight in value.items():
        if isinstance(label, bool) or not isinstance(label, (int, float)):
            raise ConfigError(f"{where}: label {label!r} must be a number (the labels of the "
                              "training file)")
        if (isinstance(weight, bool) or not isinstance(weight, (int, float))
                or not math.isfinite(weight) or weight < 0):
            raise ConfigError(f"{where}: the weight of label {label} must be a finite number "
                              f">= 0; got {weight!r}")
        weights[label] = float(weight)
    return weights


def _check_consistency(config: Config) -> None:
    task = KINDS[config.model.kind].task
    if config.model.class_weight is not None and task not in ("binary", "multiclass"):
        raise ConfigError(f"model.class_weight weighs the classes of a classifier; model.kind "
                          f"{config.model.kind} is {task}: set model.class_weight to null "
                          "(data.weight weighs rows)")
    if config.optimizer.name == "lbfgs":
        if config.model.l1_ratio > 0 and config.model.alpha > 0:
            raise ConfigError("optimizer.name lbfgs handles only smooth penalties: set "
                              "model.l1_ratio to 0 or use sgd/gd (proximal L1)")
        if config.comm.mode != "sync":
            raise ConfigError(f"optimizer.name lbfgs needs comm.mode sync; got "
                              f"{config.comm.mode!r}")
    family = KINDS[config.model.kind].family
    if family in ("kmeans", "hgbt") and config.comm.mode != "sync":
        raise ConfigError(f"model.kind {config.model.kind} has its own loop: comm.mode must be "
                          f"sync; got {config.comm.mode!r}")
    if config.fault.mode == "shrink" and config.comm.mode != "sync":
        raise ConfigError("fault.mode shrink supports comm.mode sync (every model family, "
                          f"L-BFGS included); got comm.mode {config.comm.mode!r}: use sync or "
                          "fault.mode restart")
    if config.train.block_rows is not None and not config.train.reproducible:
        raise ConfigError("train.block_rows is the block of reproducible mode: set "
                          "train.reproducible to true, or train.block_rows to null")
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
    validation = bool(config.data.validation or config.data.validation_fraction)
    if config.data.validation and config.data.validation_fraction:
        raise ConfigError("data.validation and data.validation_fraction both give a validation "
                          "set: set one of them (the other to null / 0)")
    family = KINDS[config.model.kind].family
    if validation and family == "kmeans":
        raise ConfigError("model.kind kmeans uses no validation set: remove data.validation / "
                          "data.validation_fraction")
    if family == "hgbt" and config.train.patience and not validation:
        raise ConfigError("boosting's early stopping (train.patience) watches a validation set:"
                          " set data.validation or data.validation_fraction")
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
        value = read_yaml(value_text) if value_text.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {path}: cannot parse value {value_text!r}: "
                          f"{str(exc).splitlines()[0]}") from None
    return section, key, value


def load(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read a YAML config file (or start from defaults) and apply ``--set`` overrides."""
    raw: dict = {}
    sources: dict[tuple[str, str], str] = {}
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        try:
            raw = read_yaml(text) or {}
            lines = _value_lines(text)
        except yaml.YAMLError as exc:
            where = getattr(exc, "problem_mark", None)
            line = f", line {where.line + 1}" if where is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"config file {path}{line} is not valid YAML: {problem}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections; got "
                              f"{type(raw).__name__}")
        sources = {item: f"{path}, line {line}" for item, line in lines.items()}
    for text in overrides:
        section, key, value = parse_override(text)
        sources[(section, key)] = f"--set {text}"
        section_values = raw.setdefault(section, {})
        if not isinstance(section_values, dict):
            raise ConfigError(f"section {section!r} must be a mapping")
        section_values[key] = value
    try:
        return from_dict(raw, sources)
    except ConfigError as exc:
        if getattr(exc, "located", False) or path is None:
            raise
        raise ConfigError(f"{exc} in {path}") from None


def data_recipe(path) -> str | None:
    """The command a config file's ``# Data:`` comment gives for making its data (continued
    lines joined), or None. Every shipped config has one."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return None
    for index, line in enumerate(lines):
        if line.startswith("# Data:"):
            parts = [line[len("# Data:"):].strip()]
            while parts[-1].endswith("\\") and index + 1 < len(lines):
                index += 1
                parts[-1] = parts[-1][:-1].rstrip()
                parts.append(lines[index].lstrip("#").strip())
            return " ".join(parts).split("  (")[0].strip()
    return None


def dump(config: Config) -> str:
    """The resolved config as YAML (what --print-config shows and the run directory keeps)."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


