"""The bad-input matrix: broken configs, ``--set`` values, data files (dense and CSR), model and
checkpoint files and estimator arguments, each tried on every rank of the job.

Every case must fail on every rank, with the same one-line message naming what is wrong (the
file, key, row, rank or value and what was expected), and leave no file written or moved. The
training cases go through the CLI's own ``train()`` in this process, so they must also be raised
*together* (printed once by rank 0, no abort, no traceback). tests/test_bad_input.py runs a
sample of them as real ``mpiexec`` jobs and checks the exit code, the one line and the time.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.sparse as sp
import yaml
from mpi4py import MPI

from mpiml.comm import broadcast_object

pytestmark = pytest.mark.mpi

COMM = MPI.COMM_WORLD
ROWS = 120  # every rank holds rows at 1-4 ranks; row 100 lies in the last rank's share


def _problem(n=ROWS, d=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = (X @ rng.standard_normal(d) > 0).astype(np.float64)
    return X, y


def _dense(path, X, y=None, **extra):
    with h5py.File(path, "w") as out:
        out["X"] = X
        if y is not None:
            out["y"] = y
        for name, value in extra.items():
            out[name] = value


def _csr(path, X, y, data=None, indices=None, indptr=None, shape=None, drop=()):
    matrix = sp.csr_matrix(X)
    members = {"data": matrix.data if data is None else data,
               "indices": matrix.indices if indices is None else indices,
               "indptr": matrix.indptr if indptr is None else indptr}
    with h5py.File(path, "w") as out:
        group = out.create_group("X")
        for name, value in members.items():
            if name not in drop:
                group[name] = value
        group.attrs["shape"] = matrix.shape if shape is None else shape
        out["y"] = y


def _write_files(root: Path) -> None:
    """Every data, model and checkpoint file the cases use (rank 0)."""
    X, y = _problem()
    _dense(root / "ok.h5", X, y, X_test=X[:30], y_test=y[:30])
    _dense(root / "three.h5", X, np.arange(ROWS) % 3)
    _dense(root / "one.h5", X, np.zeros(ROWS))
    bad = X.copy()
    bad[100, 2] = np.nan
    _dense(root / "nan.h5", bad, y)
    bad = X.copy()
    bad[101, 1] = np.inf
    _dense(root / "inf.h5", bad, y)
    _dense(root / "frac.h5", X, y + 0.5)
    labels = y.copy()
    labels[110] = np.nan
    _dense(root / "nanlabel.h5", X, labels)
    _dense(root / "short_y.h5", X, y[:-7])
    _dense(root / "flat.h5", X[:, 0], y)
    _dense(root / "no_y.h5", X)
    _dense(root / "strings.h5", np.array([["a"] * 4] * ROWS, dtype="S1"), y)
    with h5py.File(root / "no_x.h5", "w") as out:
        out["features"], out["y"] = X, y
    _dense(root / "empty.h5", np.empty((0, 4)), np.empty(0))
    _dense(root / "test_width.h5", X, y, X_test=X[:30, :3], y_test=y[:30])
    _dense(root / "test_unseen.h5", X, y, X_test=X[:30], y_test=np.full(30, 7.0))
    _dense(root / "huge_values.h5", X * 1e300, y)
    _dense(root / "few.h5", X[:5], y[:5])
    sparse_X = np.where(np.abs(X) > 0.5, X, 0.0)
    matrix = sp.csr_matrix(sparse_X)
    _csr(root / "csr_ok.h5", sparse_X, y)
    pointers = matrix.indptr.copy()
    pointers[60] = pointers[61] + 1
    _csr(root / "csr_indptr.h5", sparse_X, y, indptr=pointers)
    columns = matrix.indices.copy()
    columns[-1] = 9
    _csr(root / "csr_column.h5", sparse_X, y, indices=columns)
    _csr(root / "csr_no_indptr.h5", sparse_X, y, drop=("indptr",))
    _csr(root / "csr_shape.h5", sparse_X, y, shape=(ROWS + 5, 4))
    values = matrix.data.copy()
    values[-1] = np.nan
    _csr(root / "csr_nan.h5", sparse_X, y, data=values)
    _csr(root / "csr_huge_shape.h5", sparse_X, y, shape=(ROWS, 10**13))
    (root / "text.h5").write_text("not an HDF5 file\n")
    # a trained model, and files that are not models
    with h5py.File(root / "not_a_model.h5", "w") as out:
        out["X"] = X
    (root / "truncated_model.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)


def _base_config(root: Path, case: str, **sections) -> Path:
    raw = {"data": {"train": str(root / "ok.h5")},
           "model": {"kind": "logistic"},
           "optimizer": {"name": "sgd", "lr": 0.1},
           "train": {"epochs": 1, "batch_size": 40, "log_every": 1000},
           "fault": {"stall_seconds": 20},
           "output": {"dir": str(root / "runs" / case)}}
    for name, values in sections.items():
        if values is None:
            raw.pop(name, None)
        else:
            raw[name] = {**raw.get(name, {}), **values}
    path = root / "configs" / f"{case}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def root():
    """A directory every rank sees, with every file of the matrix (made by rank 0)."""
    path = broadcast_object(tempfile.mkdtemp(prefix="mpiml-bad-") if COMM.rank == 0 else None,
                            COMM)
    root = Path(path)
    if COMM.rank == 0:
        (root / "configs").mkdir()
        (root / "saved").mkdir()
        _write_files(root)
        _base_config(root, "done")  # a finished run, for the checkpoint and model cases
    COMM.Barrier()
    from mpiml.cli.train import parse_args, train

    assert train(parse_args([str(root / "configs" / "done.yaml"), "--quiet"])) == 0
    if COMM.rank == 0:
        checkpoints = root / "runs" / "done" / "checkpoints"
        newest = sorted(checkpoints.glob("ckpt-*.h5"))[-1]
        corrupt = root / "saved" / "corrupt.h5"  # truncated, as by a full disk
        corrupt.write_bytes(newest.read_bytes()[:os.path.getsize(newest) // 2])
        shutil.copy(newest, root / "saved" / "good.h5")
        (root / "saved" / "empty.h5").write_bytes(b"")
    COMM.Barrier()
    yield root
    COMM.Barrier()
    if COMM.rank == 0:
        shutil.rmtree(root)


def _snapshot(root: Path) -> dict:
    """Every file under ``root`` (but configs/) with its size and mtime: what must not change."""
    found = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            if "configs" not in path.parts:
                stat = path.stat()
                found[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return found


def _check(root: Path, attempt, expected: list[str], together: bool,
           writes: bool = False) -> None:
    """Run ``attempt()`` on every rank: it must raise on every rank, the same one-line message
    holding every ``expected`` fragment; ``together``: marked as raised on all ranks (the CLI
    then prints it once and exits without an abort); no file may be written or moved, unless
    ``writes`` (a run that started and failed in a step keeps its log and checkpoints)."""
    before = _snapshot(root) if COMM.rank == 0 else None
    try:
        attempt()
        outcome = None
    except Exception as exc:  # noqa: BLE001 -- the outcome is what is checked
        outcome = (type(exc).__name__, str(exc), getattr(exc, "raised_on_all_ranks", False))
    outcomes = COMM.allgather(outcome)
    after = _snapshot(root) if COMM.rank == 0 else None
    changed = COMM.bcast(None if before == after else sorted(set(after.items())
                                                             ^ set(before.items())))
    assert all(o is not None for o in outcomes), f"no error on ranks: {outcomes}"
    messages = {message for _, message, _ in outcomes}
    assert len(messages) == 1, f"ranks disagree: {outcomes}"
    message = messages.pop()
    assert "\n" not in message and "Traceback" not in message, message
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    if together:
        assert all(flag for _, _, flag in outcomes), f"not raised together: {outcomes}"
    assert writes or changed is None, f"files written or moved: {changed}"


# -- the CLI: configs, --set values, data files, checkpoints -----------------------------------

def _train(root: Path, case: str, sections: dict, args=()):
    from mpiml.cli.train import parse_args, train

    config = _base_config(root, case, **sections) if COMM.rank == 0 else None
    config = COMM.bcast(str(config) if config else None)

    def attempt():
        assert train(parse_args([config, "--quiet", *args])) == 0

    return attempt


def _raw_config(root: Path, case: str, text: str) -> str:
    path = root / "configs" / f"{case}.yaml"
    if COMM.rank == 0:
        path.write_text(text)
    COMM.Barrier()
    return str(path)


CONFIG_CASES = {  # case: (sections, --set arguments, expected fragments)
    "unknown section": ({"optimiser": {"lr": 1}}, [], ["unknown section 'optimiser'",
                                                       "did you mean 'optimizer'", "line"]),
    "unknown key": ({"train": {"epoch": 2}}, [], ["'epoch'", "did you mean 'epochs'"]),
    "kind": ({"model": {"kind": "forest"}}, [], ["model.kind must be one of", "'forest'"]),
    "lr string": ({"optimizer": {"lr": "fast"}}, [], ["optimizer.lr must be a number",
                                                     "'fast'", "line"]),
    "lr zero": ({"optimizer": {"lr": 0}}, [], ["optimizer.lr must be greater than 0"]),
    "lr negative": ({"optimizer": {"lr": -1e-3}}, [], ["greater than 0; got -0.001"]),
    "lr inf": ({"optimizer": {"lr": float("inf")}}, [], ["optimizer.lr must be finite"]),
    "epochs fraction": ({"train": {"epochs": 1.5}}, [], ["train.epochs must be an integer",
                                                         "1.5"]),
    "epochs zero": ({"train": {"epochs": 0}}, [], ["train.epochs must be in [1, inf]"]),
    "batch zero": ({"train": {"batch_size": 0}}, [], ["train.batch_size"]),
    "boolean": ({"model": {"fit_intercept": "yes"}}, [], ["model.fit_intercept must be true "
                                                          "or false"]),
    "l1 ratio": ({"model": {"l1_ratio": 2}}, [], ["model.l1_ratio must be in [0.0, 1.0]"]),
    "algorithm": ({"comm": {"algorithm": "butterfly"}}, [], ["comm.algorithm must be one of"]),
    "lbfgs overlap": ({"optimizer": {"name": "lbfgs"}, "comm": {"mode": "overlap"}}, [],
                      ["lbfgs needs comm.mode sync"]),
    "lbfgs l1": ({"optimizer": {"name": "lbfgs"}, "model": {"alpha": 1, "l1_ratio": 0.5}}, [],
                 ["lbfgs handles only smooth"]),
    "step schedule": ({"optimizer": {"schedule": "step"}}, [], ["needs optimizer.step_size"]),
    "stall zero": ({"fault": {"stall_seconds": 0}}, [], ["fault.stall_seconds must be "
                                                        "greater than 0"]),
    "stall negative": ({"fault": {"stall_seconds": -5}}, [], ["fault.stall_seconds"]),
    "grace zero": ({"fault": {"stop_grace_seconds": 0}}, [], ["fault.stop_grace_seconds"]),
    "max bins": ({"model": {"kind": "hgbt_classifier"}, "hgbt": {"max_bins": 300}}, [],
                 ["hgbt.max_bins must be in [2, 255]"]),
    "hidden": ({"model": {"kind": "mlp_classifier", "hidden": [0]}}, [],
               ["model.hidden must be a non-empty list of positive integers"]),
    "kmeans overlap": ({"model": {"kind": "kmeans"}, "comm": {"mode": "overlap"}}, [],
                       ["has its own loop"]),
    "block rows": ({"train": {"block_rows": 8}}, [], ["train.block_rows is the block of "
                                                      "reproducible mode"]),
    "set bad value": ({}, ["--set", "optimizer.lr=quick"],
                      ["optimizer.lr must be a number", "(--set optimizer.lr=quick)"]),
    "set unknown key": ({}, ["--set", "train.epoch=3"], ["did you mean 'epochs'",
                                                          "--set train.epoch=3"]),
    "set no equals": ({}, ["--set", "optimizer.lr"], ["--set expects section.key=value"]),
    "set no section": ({}, ["--set", "lr=0.1"], ["--set expects section.key=value"]),
    "set bad yaml": ({}, ["--set", "model.hidden=[1,"], ["--set model.hidden: cannot parse"]),
    "set fraction": ({}, ["--set", "train.epochs=2.5"], ["train.epochs must be an integer",
                                                          "--set train.epochs=2.5"]),
    "no data": ({"data": None}, [], ["data.train is not set"]),
    "resume word": ({}, ["--resume", "sometimes"], ["resume 'sometimes': no such checkpoint",
                                                     "auto, never"]),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_a_bad_config_or_set_value(root, case):
    sections, args, expected = CONFIG_CASES[case]
    _check(root, _train(root, case.replace(" ", "_"), sections, args), expected, together=True)


RAW_CONFIGS = {
    "not yaml": ("model: {kind: [unclosed\n", ["is not valid YAML", "line"]),
    "a list": ("- a\n- b\n", ["must hold a mapping of sections"]),
    "section scalar": ("model: 3\n", ["section 'model' must be a mapping"]),
    "empty file": ("", ["data.train is not set"]),
}
NAMES_NO_FILE = {"empty file"}  # nothing in the file is wrong: the missing key is named


@pytest.mark.parametrize("case", sorted(RAW_CONFIGS))
def test_a_config_file_that_is_not_a_config(root, case):
    from mpiml.cli.train import parse_args, train

    text, expected = RAW_CONFIGS[case]
    path = _raw_config(root, case.replace(" ", "_"), text)
    expected = expected + ([] if case in NAMES_NO_FILE else [path])
    _check(root, lambda: train(parse_args([path, "--quiet"])), expected, together=True)


def test_a_missing_config_file(root):
    from mpiml.cli.train import parse_args, train

    missing = str(root / "configs" / "nope.yaml")
    _check(root, lambda: train(parse_args([missing, "--quiet"])),
           ["cannot read config file", missing], together=True)


DATA_CASES = {  # case: (data and model settings, expected fragments)
    "missing file": ({"data": {"train": "nope.h5"}}, ["nope.h5"]),
    "not hdf5": ({"data": {"train": "text.h5"}}, ["text.h5"]),
    "no X": ({"data": {"train": "no_x.h5"}}, ["no_x.h5", "'X'"]),
    "no y": ({"data": {"train": "no_y.h5"}}, ["no_y.h5", "'y'"]),
    "short y": ({"data": {"train": "short_y.h5"}}, ["short_y.h5", "113", "120"]),
    "1-D X": ({"data": {"train": "flat.h5"}}, ["flat.h5", "'X'"]),
    "string X": ({"data": {"train": "strings.h5"}}, ["strings.h5", "'X'"]),
    "NaN": ({"data": {"train": "nan.h5"}}, ["nan.h5", "nan", "row 100", "column 2"]),
    "inf": ({"data": {"train": "inf.h5"}}, ["inf.h5", "inf", "row 101", "column 1"]),
    "NaN label": ({"data": {"train": "nanlabel.h5"}}, ["nanlabel.h5", "'y'", "110"]),
    "fractional labels": ({"data": {"train": "frac.h5"}}, ["frac.h5", "non-integer label"]),
    "three classes binary": ({"data": {"train": "three.h5"}},
                             ["three.h5", "exactly 2 distinct labels; found 3"]),
    "one class binary": ({"data": {"train": "one.h5"}}, ["exactly 2 distinct labels; found 1"]),
    "one class softmax": ({"data": {"train": "one.h5"}, "model": {"kind": "softmax"}},
                          ["at least 2 distinct labels; found 1"]),
    "no rows": ({"data": {"train": "empty.h5"}}, ["empty.h5"]),
    "test width": ({"data": {"train": "test_width.h5", "test": "test_width.h5"}},
                   ["X_test has 3 features", "has 4"]),
    "test unseen label": ({"data": {"train": "test_unseen.h5", "test": "test_unseen.h5"}},
                          ["label 7.0 does not occur in the training labels (0.0, 1.0)"]),
    "float32 overflow": ({"data": {"train": "huge_values.h5", "dtype": "float32"}},
                         ["which overflows float32", "data.dtype"]),
    "overflowing features": ({"data": {"train": "huge_values.h5"}},
                             ["non-finite", "step 1"]),
    "overflow lbfgs": ({"data": {"train": "huge_values.h5"}, "optimizer": {"name": "lbfgs"}},
                       ["non-finite", "step 0"]),
    "kmeans too many clusters": ({"data": {"train": "few.h5"}, "model": {"kind": "kmeans"},
                                  "kmeans": {"n_clusters": 8}},
                                 ["kmeans.n_clusters=8 exceeds the 5 rows", "few.h5"]),
    "csr indptr": ({"data": {"train": "csr_indptr.h5"}}, ["csr_indptr.h5", "indptr"]),
    "csr column": ({"data": {"train": "csr_column.h5"}}, ["csr_column.h5", "column index 9"]),
    "csr no indptr": ({"data": {"train": "csr_no_indptr.h5"}}, ["csr_no_indptr.h5",
                                                                "indptr"]),
    "csr shape": ({"data": {"train": "csr_shape.h5"}}, ["csr_shape.h5"]),
    "csr NaN": ({"data": {"train": "csr_nan.h5"}}, ["csr_nan.h5", "nan"]),
    "csr huge shape": ({"data": {"train": "csr_huge_shape.h5"}}, ["csr_huge_shape.h5"]),
    "test file missing": ({"data": {"test": "nope_test.h5"}}, ["nope_test.h5"]),
    "test key missing": ({"data": {"test": "ok.h5", "test_x": "X_holdout"}}, ["X_holdout"]),
    "output is a file": ({"output": {"dir": "text.h5"}}, ["text.h5 is a file, not a "
                                                          "directory"]),
    "output under a file": ({"output": {"dir": "text.h5/run"}}, ["text.h5 is a file"]),
}


#: Values that are finite in the file but overflow the model's arithmetic are found in the first
#: step: the run has started (its log says so) and stops with the non-finite error.
FOUND_IN_A_STEP = {"overflowing features", "overflow lbfgs"}


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_a_bad_data_file_or_run_directory(root, case):
    sections, expected = DATA_CASES[case]
    sections = {name: {key: str(root / value) if key in ("train", "test", "dir") else value
                       for key, value in values.items()} for name, values in sections.items()}
    _check(root, _train(root, case.replace(" ", "_"), sections), expected, together=True,
           writes=case in FOUND_IN_A_STEP)


CHECKPOINT_CASES = {  # case: (resume file, settings, expected fragments)
    "corrupt": ("saved/corrupt.h5", {}, ["corrupt.h5"]),
    "empty": ("saved/empty.h5", {}, ["empty.h5"]),
    "not a checkpoint": ("ok.h5", {}, ["ok.h5"]),
    "missing": ("saved/nope.h5", {}, ["no such checkpoint file"]),
    "other kind": ("saved/good.h5", {"model": {"kind": "softmax"}}, ["model.kind"]),
    "other data": ("saved/good.h5", {"data": {"train": "inf.h5"}}, ["data"]),
}


@pytest.mark.parametrize("case", sorted(CHECKPOINT_CASES))
def test_a_checkpoint_that_cannot_be_resumed(root, case):
    path, sections, expected = CHECKPOINT_CASES[case]
    sections = {name: {key: str(root / value) if key == "train" else value
                       for key, value in values.items()} for name, values in sections.items()}
    attempt = _train(root, "resume_" + case.replace(" ", "_"), sections,
                     ["--resume", str(root / path)])
    _check(root, attempt, expected, together=True)


# -- predict: model files -------------------------------------------------------------------

PREDICT_CASES = {  # case: (model file, data file, expected fragments)
    "missing model": ("nope_model.h5", "ok.h5", ["nope_model.h5"]),
    "not a model": ("not_a_model.h5", "ok.h5", ["not_a_model.h5"]),
    "truncated model": ("truncated_model.h5", "ok.h5", ["truncated_model.h5"]),
    "feature count": ("runs/done/model.h5", "test_width.h5", ["expects 4"]),
    "data missing": ("runs/done/model.h5", "nope.h5", ["nope.h5"]),
    "data not hdf5": ("runs/done/model.h5", "text.h5", ["text.h5"]),
}


@pytest.mark.parametrize("case", sorted(PREDICT_CASES))
def test_predict_with_a_bad_model_or_data_file(root, case):
    from mpiml.cli.predict import predict

    model, data, expected = PREDICT_CASES[case]
    x = "X_test" if case == "feature count" else "X"
    out = root / "predictions" / f"{case}.h5"
    _check(root, lambda: predict(root / model, root / data, out, x=x), expected,
           together=False)


# -- estimators: arguments and arrays -------------------------------------------------------

def _rows():
    """This rank's share of a small binary problem."""
    from mpiml import row_range

    X, y = _problem()
    lo, hi = row_range(ROWS, COMM.rank, COMM.size)
    return X[lo:hi].copy(), y[lo:hi].copy()


def _last_rank(change):
    """``change(X, y)`` applied on the last rank only: a fault only one rank sees."""
    X, y = _rows()
    if COMM.rank == COMM.size - 1:
        X, y = change(X, y)
    return X, y


def _nan_on_last(X, y):
    X[0, 1] = np.nan
    return X, y


ESTIMATOR_CASES = {  # case: (estimator factory, fit arguments, expected fragments)
    "negative C": (lambda e: e.LogisticRegression(C=-1.0), _rows, ["C"]),
    "string C": (lambda e: e.LogisticRegression(C="big"), _rows, ["C"]),
    "zero max_iter": (lambda e: e.LogisticRegression(max_iter=0), _rows, ["max_iter"]),
    "NaN on one rank": (lambda e: e.LogisticRegression(),
                        lambda: _last_rank(_nan_on_last), ["NaN"]),
    "short y on one rank": (lambda e: e.LogisticRegression(),
                            lambda: _last_rank(lambda X, y: (X, y[:-1])), ["samples"]),
    "width on one rank": (lambda e: e.Ridge(),
                          lambda: _last_rank(lambda X, y: (X[:, :3], y)), ["feature"]),
    "3-D X": (lambda e: e.Ridge(), lambda: (np.zeros((3, 2, 2)), np.zeros(3)), ["2"]),
    "one class": (lambda e: e.LogisticRegression(),
                  lambda: (_rows()[0], np.zeros(len(_rows()[1]))), ["class"]),
    "zero clusters": (lambda e: e.KMeans(n_clusters=0), _rows, ["n_clusters"]),
    "too many clusters": (lambda e: e.KMeans(n_clusters=ROWS + 1), _rows, ["n_clusters"]),
    "bins": (lambda e: e.HistGradientBoostingClassifier(max_bins=1000), _rows, ["max_bins"]),
    "hidden zero": (lambda e: e.MLPClassifier(hidden_layer_sizes=(0,)), _rows,
                    ["hidden_layer_sizes"]),
    "string targets regression": (lambda e: e.LinearRegression(),
                                  lambda: (_rows()[0], np.array(["a"] * len(_rows()[1]))),
                                  ["string", "'a'"]),
}


#: Faults of one rank's rows that are no fault when that rank is the only one.
ONLY_AMONG_PEERS = {"width on one rank"}


@pytest.mark.parametrize("case", sorted(ESTIMATOR_CASES))
def test_an_estimator_given_bad_arguments_raises_on_every_rank(root, case):
    import mpiml.estimators as estimators

    factory, rows, expected = ESTIMATOR_CASES[case]

    def attempt():
        X, y = rows()
        factory(estimators).fit(X, y)

    if COMM.size == 1 and case in ONLY_AMONG_PEERS:
        attempt()  # one rank with 3 features is a valid data set
        return
    _check(root, attempt, expected, together=False)


def test_predicting_with_another_feature_count_raises_on_every_rank(root):
    import mpiml.estimators as estimators

    X, y = _rows()
    model = estimators.LogisticRegression().fit(X, y)
    _check(root, lambda: model.predict(X[:, :3]), ["feature"], together=False)


def test_loading_a_file_that_is_not_an_estimator_raises_on_every_rank(root):
    import mpiml.estimators as estimators

    _check(root, lambda: estimators.load(root / "not_a_model.h5"), ["not_a_model.h5"],
           together=False)


def test_the_matrix_holds_at_least_80_cases():
    count = (len(CONFIG_CASES) + len(RAW_CONFIGS) + 1 + len(DATA_CASES)
             + len(CHECKPOINT_CASES) + len(PREDICT_CASES) + len(ESTIMATOR_CASES) + 2)
    assert count >= 80, count
