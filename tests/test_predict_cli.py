"""`mpiml-predict` under mpiexec: CSV and HDF5 outputs, and the metrics it prints with labels.

The models are written directly (no training) so that the expected predictions, probabilities
and metrics can be computed here with numpy and scikit-learn on the whole data set.
"""

import csv
import re

import h5py
import numpy as np
import pytest
from datasets import make_problem
from launch import run_mpi
from scipy.special import softmax
from sklearn.metrics import accuracy_score, log_loss, mean_squared_error, r2_score

from mpiml.files.model import save_model
from mpiml.models.kinds import make_model
from mpiml.models.saved import SavedModel

N_FEATURES = 5
CLASSES = np.array([10.0, 20.0, 30.0])
MEAN, SCALE = np.linspace(-0.2, 0.2, N_FEATURES), np.linspace(0.5, 2.0, N_FEATURES)


def write_model(path, kind, arrays, n_classes=2, classes=None, scaler=None, **options):
    model = make_model(kind, N_FEATURES, n_classes=n_classes) if kind != "kmeans" else None
    options = model.options() if model is not None else options
    save_model(path, SavedModel(kind, N_FEATURES, arrays, options, n_classes, classes, scaler))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Data and one model per family: softmax (labels 10/20/30, standardised), linear regression
    (labels under a name of their own), K-Means."""
    directory = tmp_path_factory.mktemp("predict")
    rng = np.random.default_rng(3)
    X, y = make_problem("multiclass", 400, N_FEATURES, seed=2)
    with h5py.File(directory / "data.h5", "w") as out:
        out["X"], out["X_test"] = X[:300], X[300:]
        out["y"], out["y_test"] = CLASSES[y[:300].astype(int)], CLASSES[y[300:].astype(int)]
        out["target"] = X[:300] @ rng.standard_normal(N_FEATURES) + rng.standard_normal(300)
    write_model(directory / "softmax.h5", "softmax",
                {"params": rng.standard_normal(3 * (N_FEATURES + 1))}, 3, CLASSES,
                (MEAN, SCALE))
    write_model(directory / "linear.h5", "linear",
                {"params": rng.standard_normal(N_FEATURES + 1)})
    write_model(directory / "kmeans.h5", "kmeans",
                {"centers": rng.standard_normal((4, N_FEATURES))}, n_clusters=4)
    return directory


def expected(kind, model_path, X, y):
    """(prediction, proba or None, metrics) computed here from the model file's arrays."""
    with h5py.File(model_path) as model:
        arrays = {name: model["model"][name][()] for name in model["model"]}
    if kind == "softmax":
        params = arrays["params"]
        Z = ((X - MEAN) / SCALE) @ params[:3 * N_FEATURES].reshape(3, N_FEATURES).T
        proba = softmax(Z + params[3 * N_FEATURES:], axis=1)
        return CLASSES[proba.argmax(axis=1)], proba, {
            "accuracy": accuracy_score(y, CLASSES[proba.argmax(axis=1)]),
            "log_loss": log_loss(y, proba, labels=CLASSES)}
    if kind == "linear":
        values = X @ arrays["params"][:N_FEATURES] + arrays["params"][N_FEATURES]
        return values, None, {"rmse": np.sqrt(mean_squared_error(y, values)),
                              "r2": r2_score(y, values)}
    distances = ((X[:, None, :] - arrays["centers"][None]) ** 2).sum(axis=2)
    return distances.argmin(axis=1), None, {"inertia": distances.min(axis=1).sum()}


# kind -> (features, labels, extra arguments)
CASES = {"softmax": ("X_test", "y_test", []),
         "linear": ("X", "target", ["--y", "target"]),
         "kmeans": ("X", None, [])}


def printed_metrics(output: str) -> dict[str, float]:
    lines = [line for line in output.splitlines() if line.startswith("mpiml: ") and "=" in line]
    assert len(lines) == 1, output  # rank 0 only
    return {key: float(value) for key, value in re.findall(r"(\w+)=(\S+)", lines[0])}


@pytest.mark.parametrize("nprocs", [1, 3])
@pytest.mark.parametrize("kind", sorted(CASES))
def test_csv_equals_hdf5_and_metrics_equal_the_whole_set(files, tmp_path, kind, nprocs):
    x, y, extra = CASES[kind]
    with h5py.File(files / "data.h5") as data:
        X, labels = data[x][()], None if y is None else data[y][()]
    prediction, proba, metrics = expected(kind, files / f"{kind}.h5", X, labels)
    for name in ("pred.h5", "pred.csv"):
        job = run_mpi(nprocs, ["-m", "mpiml.predict", str(files / f"{kind}.h5"),
                               str(files / "data.h5"), "--x", x, "--out", str(tmp_path / name),
                               *extra], timeout=120)
        assert job.returncode == 0, job.output
        found = printed_metrics(job.output)
        assert set(metrics) <= set(found), (found, metrics)
        for key, value in metrics.items():
            assert found[key] == pytest.approx(value, rel=1e-5), (key, found, metrics)
    with h5py.File(tmp_path / "pred.h5") as pred:
        h5_prediction = pred["prediction"][()]
        h5_proba = pred["proba"][()] if "proba" in pred else None
    np.testing.assert_allclose(h5_prediction, prediction, rtol=1e-10)
    if proba is None:
        assert h5_proba is None
    else:
        np.testing.assert_allclose(h5_proba, proba, rtol=1e-10)
    with open(tmp_path / "pred.csv", newline="") as handle:
        header, *rows = list(csv.reader(handle))
    table = np.array(rows, dtype=np.float64)
    if kind == "softmax":
        assert header == ["prediction", "proba_10.0", "proba_20.0", "proba_30.0"]
        assert np.array_equal(table[:, 1:], h5_proba)
    else:
        assert header == ["prediction"]
    assert np.array_equal(table[:, 0], h5_prediction)  # full precision: the same numbers


def test_labels_the_model_does_not_know(files, tmp_path):
    """y holds 10/20/30; a model of the classes 10 and 20: named with --y, they stop the job in
    one line before anything is written; found by name only, the predictions are written and
    rank 0 says why there are no metrics; --no-metrics reads no labels."""
    write_model(tmp_path / "binary.h5", "logistic", {"params": np.ones(N_FEATURES + 1)}, 2,
                CLASSES[:2])
    args = ["-m", "mpiml.predict", str(tmp_path / "binary.h5"), str(files / "data.h5"),
            "--out", str(tmp_path / "pred.csv")]
    unknown = (r"data.h5: data set 'y' holds the label 30.0 at global row \d+, which is not one "
               r"of the model's classes \(10.0, 20.0\)")
    job = run_mpi(3, [*args, "--y", "y"], timeout=60)
    assert job.returncode == 1, job.output
    assert job.output.count("mpiml: error:") == 1, job.output
    assert re.search(unknown, job.output), job.output
    assert not (tmp_path / "pred.csv").exists()
    job = run_mpi(3, args, timeout=60)
    assert job.returncode == 0, job.output
    assert job.output.count("mpiml: no metrics:") == 1 and re.search(unknown, job.output)
    assert "=" not in job.output, job.output
    assert len((tmp_path / "pred.csv").read_text().splitlines()) == 1 + 300
    (tmp_path / "pred.csv").unlink()
    job = run_mpi(3, [*args, "--no-metrics"], timeout=60)
    assert job.returncode == 0 and job.output == "", job.output
    assert len((tmp_path / "pred.csv").read_text().splitlines()) == 1 + 300
