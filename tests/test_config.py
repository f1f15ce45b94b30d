"""Config loading: defaults, strict keys with suggestions, type and range checks, overrides."""

import pytest

from mpiml import config
from mpiml.config import ConfigError
from mpiml.config.reference import reference_markdown


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_defaults_round_trip_through_yaml(tmp_path):
    defaults = config.Config()
    loaded = config.load(write(tmp_path, config.dump(defaults)))
    assert loaded == defaults and loaded.digest() == defaults.digest()


def test_values_are_read_and_ints_accepted_for_floats(tmp_path):
    text = "model: {kind: softmax, alpha: 1}\ntrain: {batch_size: null}"
    cfg = config.load(write(tmp_path, text))
    assert cfg.model.kind == "softmax" and cfg.model.alpha == 1.0
    assert isinstance(cfg.model.alpha, float) and cfg.train.batch_size is None


@pytest.mark.parametrize(("text", "message"), [
    ("optimiser: {lr: 0.1}", "unknown section 'optimiser'; did you mean 'optimizer'?"),
    ("optimizer: {learning_rate: 0.1}", "unknown key in section 'optimizer': 'learning_rate'"),
    ("optimizer: {lrr: 0.1}", "did you mean 'lr'?"),
    ("model: {kind: forest}",
     "model.kind must be one of linear, logistic, softmax, svm, mlp_classifier"),
    ("model: {hidden: [0]}", "model.hidden must be a non-empty list of positive integers"),
    ("model: {kind: kmeans}\ncomm: {mode: overlap}", "has its own loop"),
    ("hgbt: {max_bins: 300}", "hgbt.max_bins must be in [2, 255]"),
    ("optimizer: {lr: -1}", "optimizer.lr must be greater than 0; got -1.0"),
    ("optimizer: {lr: 0}", "optimizer.lr must be greater than 0; got 0.0"),
    ("train: {epochs: 2.5}", "train.epochs must be an integer; got 2.5"),
    ("train: {epochs: 0}", "train.epochs must be in [1, inf]; got 0"),
    ("model: {fit_intercept: 'yes'}", "model.fit_intercept must be true or false"),
    ("model: {l1_ratio: 2}", "model.l1_ratio must be in [0.0, 1.0]; got 2.0"),
    ("comm: {algorithm: butterfly}", "comm.algorithm must be one of native, ring, tree, auto"),
    ("optimizer: {name: lbfgs}\ncomm: {mode: overlap}", "lbfgs needs comm.mode sync"),
    ("optimizer: {name: lbfgs}\nmodel: {alpha: 1, l1_ratio: 0.5}", "lbfgs handles only smooth"),
    ("optimizer: {schedule: step}", "needs optimizer.step_size"),
    ("- a\n- b", "must hold a mapping of sections"),
    ("model: 3", "section 'model' must be a mapping"),
    ("train: {epochs: .nan}", "train.epochs must be an integer"),
])
def test_bad_configs_are_rejected_with_key_and_value(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_missing_and_invalid_yaml_files_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file .*nope.yaml"):
        config.load(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        config.load(write(tmp_path, "model: {kind: [unclosed"))


def test_overrides_apply_as_yaml_scalars(tmp_path):
    cfg = config.load(write(tmp_path, "optimizer: {lr: 0.5}"),
                      ["optimizer.lr=0.1", "train.batch_size=null", "model.fit_intercept=false"])
    assert cfg.optimizer.lr == 0.1 and cfg.train.batch_size is None
    assert cfg.model.fit_intercept is False


@pytest.mark.parametrize("bad", ["optimizer.lr", "lr=0.1", "a.b.c=1"])
def test_malformed_overrides_are_rejected(bad):
    with pytest.raises(ConfigError, match="section.key=value"):
        config.load(None, [bad])


def test_override_of_unknown_key_is_rejected_with_suggestion():
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        config.load(None, ["train.epoch=3"])


def test_digest_changes_with_any_value():
    assert config.Config().digest() != config.load(None, ["train.seed=1"]).digest()


def test_configuration_reference_is_up_to_date():
    from pathlib import Path

    reference = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
    assert reference.read_text() == reference_markdown(), (
        "docs/configuration.md is stale: run `python -m mpiml.config > docs/configuration.md`")
