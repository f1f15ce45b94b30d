"""Every example config in configs/ trains on 2 ranks and reaches an asserted result.

The data each config names is generated (or taken from scikit-learn's bundled sets) into a
temporary directory with the command its header documents; paths are redirected with --set.
"""

import json
import sys

import pytest
from launch import ROOT, run, run_mpi

DATA_COMMANDS = {
    "quickstart.h5": ["synth", "--task", "binary", "--rows", "20000", "--features", "20",
                      "--test-rows", "5000", "--seed", "0"],
    "regression.h5": ["synth", "--task", "regression", "--rows", "50000", "--features", "30",
                      "--noise", "0.5", "--test-rows", "10000", "--seed", "1"],
    "breast_cancer.h5": ["example", "breast_cancer"],
    "digits.h5": ["example", "digits"],
    "line.h5": ["example", "line"],
    "binary_10k.h5": ["synth", "--task", "binary", "--rows", "10000", "--features", "20",
                      "--test-rows", "2000", "--seed", "5"],
    "blobs.h5": ["synth", "--task", "blobs", "--classes", "8", "--rows", "50000", "--features",
                 "16", "--test-rows", "5000", "--seed", "3"],
}

# config -> (data file, metric, lowest acceptable value)
EXPECTED = {
    "quickstart": ("quickstart.h5", "accuracy", 0.88),
    "linear_regression": ("regression.h5", "r2", 0.85),
    "logistic_breast_cancer": ("breast_cancer.h5", "accuracy", 0.94),
    "softmax_digits": ("digits.h5", "accuracy", 0.95),
    "linear_svm": ("breast_cancer.h5", "accuracy", 0.93),
    "mlp_digits": ("digits.h5", "accuracy", 0.96),
    "hgbt_breast_cancer": ("breast_cancer.h5", "accuracy", 0.93),
    "decision_tree": ("breast_cancer.h5", "accuracy", 0.88),
    "kmeans_blobs": ("blobs.h5", "adjusted_rand", 0.9),
    "line_2x_plus_1": ("line.h5", "r2", 0.98),
    "logistic_10k": ("binary_10k.h5", "accuracy", 0.85),
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("data")
    for name, command in DATA_COMMANDS.items():
        job = run([sys.executable, "-m", "mpiml.data", *command, str(directory / name)],
                  timeout=120)
        assert job.returncode == 0, job.output
    return directory


def test_every_config_is_covered():
    assert sorted(p.stem for p in (ROOT / "configs").glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_trains_to_expected_quality(name, data_dir, tmp_path):
    data_file, metric, minimum = EXPECTED[name]
    path = str(data_dir / data_file)
    job = run_mpi(2, ["-m", "mpiml.train", str(ROOT / "configs" / f"{name}.yaml"), "--quiet",
                      "--set", f"data.train={path}", "--set", f"data.test={path}",
                      "--set", f"output.dir={tmp_path}"], timeout=300)
    assert job.returncode == 0, job.output
    done = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    if metric == "adjusted_rand":
        done["test"][metric] = adjusted_rand_of_predictions(tmp_path / "model.h5", path)
    assert done["test"][metric] >= minimum, done["test"]


def test_line_recovers_slope_2_and_intercept_1_on_4_ranks(data_dir, tmp_path):
    import h5py

    path = str(data_dir / "line.h5")
    job = run_mpi(4, ["-m", "mpiml.train", str(ROOT / "configs" / "line_2x_plus_1.yaml"),
                      "--quiet", "--set", f"data.train={path}", "--set", f"data.test={path}",
                      "--set", f"output.dir={tmp_path}"], timeout=300)
    assert job.returncode == 0, job.output
    with h5py.File(tmp_path / "model.h5") as model:
        slope, intercept = model["model/params"][()]
    assert abs(slope - 2.0) < 0.02 and abs(intercept - 1.0) < 0.05, (slope, intercept)


VARIANTS = {
    "minibatch-sync": [],
    "full-batch": ["train.batch_size=null", "optimizer.name=gd", "optimizer.lr=1.0",
                   "train.epochs=100"],
    "overlap": ["comm.mode=overlap"],
    "local-sgd": ["comm.mode=local_sgd", "comm.local_steps=8"],
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_logistic_10k_on_4_ranks_in_every_mode(data_dir, tmp_path, variant):
    path = str(data_dir / "binary_10k.h5")
    overrides = [f"data.train={path}", f"data.test={path}", f"output.dir={tmp_path}",
                 *VARIANTS[variant]]
    args = [arg for override in overrides for arg in ("--set", override)]
    job = run_mpi(4, ["-m", "mpiml.train", str(ROOT / "configs" / "logistic_10k.yaml"),
                      "--quiet", *args], timeout=300)
    assert job.returncode == 0, job.output
    done = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert done["test"]["accuracy"] >= 0.85, (variant, done["test"])


def adjusted_rand_of_predictions(model, data) -> float:
    """Clusters found by `mpiml.predict` on the test rows against the generator's labels."""
    import h5py
    from sklearn.metrics import adjusted_rand_score

    out = model.parent / "pred.h5"
    job = run_mpi(3, ["-m", "mpiml.predict", str(model), data, "--x", "X_test", "--out",
                      str(out)], timeout=120)
    assert job.returncode == 0, job.output
    with h5py.File(out) as pred, h5py.File(data) as src:
        return adjusted_rand_score(src["y_test"][()], pred["prediction"][()])


def test_make_examples_runs_the_data_command_of_every_shipped_config():
    """`make examples` makes data/ for every config in configs/ with the command its `# Data:`
    comment names: the commands make would run (make -n: nothing is run) are exactly those."""
    from mpiml import config

    job = run(["make", "-n", "-B", "--no-print-directory", "-C", str(ROOT), "examples",
               "PY=python"], timeout=60)
    assert job.returncode == 0, job.output
    printed = job.output.replace("\\\n", " ").splitlines()
    made = {" ".join(line.split()) for line in printed if line.startswith("python -m mpiml.data")}
    wanted = {" ".join(config.data_recipe(path).split())
              for path in (ROOT / "configs").glob("*.yaml")}
    assert made == wanted, (sorted(made - wanted), sorted(wanted - made))
