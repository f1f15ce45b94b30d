"""``convert --test-fraction/--validation-fraction``: exact, seeded, streamed splits into the
names the config reads by default (X/y, X_test/y_test, X_val/y_val), dense and CSR, and a
training job on a converted file with only data.train and data.test set."""

import json
import tracemalloc

import h5py
import numpy as np
import pytest
import scipy.sparse
import yaml
from launch import run_mpi

from mpiml.cli.data import main
from mpiml.data import DataError, load_shard
from mpiml.data.tools import convert, splitting, writing
from mpiml.data.tools.splitting import split_assignments

SETS = (("X", "y"), ("X_test", "y_test"), ("X_val", "y_val"))


def dense_sets(path):
    with h5py.File(path, "r") as handle:
        return {x: (handle[x][()], handle[y][()]) for x, y in SETS if x in handle}


def csr_sets(path):
    out = {}
    with h5py.File(path, "r") as handle:
        for x, y in SETS:
            if x in handle:
                group = handle[x]
                matrix = scipy.sparse.csr_matrix(
                    (group["data"][()], group["indices"][()], group["indptr"][()]),
                    shape=tuple(group.attrs["shape"]))
                out[x] = (matrix.toarray(), handle[y][()])
    return out


def assert_partition(sets, X, y, counts):
    """The sets hold exactly the rows of (X, y), with their labels, each in the original order."""
    assert [len(sets[name][0]) for name in ("X", "X_test", "X_val") if name in sets] == \
        [count for count in counts if count]
    key = {row.tobytes(): position for position, row in enumerate(X)}
    seen = []
    for features, labels in sets.values():
        positions = [key[row.tobytes()] for row in features]
        assert positions == sorted(positions), "rows keep their order within a set"
        assert np.array_equal(y[positions], labels), "labels travel with their rows"
        seen += positions
    assert sorted(seen) == list(range(len(X)))


@pytest.fixture
def arrays(tmp_path):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((1003, 4))
    y = rng.integers(0, 3, 1003)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    return tmp_path / "d.npz", X, y


def test_dense_split_has_exact_counts_and_every_row_once(tmp_path, arrays):
    src, X, y = arrays
    convert(src, tmp_path / "s.h5", test_fraction=0.2, validation_fraction=0.1, split_seed=7)
    sets = dense_sets(tmp_path / "s.h5")
    assert_partition(sets, X, y, (702, 201, 100))
    with h5py.File(tmp_path / "s.h5", "r") as handle:
        attrs = dict(handle.attrs)
    assert attrs["test_fraction"] == 0.2 and attrs["split_seed"] == 7
    assert attrs["validation_fraction"] == 0.1 and attrs["format"] == "npz"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "scratch removed"


def test_split_depends_on_the_seed_only(tmp_path, arrays, monkeypatch):
    src, _, _ = arrays
    convert(src, tmp_path / "a.h5", test_fraction=0.3, split_seed=1)
    convert(src, tmp_path / "b.h5", test_fraction=0.3, split_seed=2)
    monkeypatch.setattr(writing, "WRITE_BYTES", 100)  # reads and writes of 3 rows
    convert(src, tmp_path / "c.h5", test_fraction=0.3, split_seed=1)
    a, b, c = (dense_sets(tmp_path / name) for name in ("a.h5", "b.h5", "c.h5"))
    assert not np.array_equal(a["X_test"][0], b["X_test"][0])
    for name in ("X", "X_test"):
        assert np.array_equal(a[name][0], c[name][0]) and np.array_equal(a[name][1], c[name][1])
    assert "X_val" not in a


def test_split_is_uniform_and_exact_across_blocks(monkeypatch):
    monkeypatch.setattr(splitting, "SPLIT_BLOCK", 7)  # many blocks, a partial last one
    n_rows, counts, seeds = 50, (35, 10, 5), 400
    hits = np.zeros((3, n_rows))
    for seed in range(seeds):
        sets = np.concatenate(list(split_assignments(counts, seed)))
        assert len(sets) == n_rows and np.bincount(sets, minlength=3).tolist() == list(counts)
        hits[sets, np.arange(n_rows)] += 1
    expected = np.array(counts)[:, None] / n_rows * seeds
    # each row is a Binomial(400, p) count: 5 standard deviations
    assert (np.abs(hits - expected) < 5 * np.sqrt(expected)).all()


def test_csr_split_keeps_rows_and_labels(tmp_path, monkeypatch):
    matrix = scipy.sparse.random(500, 30, density=0.1, format="csr", random_state=5)
    matrix.data = np.round(matrix.data * 10, 2) + 1
    dense = matrix.toarray()
    dense[:, 0] = np.arange(500)  # every row distinct, so rows can be found again
    matrix = scipy.sparse.csr_matrix(dense)
    y = np.arange(500) % 2
    src = tmp_path / "d.svm"
    src.write_text("".join(
        f"{label} " + " ".join(f"{c + 1}:{float(v)!r}" for c, v in
                               zip(row.indices, row.data, strict=True)) + "\n"
        for label, row in zip(y, matrix, strict=True)))
    monkeypatch.setattr(splitting, "WRITE_BYTES", 200)  # CSR reads of a few rows
    convert(src, tmp_path / "s.h5", test_fraction=0.25, validation_fraction=0.05, n_features=30)
    sets = csr_sets(tmp_path / "s.h5")
    assert_partition(sets, dense, y, (350, 125, 25))
    assert load_shard(tmp_path / "s.h5", x="X_val", y="y_val").X.shape == (25, 30)


def test_text_labels_keep_their_names_in_every_set(tmp_path):
    src = tmp_path / "iris.csv"
    src.write_text("a,b,species\n" + "".join(f"{i},{i % 5},{['setosa', 'virginica'][i % 2]}\n"
                                             for i in range(40)))
    convert(src, tmp_path / "s.h5", label_column="species", test_fraction=0.25)
    with h5py.File(tmp_path / "s.h5", "r") as handle:
        for name in ("y", "y_test"):
            assert list(handle[name].attrs["label_names"]) == ["setosa", "virginica"]
        assert list(handle.attrs["feature_names"]) == ["a", "b"]
        X_test, y_test = handle["X_test"][()], handle["y_test"][()]
    assert len(X_test) == 10 and np.array_equal(y_test, X_test[:, 0] % 2)


def test_split_memory_stays_bounded(tmp_path):
    X = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32,
                                  shape=(200_000, 100))
    X[:] = 1.0
    X.flush()
    del X
    tracemalloc.start()
    try:
        convert(tmp_path / "x.npy", tmp_path / "x.h5", test_fraction=0.2,
                validation_fraction=0.1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 80e6 / 3, f"peak {peak / 2**20:.1f} MB for an 80 MB array"


@pytest.mark.parametrize(("argv", "message"), [
    (["--test-fraction", "0.6", "--validation-fraction", "0.4"],
     "the test and validation fractions add up to 1, which leaves no training rows; their sum "
     "must be below 1"),
    (["--test-fraction", "0.5", "--validation-fraction", "0.4"],
     "d.csv: 2 rows cannot give 1 test and 1 validation rows and keep a training row"),
])
def test_cli_split_errors_are_one_line(tmp_path, capsys, argv, message):
    src = tmp_path / "d.csv"
    src.write_text("1,2,0\n3,4,1\n")
    assert main(["convert", str(src), str(tmp_path / "o.h5"), *argv]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m mpiml.data convert: error: ")
    assert message in err and not (tmp_path / "o.h5").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["d.csv"], "no scratch or temporary left"


@pytest.mark.parametrize("value", ["1", "-0.1", "nan", "x"])
def test_cli_fraction_out_of_range_is_a_usage_error(tmp_path, capsys, value):
    with pytest.raises(SystemExit) as info:
        main(["convert", "d.csv", str(tmp_path / "o.h5"), "--test-fraction", value])
    assert info.value.code == 2 and "--test-fraction" in capsys.readouterr().err


def test_split_with_too_few_rows_raises_data_error(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((1, 2)))
    with pytest.raises(DataError, match="1 rows cannot give 1 test and 0 validation rows"):
        convert(tmp_path / "x.npy", tmp_path / "x.h5", test_fraction=0.1)


def test_training_on_a_converted_split_needs_only_train_and_test(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((600, 5))
    y = (X @ rng.standard_normal(5) > 0).astype(int)
    src = tmp_path / "d.csv"
    src.write_text("".join(",".join([*map(repr, row), str(label)]) + "\n"
                           for row, label in zip(X.tolist(), y, strict=True)))
    out = tmp_path / "d.h5"
    assert main(["convert", str(src), str(out), "--test-fraction", "0.2",
                 "--validation-fraction", "0.1", "--split-seed", "3"]) == 0
    config = {"data": {"train": str(out), "test": str(out)}, "model": {"kind": "logistic"},
              "optimizer": {"name": "sgd", "lr": 0.5},
              "train": {"epochs": 3, "batch_size": 50},
              "output": {"dir": str(tmp_path / "run")}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    job = run_mpi(3, ["-m", "mpiml.train", str(tmp_path / "c.yaml"), "--quiet"], timeout=120)
    assert job.returncode == 0, job.output
    done = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert done["event"] == "done" and done["test"]["accuracy"] > 0.8, done
