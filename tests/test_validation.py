"""Validation sets and early stopping (docs/training.md, "Validation and early stopping"):
the held-out rows depend on global rows only, early stopping watches validation and never the
test set, and ``train.restore_best`` ends with the best validation parameters or trees.
"""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from datasets import make_problem
from launch import run_mpi, single_thread_env

from mpiml import config
from mpiml.config import ConfigError
from mpiml.data.holdout import held_out


def test_held_out_units_depend_on_the_unit_and_seed_only():
    units = np.arange(20_000)
    chosen = held_out(units, 0.2, seed=3)
    assert abs(chosen.mean() - 0.2) < 0.01
    # any piece of the global range gives the same answer for its units (rank-count free)
    assert np.array_equal(held_out(units[7_000:9_001], 0.2, seed=3), chosen[7_000:9_001])
    assert not np.array_equal(held_out(units, 0.2, seed=4), chosen)
    assert not held_out(units, 0.0, seed=3).any()


@pytest.mark.parametrize("overrides, message", [
    (["data.validation=v.h5", "data.validation_fraction=0.1"], "set one of them"),
    (["model.kind=kmeans", "data.validation_fraction=0.1"], "uses no validation set"),
    (["model.kind=hgbt_classifier", "train.patience=3"], "watches a validation set"),
    (["data.validation_fraction=0.95"], "validation_fraction"),
])
def test_inconsistent_validation_settings_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        config.load(None, overrides)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Training rows, validation rows of the same problem, and a test set whose labels are
    flipped: its log-loss rises while the model learns, so a loop watching it would stop."""
    X, y = make_problem("binary", 1400, 6, seed=5)
    directory = tmp_path_factory.mktemp("validation")
    paths = {name: directory / f"{name}.h5" for name in ("train", "flipped")}
    with h5py.File(paths["train"], "w") as out:
        out["X"], out["y"] = X[:800], y[:800]
        out["X_val"], out["y_val"] = X[800:1100], y[800:1100]
        out["X_test"], out["y_test"] = X[1100:], y[1100:]
    with h5py.File(paths["flipped"], "w") as out:
        out["X_test"], out["y_test"] = X[1100:], 1 - y[1100:]
        out["X_val"], out["y_val"] = X[800:1100], 1 - y[800:1100]
    return paths


def job(directory: Path, files, ranks: int = 2, **sections) -> tuple[list[dict], Path]:
    raw = {"data": {"train": str(files["train"])},
           "model": {"kind": "logistic"},
           "optimizer": {"name": "sgd", "lr": 0.5},
           "train": {"epochs": 12, "batch_size": 100, "log_every": 1000},
           "checkpoint": {"enabled": False},
           "output": {"dir": str(directory / "run")}}
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    done = run_mpi(ranks, ["-m", "mpiml.train", str(path), "--quiet"], timeout=120,
                   env=single_thread_env())
    assert done.returncode == 0, done.output
    lines = (directory / "run" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines], directory / "run" / "model.h5"


def epochs_of(records: list[dict]) -> list[dict]:
    return [r for r in records if "train_loss" in r and "epoch" in r]


def test_early_stopping_never_watches_the_test_set(tmp_path, files):
    """Regression: patience watched the test log-loss. Here it rises from the first epoch, so
    that rule stopped after patience + 1 epochs; the training loss keeps falling."""
    records, _ = job(tmp_path, files, data={"test": str(files["flipped"])},
                     train={"patience": 2})
    epochs = epochs_of(records)
    test_loss = [r["test"]["log_loss"] for r in epochs]
    assert test_loss[-1] > test_loss[0]  # the test set would have stopped it
    assert len(epochs) == 12 and not records[-1]["stopped_early"]


def test_early_stopping_watches_the_validation_set(tmp_path, files):
    records, _ = job(tmp_path, files, data={"validation": str(files["flipped"]),
                                            "test": str(files["train"])},
                     train={"patience": 2})
    epochs = epochs_of(records)
    assert len(epochs) == 3 and records[-1]["stopped_early"]
    assert all("validation" in r and "test" in r for r in epochs)


@pytest.mark.parametrize("restore_best", [True, False])
def test_restore_best_ends_with_the_best_validation_parameters(tmp_path, files, restore_best):
    records, model = job(tmp_path, files, data={"validation": str(files["flipped"])},
                         train={"restore_best": restore_best})
    per_epoch = [r["validation"]["log_loss"] for r in epochs_of(records)]
    final = records[-1]["validation"]["log_loss"]
    want = min(per_epoch) if restore_best else per_epoch[-1]
    assert final == pytest.approx(want, rel=1e-12)
    assert min(per_epoch) < per_epoch[-1]  # otherwise the two settings are not told apart
    assert model.exists()


@pytest.mark.parametrize("reproducible", [False, True])
def test_a_validation_fraction_is_the_same_rows_on_any_rank_count(tmp_path, files,
                                                                  reproducible):
    """Held out by global row (by block in reproducible mode): 1 and 3 ranks train and validate
    on the same rows, so the validation metrics and the final parameters agree -- to the bit in
    reproducible mode."""
    train = {"patience": 3, "epochs": 8, "reproducible": reproducible,
             "block_rows": 20 if reproducible else None}
    sections = dict(data={"validation_fraction": 0.25}, train=train)
    one, model_one = job(tmp_path / "one", files, ranks=1, **sections)
    three, model_three = job(tmp_path / "three", files, ranks=3, **sections)
    assert len(epochs_of(one)) == len(epochs_of(three))
    for a, b in zip(epochs_of(one), epochs_of(three), strict=True):
        assert a["validation"]["log_loss"] == pytest.approx(b["validation"]["log_loss"],
                                                            rel=1e-9)
    with h5py.File(model_one) as f1, h5py.File(model_three) as f3:
        got, want = f3["model/params"][()], f1["model/params"][()]
    if reproducible:
        assert got.tobytes() == want.tobytes()
    else:
        np.testing.assert_allclose(got, want, rtol=1e-9)


def test_boosting_stops_on_validation_and_keeps_the_best_round(tmp_path, files):
    records, model = job(tmp_path, files, ranks=3, model={"kind": "hgbt_classifier"},
                         data={"validation": str(files["flipped"])},
                         hgbt={"n_estimators": 30, "max_depth": 3},
                         train={"patience": 3, "log_every": 1})
    rounds = [r for r in records if "validation_loss" in r]
    losses = [r["validation_loss"] for r in rounds]
    best = int(np.argmin(losses)) + 1
    assert records[-1]["stopped_early"] and len(rounds) == best + 3 < 30
    with h5py.File(model) as saved:
        assert len(saved["model/tree_offsets"][()]) - 1 == best


@pytest.mark.parametrize("kind, fault", [
    ("logistic", "rank=1,step=23,at=before_allreduce,action=kill"),
    ("hgbt_classifier", "rank=2,step=3,at=before_allreduce,action=kill"),
])
def test_a_killed_run_with_validation_resumes_to_the_same_model(tmp_path, files, kind, fault):
    """The best parameters / round and the early-stopping counts travel in the checkpoints."""
    sections = dict(model={"kind": kind}, data={"validation": str(files["flipped"])},
                    hgbt={"n_estimators": 12, "max_depth": 3}, train={"patience": 4},
                    checkpoint={"enabled": True, "every_steps": 2, "every_seconds": None})

    def model_bytes(path: Path) -> bytes:
        with h5py.File(path) as saved:
            return b"".join(saved["model"][name][()].tobytes() for name in sorted(saved["model"])
                            if isinstance(saved["model"][name], h5py.Dataset))

    _, want = job(tmp_path / "whole", files, ranks=3, **sections)
    directory = tmp_path / "killed"
    directory.mkdir()
    raw = yaml.safe_load((tmp_path / "whole" / "config.yaml").read_text())
    raw["output"]["dir"] = str(directory / "run")
    (directory / "config.yaml").write_text(yaml.safe_dump(raw))
    crashed = run_mpi(3, ["-m", "mpiml.train", str(directory / "config.yaml"), "--quiet"],
                      timeout=120, env=single_thread_env(MPIML_FAULT=fault))
    assert crashed.returncode != 0 and not crashed.timed_out, crashed.output
    records, got = job(directory, files, ranks=3, **sections)
    assert any(r.get("event") == "resume" for r in records)
    assert model_bytes(got) == model_bytes(want)


# -- the estimators: scikit-learn's early_stopping / validation_fraction / n_iter_no_change ---


def test_estimator_early_stopping_holds_out_rows_and_restores_the_best():
    import mpiml.estimators as E

    X, y = make_problem("binary", 600, 6, seed=7)
    y = np.where(np.arange(600) % 5 == 0, 1 - y, y)  # noisy labels: validation loss turns
    common = dict(hidden_layer_sizes=(32,), solver="adam", learning_rate_init=0.05,
                  batch_size=50, max_iter=60, n_iter_no_change=4, random_state=0)
    stopped = E.MLPClassifier(early_stopping=True, validation_fraction=0.2, **common).fit(X, y)
    full = E.MLPClassifier(**dict(common, n_iter_no_change=None)).fit(X, y)
    assert stopped.n_iter_ < 60 and full.n_iter_ == 60
    with pytest.raises(ValueError, match="early_stopping needs a first-order solver"):
        E.LogisticRegression(early_stopping=True).fit(X, y)


def test_boosting_early_stopping_auto_starts_at_ten_thousand_rows():
    import mpiml.estimators as E

    X, y = make_problem("binary", 10_200, 4, seed=8)
    auto = E.HistGradientBoostingClassifier(max_iter=200, max_depth=2, learning_rate=0.5)
    assert auto.fit(X, y).n_iter_ < 200
    small = E.HistGradientBoostingClassifier(max_iter=20, max_depth=2, learning_rate=0.5)
    assert small.fit(X[:5_000], y[:5_000]).n_iter_ == 20
    with pytest.raises(ValueError, match="validation_fraction=None"):
        E.HistGradientBoostingClassifier(early_stopping=True, validation_fraction=None).fit(X, y)
