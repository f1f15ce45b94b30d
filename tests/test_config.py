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


@pytest.mark.parametrize(("written", "key", "value"), [
    ("optimizer: {lr: 1e-3}", ("optimizer", "lr"), 0.001),
    ("optimizer: {lr: 1E-3}", ("optimizer", "lr"), 0.001),
    ("optimizer: {lr: 2.5e+3}", ("optimizer", "lr"), 2500.0),
    ("optimizer: {lr: -1e-3}", ("model", "alpha"), None),
    ("train: {epochs: 1e6}", ("train", "epochs"), 1_000_000),
    ("train: {epochs: 1E6}", ("train", "epochs"), 1_000_000),
    ("train: {batch_size: 1_000}", ("train", "batch_size"), 1000),
    ("model: {alpha: 5e0}", ("model", "alpha"), 5.0),
])
def test_numbers_are_read_as_users_write_them(tmp_path, written, key, value):
    """Bug: PyYAML reads YAML 1.1, where 1e-3 without a dot is a string: `lr: 1e-3` and
    `epochs: 1e6` were rejected as "must be a number/integer; got '1e-3'"."""
    section, name = key
    if value is None:  # a negative lr is read as a number, then refused for its range
        with pytest.raises(ConfigError, match="optimizer.lr must be greater than 0; got -0.001"):
            config.load(write(tmp_path, written))
        return
    loaded = config.load(write(tmp_path, written))
    assert getattr(getattr(loaded, section), name) == value
    assert type(getattr(getattr(loaded, section), name)) is type(value)
    override = written.split("{")[1].rstrip("}").replace(": ", "=")
    from_set = config.load(None, [f"{section}.{override}"])
    assert getattr(getattr(from_set, section), name) == value


def test_an_error_names_the_file_and_line_or_the_set_argument(tmp_path):
    """Bug: a bad value given with --set was blamed on the file ("... in e.yaml")."""
    path = write(tmp_path, "model: {kind: logistic}\ntrain:\n  seed: 1\n  epochs: 1.5\n")
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert str(info.value) == f"train.epochs must be an integer; got 1.5 ({path}, line 4)"
    with pytest.raises(ConfigError) as info:
        config.load(write(tmp_path, "train: {epochs: 3}"), ["optimizer.lr=fast"])
    assert str(info.value) == ("optimizer.lr must be a number; got 'fast' "
                               "(--set optimizer.lr=fast)")
    with pytest.raises(ConfigError, match=r"c.yaml, line 3 is not valid YAML"):
        config.load(write(tmp_path, "train:\n  epochs: 3\n  - 4\n"))


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


def test_a_config_saved_before_a_key_existed_resumes_as_the_runs_it_describes():
    """A checkpoint written before data.validation_fraction or kmeans.init existed ran with
    their defaults: no conflict. Trees grew depth-wise before hgbt.max_leaf_nodes: resuming them
    with the new best-first default is a real change, and is refused."""
    from mpiml.config import resume_conflicts

    def saved_before(current, *missing):
        old = current.to_dict()
        for dotted in missing:
            section, key = dotted.split(".")
            del old[section][key]
        return old

    logistic = config.load(None, [])
    old = saved_before(logistic, "data.validation_fraction", "data.weight", "kmeans.init",
                       "kmeans.n_init", "model.class_weight")
    assert resume_conflicts(old, logistic) == []
    trees = config.load(None, ["model.kind=hgbt_classifier"])
    assert resume_conflicts(saved_before(trees, "hgbt.max_leaf_nodes"), trees) == [
        "hgbt.max_leaf_nodes: None -> 31"]
