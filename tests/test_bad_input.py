"""Bad input as a user meets it: real ``mpiexec`` jobs at 3 ranks that must end non-zero within
30 s with exactly one line, ``mpiml: error: ...``, and nothing else (no traceback, no abort
banner, no warning repeated per rank). tests/mpi/test_bad_input_mpi.py holds the whole matrix
(every case on every rank, in one job); these are a sample of it through the real commands.
"""

import h5py
import numpy as np
import pytest
import yaml
from datasets import make_problem, write_dense
from launch import run_mpi, single_thread_env

from mpiml.data.tools import convert, link

CASES = {  # case: (config changes, extra arguments, file written by the case, expected)
    "three classes": ({"data": {"train": "three.h5"}}, [], "'binary' needs exactly 2"),
    "test width": ({"data": {"test": "narrow.h5"}}, [], "X_test has 3 features"),
    "too many clusters": ({"model": {"kind": "kmeans"}, "kmeans": {"n_clusters": 500}}, [],
                          "kmeans.n_clusters=500 exceeds the 300 rows"),
    "no data": ({"data": {"train": ""}}, [], "data.train is not set"),
    "output is a file": ({"output": {"dir": "three.h5"}}, [], "is a file, not a directory"),
    "bad --set": ({}, ["--set", "optimizer.lr=1e-x"], "(--set optimizer.lr=1e-x)"),
    "resume word": ({}, ["--resume", "sometimes"], "takes auto, never"),
    "overflow": ({"data": {"train": "huge.h5"}}, [], "non-finite loss at step 1"),
    "float32 overflow": ({"data": {"train": "huge.h5", "dtype": "float32"}}, [],
                         "which overflows float32"),
    "linked input missing": ({"data": {"train": "linked.h5"}}, [],
                             "linked.h5: data set 'X' is linked to inputs that do not "
                             "exist: half2.h5"),
    "converted without a test split": ({"data": {"test": "converted.h5"}}, [],
                                       "converted.h5: no data set 'X_test'"),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    X, y = make_problem("binary", 300, 4, seed=2)
    write_dense(root / "ok.h5", X, y)
    write_dense(root / "three.h5", X, np.arange(300) % 3)
    write_dense(root / "narrow.h5", X, y, X[:50, :3], y[:50])
    write_dense(root / "huge.h5", X * 1e300, y)
    write_dense(root / "half1.h5", X[:150], y[:150])
    write_dense(root / "half2.h5", X[150:], y[150:])
    link(root / "linked.h5", [root / "half1.h5", root / "half2.h5"])
    (root / "half2.h5").unlink()  # a linked file whose second input is gone
    np.savez(root / "ok.npz", X=X, y=y)
    convert(root / "ok.npz", root / "converted.h5")  # X and y only: no --test-fraction
    return root


def config(root, name, changes):
    raw = {"data": {"train": "ok.h5"}, "model": {"kind": "logistic"},
           "optimizer": {"name": "sgd", "lr": 0.1}, "train": {"epochs": 2, "batch_size": 50},
           "output": {"dir": f"runs/{name}"}}
    for section, values in changes.items():
        raw[section] = {**raw.get(section, {}), **values}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_input_ends_the_job_with_one_line(files, case):
    changes, extra, expected = CASES[case]
    name = case.replace(" ", "_")
    path = config(files, name, changes)
    job = run_mpi(3, ["-m", "mpiml.train", str(path), "--quiet", *extra], timeout=60,
                  cwd=files)
    assert not job.timed_out and job.seconds < 30, job.output
    assert job.returncode == 1, job.output
    lines = job.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mpiml: error: "), job.output
    assert expected in lines[0], job.output
    if case != "overflow":  # the others fail before the run starts: nothing written
        assert not (files / "runs" / name).exists()


def test_numbers_as_users_write_them_train(files):
    """Bug: `lr: 1e-3` was refused ("must be a number; got '1e-3'"), as was `epochs: 1e1`."""
    path = files / "exponents.yaml"
    path.write_text("data: {train: ok.h5}\nmodel: {kind: logistic, alpha: 1e-4}\n"
                    "optimizer: {name: sgd, lr: 1e-3}\ntrain: {epochs: 2e0, batch_size: 5e1}\n"
                    "output: {dir: runs/exponents}\n")
    job = run_mpi(2, ["-m", "mpiml.train", str(path), "--quiet", "--set", "train.epochs=3E0"],
                  timeout=60, cwd=files)
    assert job.returncode == 0, job.output
    saved = yaml.safe_load((files / "runs" / "exponents" / "config.yaml").read_text())
    assert saved["optimizer"]["lr"] == 0.001 and saved["train"]["epochs"] == 3
    with h5py.File(files / "runs" / "exponents" / "model.h5") as model:
        assert np.isfinite(model["model/params"][()]).all()


def test_mpiml_debug_shows_the_traceback(files):
    path = config(files, "debug", {"data": {"train": "three.h5"}})
    job = run_mpi(2, ["-m", "mpiml.train", str(path), "--quiet"], timeout=60, cwd=files,
                  env=single_thread_env(MPIML_DEBUG="1"))
    assert job.returncode == 1 and "Traceback" in job.output, job.output


def test_predict_writes_string_class_labels(files):
    """Bug: predict on an estimator file with string class labels ended in "KeyError: cannot
    map 'O' to MPI datatype" (an object array into Gatherv)."""
    from mpiml.estimators import LogisticRegression

    X, y = make_problem("binary", 300, 4, seed=2)
    labels = np.where(y > 0, "spam", "ham")
    LogisticRegression().fit(X, labels).save(files / "strings_model.h5")
    job = run_mpi(3, ["-m", "mpiml.predict", "strings_model.h5", "ok.h5", "--out",
                      "strings_pred.h5"], timeout=60, cwd=files)
    assert job.returncode == 0, job.output
    with h5py.File(files / "strings_pred.h5") as out:
        predicted = out["prediction"].asstr()[()]
    expected = LogisticRegression().fit(X, labels).predict(X)
    assert predicted.tolist() == expected.tolist()


def test_training_never_modifies_its_input_files(files):
    """Inputs are read-only to mpiml: a read-only data file trains (standardized, with a test
    set) and keeps its bytes and its mtime."""
    import hashlib
    import os

    source = files / "readonly.h5"
    X, y = make_problem("binary", 300, 4, seed=5)
    write_dense(source, X, y, X[:60], y[:60])
    os.chmod(source, 0o444)
    before = (hashlib.sha256(source.read_bytes()).hexdigest(), source.stat().st_mtime_ns)
    path = config(files, "readonly", {"data": {"train": "readonly.h5", "test": "readonly.h5",
                                               "standardize": True}})
    job = run_mpi(3, ["-m", "mpiml.train", str(path), "--quiet"], timeout=60, cwd=files)
    assert job.returncode == 0, job.output
    after = (hashlib.sha256(source.read_bytes()).hexdigest(), source.stat().st_mtime_ns)
    assert after == before


def test_every_shipped_config_says_how_to_make_its_missing_data(tmp_path):
    """Running a shipped config without its data said only "data/breast_cancer.h5: no such
    file"; the command that makes it is in the config's `# Data:` comment."""
    from launch import ROOT

    from mpiml import config

    for path in sorted((ROOT / "configs").glob("*.yaml")):
        recipe = config.data_recipe(path)
        train = config.load(path).data.train
        assert recipe and recipe.startswith("python -m mpiml.data ") and recipe.endswith(train), (
            path, recipe)
    job = run_mpi(2, ["-m", "mpiml", "train", str(ROOT / "configs" / "softmax_digits.yaml")],
                  timeout=60, cwd=tmp_path)
    assert job.returncode == 1, job.output
    assert job.output.strip() == ("mpiml: error: ConfigError: data.train data/digits.h5: no such "
                                  "file; this config's data is made by: python -m mpiml.data "
                                  "example digits data/digits.h5"), job.output
