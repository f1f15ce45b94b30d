"""The ``python -m mpiml.data`` tools: synth, convert, inspect, example, and the CLI's errors."""

import subprocess
import sys
import tracemalloc

import h5py
import numpy as np
import pytest
import scipy.sparse
from launch import ROOT, single_thread_env

from mpiml.cli.data import main
from mpiml.data import DataError, load_shard
from mpiml.data.tools import convert, converters, inspect, synth, write_example


def read(path, *names):
    with h5py.File(path, "r") as handle:
        return [handle[name][()] for name in names]


def read_csr(path, name="X"):
    with h5py.File(path, "r") as handle:
        group = handle[name]
        return scipy.sparse.csr_matrix(
            (group["data"][()], group["indices"][()], group["indptr"][()]),
            shape=tuple(group.attrs["shape"]))


# -- synth -----------------------------------------------------------------------------------

SMALL = dict(rows=3000, features=12, seed=4, test_rows=700)


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression", "blobs"])
def test_synth_does_not_depend_on_the_write_chunk(tmp_path, task):
    synth(tmp_path / "a.h5", task, **SMALL)
    synth(tmp_path / "b.h5", task, chunk_rows=77, **SMALL)
    synth(tmp_path / "c.h5", task, chunk_rows=100_000, **SMALL)
    names = ("X", "y", "X_test", "y_test")
    first = read(tmp_path / "a.h5", *names)
    for other in ("b.h5", "c.h5"):
        for name, expected, got in zip(names, first, read(tmp_path / other, *names), strict=True):
            assert np.array_equal(expected, got), f"{other}: {name} differs"
    assert first[0].shape == (3000, 12) and first[2].shape == (700, 12)


def test_synth_depends_on_the_seed_and_float32_is_float64_rounded(tmp_path):
    synth(tmp_path / "a.h5", "binary", **SMALL)
    synth(tmp_path / "b.h5", "binary", **dict(SMALL, seed=5))
    synth(tmp_path / "c.h5", "binary", dtype="float64", **SMALL)
    (a,), (b,) = read(tmp_path / "a.h5", "X"), read(tmp_path / "b.h5", "X")
    (c,) = read(tmp_path / "c.h5", "X")
    assert not np.array_equal(a, b)
    assert a.dtype == np.float32 and c.dtype == np.float64
    assert np.array_equal(a, c.astype(np.float32))


def test_synth_sparse_writes_csr_at_the_density(tmp_path):
    synth(tmp_path / "s.h5", "multiclass", rows=4000, features=50, density=0.05, classes=4,
          seed=1, dtype="float64")
    synth(tmp_path / "t.h5", "multiclass", rows=4000, features=50, density=0.05, classes=4,
          seed=1, dtype="float64", chunk_rows=333)
    matrix = read_csr(tmp_path / "s.h5")
    assert matrix.shape == (4000, 50) and abs(matrix.nnz / 200_000 - 0.05) < 0.003
    assert (read_csr(tmp_path / "t.h5") != matrix).nnz == 0
    shard = load_shard(tmp_path / "s.h5", task="multiclass")
    assert scipy.sparse.isspmatrix_csr(shard.X) and shard.n_classes == 4
    (coef, intercept, y) = read(tmp_path / "s.h5", "hidden_model/coef",
                                "hidden_model/intercept", "y")
    agreement = np.mean(np.argmax(matrix @ coef.T + intercept, axis=1) == y)
    assert agreement > 0.6, "labels should follow the hidden model"


def test_synth_labels_follow_the_hidden_model_without_noise(tmp_path):
    for task in ("regression", "binary", "blobs"):
        synth(tmp_path / f"{task}.h5", task, rows=2000, features=8, seed=2, noise=0.0,
              dtype="float64", informative=3)
    X, y, coef, intercept = read(tmp_path / "regression.h5", "X", "y", "hidden_model/coef",
                                 "hidden_model/intercept")
    assert np.count_nonzero(coef) == 3
    np.testing.assert_allclose(y, X @ coef[0] + intercept[0])
    X, y, coef, intercept = read(tmp_path / "binary.h5", "X", "y", "hidden_model/coef",
                                 "hidden_model/intercept")
    assert np.array_equal(y, (X @ coef[0] + intercept[0] > 0).astype(np.int64))
    X, y, centers = read(tmp_path / "blobs.h5", "X", "y", "hidden_model/centers")
    assert np.array_equal(X, centers[y]) and set(np.unique(y)) == {0, 1, 2}


def test_synth_blobs_are_the_true_clusters(tmp_path):
    synth(tmp_path / "b.h5", "blobs", rows=3000, features=5, classes=4, noise=0.3, seed=9)
    X, y, centers = read(tmp_path / "b.h5", "X", "y", "hidden_model/centers")
    nearest = np.argmin(((X[:, None, :] - centers[None]) ** 2).sum(axis=2), axis=1)
    assert np.mean(nearest == y) > 0.99


def test_synth_writes_its_arguments_as_attributes(tmp_path):
    synth(tmp_path / "a.h5", "multiclass", classes=5, **SMALL)
    with h5py.File(tmp_path / "a.h5", "r") as handle:
        attrs = dict(handle.attrs)
    assert attrs["task"] == "multiclass" and attrs["n_classes"] == 5 and attrs["seed"] == 4
    assert attrs["rows"] == 3000 and attrs["test_rows"] == 700 and attrs["layout"] == "dense"
    report = inspect(tmp_path / "a.h5")
    assert "task = multiclass" in report and "n_classes = 5" in report
    assert "X: (3000, 12) float32, 0 NaN/Inf" in report


def test_synth_memory_stays_bounded(tmp_path):
    tracemalloc.start()
    try:
        synth(tmp_path / "m.h5", "binary", rows=200_000, features=100, seed=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    array_bytes = 200_000 * 100 * 4
    assert peak < array_bytes / 5, f"peak {peak / 2**20:.1f} MB for an 80 MB array"


@pytest.mark.parametrize(("arguments", "message"), [
    (dict(task="binary", classes=3), "task 'binary' has 2 classes"),
    (dict(task="multiclass", classes=1), "classes >= 2"),
    (dict(task="regression", classes=3), "classes has no meaning"),
    (dict(task="blobs", density=0.5), "blobs are dense"),
    (dict(task="binary", density=0.0), r"density must be in \(0, 1\]"),
    (dict(task="binary", informative=13), "informative must be between 1 and features"),
    (dict(task="binary", noise=-1.0), "noise must be"),
    (dict(task="clusters"), "unknown task"),
])
def test_synth_rejects_bad_arguments(tmp_path, arguments, message):
    with pytest.raises(ValueError, match=message):
        synth(tmp_path / "x.h5", rows=10, features=12, seed=0, **arguments)
    assert not (tmp_path / "x.h5").exists()


# -- convert ---------------------------------------------------------------------------------

@pytest.mark.parametrize("zero_based", [True, False])
def test_libsvm_round_trip_equals_scikit_learn(tmp_path, zero_based):
    from sklearn.datasets import dump_svmlight_file, load_svmlight_file

    rng = np.random.default_rng(0)
    X = scipy.sparse.random(300, 39, density=0.1, format="csr", random_state=2)
    X.data = np.round(X.data * 100 - 50, 3)
    # the last feature occurs, so scikit-learn infers the same width
    X = scipy.sparse.hstack([X, np.ones((300, 1))], format="csr")
    y = rng.integers(0, 3, 300).astype(float)
    src = tmp_path / "d.svm"
    dump_svmlight_file(X, y, str(src), zero_based=zero_based, comment="made by a test",
                       query_id=np.repeat(np.arange(30), 10))
    convert(src, tmp_path / "d.h5")
    X_ref, y_ref = load_svmlight_file(str(src))
    got = read_csr(tmp_path / "d.h5")
    assert got.shape == X_ref.shape == (300, 40)
    assert np.array_equal(got.toarray(), X_ref.toarray())
    assert np.array_equal(read(tmp_path / "d.h5", "y")[0], y_ref)
    assert np.array_equal(load_shard(tmp_path / "d.h5").X.toarray(), X.toarray())


def test_libsvm_details(tmp_path):
    src = tmp_path / "d.libsvm"
    src.write_text("# a comment line\n1 1:0.5 3:2\n\n-1 qid:4 2:1.5  # trailing\n+1\n")
    convert(src, tmp_path / "d.h5", n_features=6, dtype="float32")
    matrix = read_csr(tmp_path / "d.h5")
    assert matrix.shape == (3, 6) and matrix.dtype == np.float32
    assert np.array_equal(matrix.toarray(), [[0.5, 0, 2, 0, 0, 0], [0, 1.5, 0, 0, 0, 0],
                                             [0] * 6])
    assert np.array_equal(read(tmp_path / "d.h5", "y")[0], [1, -1, 1])
    convert(src, tmp_path / "z.h5", zero_based="yes")
    assert read_csr(tmp_path / "z.h5").shape == (3, 4)


@pytest.mark.parametrize(("text", "message"), [
    ("1 1:2 1:3\n", "line 1: feature indices must be sorted and unique"),
    ("1 1:2\n0 2:x\n", "line 2: value 'x' of feature 2 is not a number"),
    ("1,2 1:2\n", "line 1: label '1,2' is not a number"),
    ("1 1.5:2\n", "line 1: feature index '1.5' is not an integer"),
    ("1 -1:2\n", "line 1: negative feature index -1"),
    ("\n# nothing\n", "no data rows"),
])
def test_libsvm_errors_name_the_line(tmp_path, text, message):
    src = tmp_path / "bad.svm"
    src.write_text(text)
    with pytest.raises(DataError, match=message):
        convert(src, tmp_path / "bad.h5")
    assert not (tmp_path / "bad.h5").exists(), "a failed conversion leaves no output"


def test_libsvm_width_checks(tmp_path):
    src = tmp_path / "d.svm"
    src.write_text("1 0:1 4:2\n")
    with pytest.raises(DataError, match="needs n_features >= 5"):
        convert(src, tmp_path / "a.h5", n_features=3)
    with pytest.raises(DataError, match="feature index 0 in a file read as one-based"):
        convert(src, tmp_path / "b.h5", zero_based="no")


def write_csv(path, X, y, header=None, delimiter=","):
    lines = [] if header is None else [delimiter.join(header)]
    lines += [delimiter.join([*(f"{v!r}" for v in row), str(label)])
              for row, label in zip(X.tolist(), y, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_round_trip_with_header_and_label_by_name(tmp_path, monkeypatch):
    monkeypatch.setattr(converters, "WRITE_BYTES", 200)  # many small chunks
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((500, 3)), rng.integers(0, 2, 500)
    src = write_csv(tmp_path / "d.csv", X, y, header=["a", "b", "c", "target"])
    lines = src.read_text().splitlines()
    # move the label to the front to exercise --label-column NAME
    src.write_text("\n".join(",".join([row.split(",")[-1], *row.split(",")[:-1]])
                             for row in lines) + "\n")
    convert(src, tmp_path / "d.h5", label_column="target")
    got_X, got_y = read(tmp_path / "d.h5", "X", "y")
    assert np.array_equal(got_X, X) and np.array_equal(got_y, y)
    with h5py.File(tmp_path / "d.h5", "r") as handle:
        assert list(handle.attrs["feature_names"]) == ["a", "b", "c"]


def test_csv_without_header_tsv_and_no_labels(tmp_path):
    X = np.arange(12.0).reshape(4, 3)
    src = write_csv(tmp_path / "d.tsv", X, [1, 0, 1, 1], delimiter="\t")
    convert(src, tmp_path / "d.h5")
    got_X, got_y = read(tmp_path / "d.h5", "X", "y")
    assert np.array_equal(got_X, X) and np.array_equal(got_y, [1, 0, 1, 1])
    convert(src, tmp_path / "n.h5", label_column=None, header="no", dtype="float32")
    with h5py.File(tmp_path / "n.h5", "r") as handle:
        assert handle["X"].shape == (4, 4) and "y" not in handle


def test_csv_text_labels_become_sorted_codes(tmp_path):
    src = tmp_path / "iris.csv"
    src.write_text('sepal,petal,species\n1,2,"virginica"\n3,4,setosa\n5,6,virginica\n'
                   "7,8,versicolor\n")
    convert(src, tmp_path / "d.h5", label_column="species")
    X, y = read(tmp_path / "d.h5", "X", "y")
    assert np.array_equal(X, [[1, 2], [3, 4], [5, 6], [7, 8]])
    assert np.array_equal(y, [2, 0, 2, 1])
    with h5py.File(tmp_path / "d.h5", "r") as handle:
        assert list(handle["y"].attrs["label_names"]) == ["setosa", "versicolor", "virginica"]
    assert "setosa=0: 1, versicolor=1: 1, virginica=2: 2" in inspect(tmp_path / "d.h5")


@pytest.mark.parametrize(("text", "message"), [
    ("1,2,0\n3,4\n", "line 2: 2 fields where the first line has 3"),
    ("a,b,y\n1,2,0\n\n3,x,1\n", "line 4, column 2: value 'x' is not a number"),
    ("1,2,0\n3,4,yes\n", "line 2, column 3: label 'yes' is not a number"),
    ("a,b,y\n", "no data rows"),
])
def test_csv_errors_name_the_line(tmp_path, text, message):
    src = tmp_path / "bad.csv"
    src.write_text(text)
    with pytest.raises(DataError, match=message):
        convert(src, tmp_path / "bad.h5")


def test_csv_label_column_errors(tmp_path):
    src = write_csv(tmp_path / "d.csv", np.ones((2, 2)), [0, 1], header=["a", "b", "y"])
    with pytest.raises(DataError, match=r"no column named 'label' in the header \(a, b, y\)"):
        convert(src, tmp_path / "a.h5", label_column="label")
    with pytest.raises(DataError, match="label column 5 is out of range"):
        convert(src, tmp_path / "b.h5", label_column=5)


def test_npz_and_npy_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    X, y = rng.standard_normal((50, 4)).astype(np.float32), rng.integers(0, 3, 50)
    np.savez(tmp_path / "d.npz", features=X, labels=y)
    convert(tmp_path / "d.npz", tmp_path / "d.h5", x_key="features", y_key="labels")
    got_X, got_y = read(tmp_path / "d.h5", "X", "y")
    assert got_X.dtype == np.float32 and np.array_equal(got_X, X) and np.array_equal(got_y, y)
    np.save(tmp_path / "x.npy", X.astype(np.int16))
    convert(tmp_path / "x.npy", tmp_path / "x.h5")
    (got,) = read(tmp_path / "x.h5", "X")
    assert got.dtype == np.float64 and np.array_equal(got, X.astype(np.int16))
    with pytest.raises(DataError, match="no array 'X'; the file holds features, labels"):
        convert(tmp_path / "d.npz", tmp_path / "e.h5")


def test_npz_from_scipy_sparse(tmp_path):
    matrix = scipy.sparse.random(30, 9, density=0.3, format="csr", random_state=4)
    scipy.sparse.save_npz(tmp_path / "m.npz", matrix)
    convert(tmp_path / "m.npz", tmp_path / "m.h5")
    assert np.array_equal(read_csr(tmp_path / "m.h5").toarray(), matrix.toarray())


def test_convert_input_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.csv: no such file"):
        convert(tmp_path / "absent.csv", tmp_path / "o.h5")
    (tmp_path / "data.bin").write_bytes(b"\x00")
    with pytest.raises(ValueError, match="cannot tell the format .* pass --format"):
        convert(tmp_path / "data.bin", tmp_path / "o.h5")
    (tmp_path / "latin.csv").write_bytes(b"1,2,\xff\n")
    with pytest.raises(DataError, match="latin.csv: not a csv text file"):
        convert(tmp_path / "latin.csv", tmp_path / "o.h5")


# -- inspect and example ---------------------------------------------------------------------

def test_inspect_reports_nan_and_labels(tmp_path):
    X = np.ones((10, 2))
    X[3, 1] = np.nan
    X[5, 0] = np.inf
    with h5py.File(tmp_path / "d.h5", "w") as handle:
        handle["X"], handle["y"], handle["target"] = X, np.r_[np.zeros(7), np.ones(3)], \
            np.linspace(0, 1, 10)
    report = inspect(tmp_path / "d.h5")
    assert "X: (10, 2) float64, 2 NaN/Inf" in report
    assert "y: (10,) float64, 0 NaN/Inf, labels 0: 7, 1: 3" in report
    assert "target: (10,) float64, 0 NaN/Inf, values 0..1" in report


def test_example_is_a_fixed_split_of_bundled_data(tmp_path):
    write_example("breast_cancer", tmp_path / "bc.h5")
    X, y, X_test, y_test = read(tmp_path / "bc.h5", "X", "y", "X_test", "y_test")
    assert X.shape == (426, 30) and X_test.shape == (143, 30) and set(np.unique(y)) == {0, 1}
    write_example("breast_cancer", tmp_path / "again.h5")
    assert np.array_equal(read(tmp_path / "again.h5", "X_test")[0], X_test)
    assert "task = binary" in inspect(tmp_path / "bc.h5")
    shard = load_shard(tmp_path / "bc.h5", task="binary")
    assert shard.n_total == 426 and shard.n_classes == 2


@pytest.mark.parametrize(("name", "task", "n_features"), [("digits", "multiclass", 64),
                                                          ("diabetes", "regression", 10),
                                                          ("wine", "multiclass", 13)])
def test_other_examples(tmp_path, name, task, n_features):
    write_example(name, tmp_path / "e.h5")
    shard = load_shard(tmp_path / "e.h5", task=task)
    assert shard.n_features == n_features


def test_example_without_scikit_learn_fails_clearly(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    assert main(["example", "wine", str(tmp_path / "w.h5")]) == 1
    assert "needs scikit-learn, which is not installed" in capsys.readouterr().err
    assert not (tmp_path / "w.h5").exists()


# -- command line ----------------------------------------------------------------------------

def test_cli_synth_then_inspect(tmp_path, capsys):
    out = str(tmp_path / "c.h5")
    assert main(["synth", "--task", "regression", "--rows", "100", "--features", "3",
                 "--seed", "1", "--dtype", "float64", out]) == 0
    assert main(["inspect", out]) == 0
    captured = capsys.readouterr()
    assert "X: (100, 3) float64" in captured.out and captured.err == ""  # quiet when not a tty
    assert main(["synth", "--task", "regression", "--rows", "10", "--features", "3",
                 "--seed", "1", out]) == 1
    assert "exists; pass --force to overwrite it" in capsys.readouterr().err
    assert main(["synth", "--task", "regression", "--rows", "10", "--features", "3",
                 "--seed", "1", "--force", out]) == 0


@pytest.mark.parametrize("argv", [
    ["synth", "--task", "binary", "--rows", "0", "--features", "3", "--seed", "1", "o.h5"],
    ["synth", "--task", "binary", "--rows", "10", "--features", "3", "o.h5"],
    ["synth", "--task", "binary", "--rows", "10", "--features", "3", "--seed", "1",
     "--noise", "nan", "o.h5"],
    ["example", "iris", "o.h5"],
    ["frobnicate"],
])
def test_cli_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and "error:" in capsys.readouterr().err


def test_cli_convert_same_file_is_refused(tmp_path, capsys):
    src = write_csv(tmp_path / "d.csv", np.ones((2, 2)), [0, 1])
    assert main(["convert", str(src), str(src), "--force"]) == 1
    assert "output and input are the same file" in capsys.readouterr().err


def test_module_entry_point_reports_user_errors_without_traceback(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2,0\n1,x,1\n")
    job = subprocess.run([sys.executable, "-m", "mpiml.data", "convert", str(bad),
                          str(tmp_path / "o.h5")], capture_output=True, text=True,
                         env=single_thread_env(), cwd=ROOT, timeout=60)
    assert job.returncode == 1
    assert job.stderr == (f"python -m mpiml.data convert: error: {bad}, line 2, column 2: "
                          f"value 'x' is not a number\n")


def test_synth_creates_a_missing_output_directory(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "new" / "dir" / "d.h5"
    job = subprocess.run([sys.executable, "-m", "mpiml.data", "synth", "--task", "binary",
                          "--rows", "50", "--features", "3", "--seed", "0", str(out)],
                         capture_output=True, text=True)
    assert job.returncode == 0, job.stderr
    assert out.exists()
