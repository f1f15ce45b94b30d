"""Every validation error of mpiml.data names the file, the data set and the global row.

Most run at one rank; the last ones start 3-rank jobs (tests/programs/load_shard_program.py) in
which only one rank's rows are bad, and check that the whole job ends quickly with the message.
"""

from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.sparse
from launch import run_mpi
from test_data import random_data, write_csr, write_dense

from mpiml.data import DataError, MissingDataError, load_shard

PROGRAM = str(Path(__file__).parent / "programs" / "load_shard_program.py")


@pytest.fixture
def dense_file(tmp_path):
    X, y = random_data()
    return write_dense(tmp_path / "data.h5", X, y)


def test_missing_file(tmp_path):
    path = str(tmp_path / "absent.h5")
    with pytest.raises(FileNotFoundError, match=f"{path}: no such file"):
        load_shard(path)


def test_missing_x_lists_what_the_file_holds(dense_file):
    with pytest.raises(MissingDataError, match=r"no data set 'X_train'.*X \(53, 7\) float64, "
                                               r"y \(53,\) int64") as info:
        load_shard(dense_file, x="X_train")
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    assert str(info.value).startswith(dense_file)


def test_missing_y_suggests_no_labels(dense_file):
    with pytest.raises(MissingDataError, match=r"no label data set 'labels' \(pass y=None"):
        load_shard(dense_file, y="labels")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.h5"
    h5py.File(path, "w").close()
    with pytest.raises(MissingDataError, match="the file holds no data sets"):
        load_shard(path)


def test_x_must_be_two_dimensional(tmp_path):
    path = write_dense(tmp_path / "d.h5", np.arange(5.0))
    with pytest.raises(DataError, match=r"data set 'X' must be 2-D .* shape \(5,\)"):
        load_shard(path, y=None)


def test_x_needs_columns(tmp_path):
    path = write_dense(tmp_path / "d.h5", np.zeros((5, 0)))
    with pytest.raises(DataError, match="no features"):
        load_shard(path, y=None)


def test_rows_and_labels_must_match(tmp_path):
    path = write_dense(tmp_path / "d.h5", np.zeros((5, 2)), np.zeros(4))
    with pytest.raises(DataError, match="'X' has 5 rows but 'y' has 4 labels"):
        load_shard(path)


def test_y_must_be_one_dimensional(tmp_path):
    path = write_dense(tmp_path / "d.h5", np.zeros((5, 2)), np.zeros((5, 1)))
    with pytest.raises(DataError, match=r"'y' must be 1-D"):
        load_shard(path)


@pytest.mark.parametrize("what", ["X", "y"])
def test_non_numeric_dtype(tmp_path, what):
    X, y = np.zeros((3, 2)), np.zeros(3)
    strings = np.array([b"a", b"b", b"c"])
    path = write_dense(tmp_path / "d.h5", strings.reshape(3, 1) if what == "X" else X,
                       strings if what == "y" else y)
    with pytest.raises(DataError, match=f"data set '{what}' has non-numeric dtype"):
        load_shard(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_first_non_finite_value_in_x_is_named_by_global_row_and_column(tmp_path, bad):
    X, y = random_data()
    X[40, 3] = bad
    X[45, 1] = np.nan
    path = write_dense(tmp_path / "d.h5", X, y)
    with pytest.raises(DataError, match=f"'X' holds {bad} at global row 40, column 3"):
        load_shard(path)


def test_non_finite_found_in_a_later_read_slice(tmp_path, monkeypatch):
    from mpiml.data import hdf5

    monkeypatch.setattr(hdf5, "CHUNK_BYTES", 7 * 8 * 10)  # ten rows per HDF5 read
    X, y = random_data()
    X[37, 0] = np.nan
    path = write_dense(tmp_path / "d.h5", X, y)
    with pytest.raises(DataError, match="global row 37, column 0"):
        load_shard(path)


def test_non_finite_label(tmp_path):
    X, _ = random_data()
    y = np.zeros(53)
    y[17] = np.nan
    path = write_dense(tmp_path / "d.h5", X, y)
    with pytest.raises(DataError, match="'y' holds nan at global row 17"):
        load_shard(path, task="regression")


def test_non_finite_in_csr_data(tmp_path):
    matrix = scipy.sparse.random(30, 10, density=0.3, format="csr", random_state=0)
    matrix.data[matrix.indptr[21]] = np.inf  # first value of row 21
    path = write_csr(tmp_path / "s.h5", matrix)
    column = matrix.indices[matrix.indptr[21]]
    with pytest.raises(DataError, match=f"CSR group 'X' holds inf at global row 21, column "
                                        f"{column}"):
        load_shard(path, y=None)


@pytest.mark.parametrize(("labels", "found"), [([0, 1, 2, 1], "found 3: 0, 1, 2"),
                                               ([4, 4, 4, 4], "found 1: 4")])
def test_binary_needs_exactly_two_classes(tmp_path, labels, found):
    path = write_dense(tmp_path / "d.h5", np.ones((4, 2)), np.array(labels))
    with pytest.raises(DataError, match=f"'binary' needs exactly 2 distinct labels; {found}"):
        load_shard(path, task="binary")


def test_multiclass_needs_two_classes(tmp_path):
    path = write_dense(tmp_path / "d.h5", np.ones((4, 2)), np.zeros(4))
    with pytest.raises(DataError, match="'multiclass' needs at least 2 distinct labels; found 1"):
        load_shard(path, task="multiclass")


def test_continuous_targets_are_not_classes(tmp_path):
    path = write_dense(tmp_path / "d.h5", np.ones((4, 2)), np.array([0.0, 1.0, 0.5, 1.0]))
    with pytest.raises(DataError, match=r"non-integer label 0.5 at global row 2; task "
                                        r"'multiclass' needs integer class labels"):
        load_shard(path, task="multiclass")


def test_no_rows(tmp_path):
    path = write_dense(tmp_path / "d.h5", np.zeros((0, 3)))
    with pytest.raises(DataError, match="'X' has no rows"):
        load_shard(path, y=None)


def test_truncated_file_is_named(dense_file):
    Path(dense_file).write_bytes(Path(dense_file).read_bytes()[:1500])
    with pytest.raises(OSError, match=f"{dense_file}: cannot open as HDF5.*truncated"):
        load_shard(dense_file)


def checksummed_file_with_a_damaged_last_chunk(path):
    """30 x 7 rows in chunks of 10 rows with Fletcher-32 checksums; one byte of rows 20..29
    flipped, so the file opens but reading those rows fails."""
    X, y = random_data(n=30)
    with h5py.File(path, "w") as handle:
        handle.create_dataset("X", data=X, chunks=(10, 7), fletcher32=True)
        handle["y"] = y
        info = handle["X"].id.get_chunk_info(2)
    with open(path, "r+b") as stream:
        stream.seek(info.byte_offset + 3)
        byte = stream.read(1)[0]
        stream.seek(-1, 1)
        stream.write(bytes([byte ^ 0xFF]))
    return str(path)


def test_damaged_data_names_the_rows_that_cannot_be_read(tmp_path):
    path = checksummed_file_with_a_damaged_last_chunk(tmp_path / "damaged.h5")
    with pytest.raises(OSError, match=f"{path}: cannot read global rows 0..29 of 'X' "
                                      r"\(truncated or corrupt file\?\)"):
        load_shard(path)


def test_not_an_hdf5_file(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("hello\n")
    with pytest.raises(OSError, match=f"{path}: cannot open as HDF5"):
        load_shard(path)


def csr_file(tmp_path, edit):
    """A valid CSR file, then ``edit(group)`` breaks it."""
    matrix = scipy.sparse.random(8, 5, density=0.5, format="csr", random_state=1)
    path = write_csr(tmp_path / "s.h5", matrix)
    with h5py.File(path, "a") as handle:
        edit(handle["X"])
    return path


def replace(group, name, values):
    del group[name]
    group[name] = values


@pytest.mark.parametrize(("edit", "error", "message"), [
    (lambda g: g.__delitem__("indptr"), MissingDataError,
     "CSR group 'X' has no data set indptr; a CSR group needs data, indices, indptr"),
    (lambda g: g.attrs.__delitem__("shape"), DataError, "needs an attribute 'shape'"),
    (lambda g: replace(g, "indptr", g["indptr"][:-1]), DataError,
     r"'indptr' has 8 entries but shape \(8, 5\) needs 9"),
    (lambda g: replace(g, "indices", g["indices"][:-1]), DataError,
     "'indices' has .* entries but 'data' has"),
    (lambda g: replace(g, "indptr", np.r_[g["indptr"][:-1], g["indptr"][-1] - 1]), DataError,
     "indptr must run from 0 to len"),
    (lambda g: replace(g, "indptr", np.r_[0, 5, 3, g["indptr"][3:]]), DataError,
     r"indptr decreases at global row 1 \(indptr\[2\] = 3 < indptr\[1\] = 5\)"),
    (lambda g: replace(g, "indices", np.full(len(g["indices"]), 5)), DataError,
     r"column index 5 at global row \d is outside 0..4"),
    (lambda g: replace(g, "indices", g["indices"][:].astype(np.float64)), DataError,
     "'indices' must hold integers"),
])
def test_broken_csr_groups(tmp_path, edit, error, message):
    path = csr_file(tmp_path, edit)
    with pytest.raises(error, match=message) as info:
        load_shard(path, y=None)
    assert str(info.value).startswith(f"{path}: CSR group 'X'")


@pytest.mark.parametrize(("arguments", "message"), [
    (dict(dtype=np.int32), "dtype must be float32, float64 or None"),
    (dict(task="ranking"), "unknown task 'ranking'"),
    (dict(task="binary", y=None), "task 'binary' needs labels"),
])
def test_bad_arguments(dense_file, arguments, message):
    with pytest.raises(ValueError, match=message):
        load_shard(dense_file, **arguments)


# -- whole jobs at 3 ranks: the job ends quickly, every rank agrees, one message ----------------

def run_three_ranks(path, *args):
    job = run_mpi(3, [PROGRAM, str(path), *args], timeout=60)
    assert not job.timed_out, f"job hung:\n{job.output}"
    return job


def test_nan_only_in_the_last_ranks_rows_ends_the_job(tmp_path):
    X, y = random_data(n=30)
    X[25, 2] = np.nan  # rows 20..29 belong to rank 2 of 3
    X[28, 0] = np.nan
    job = run_three_ranks(write_dense(tmp_path / "nan.h5", X, y))
    assert job.returncode != 0 and job.seconds < 20, job.output
    assert "rank 2: " in job.output and "'X' holds nan at global row 25, column 2" in job.output
    assert job.output.count("mpiml: error:") == 1, job.output


def test_first_bad_row_over_all_ranks_is_reported(tmp_path):
    X, y = random_data(n=30)
    X[27, 0] = np.inf  # rank 2
    X[12, 1] = np.nan  # rank 1: the smaller global row wins
    job = run_three_ranks(write_dense(tmp_path / "nan.h5", X, y))
    assert job.returncode != 0 and "global row 12, column 1" in job.output, job.output


def test_damaged_rows_of_one_rank_end_the_job(tmp_path):
    job = run_three_ranks(checksummed_file_with_a_damaged_last_chunk(tmp_path / "d.h5"))
    assert job.returncode != 0 and job.seconds < 20, job.output
    assert "rank 2: " in job.output and "cannot read global rows 20..29 of 'X'" in job.output


def test_more_ranks_than_rows_ends_the_job(tmp_path):
    job = run_three_ranks(write_dense(tmp_path / "two.h5", np.ones((2, 3)), np.zeros(2)))
    assert job.returncode != 0 and job.seconds < 20, job.output
    assert "'X' has 2 rows but the job has 3 ranks" in job.output
    assert "at most 2 ranks" in job.output


def test_binary_with_three_classes_spread_over_ranks(tmp_path):
    y = np.zeros(30, dtype=np.int64)
    y[5], y[29] = 1, 2  # the third class only on rank 2
    job = run_three_ranks(write_dense(tmp_path / "three.h5", np.ones((30, 2)), y), "binary")
    assert job.returncode != 0 and "found 3: 0, 1, 2" in job.output, job.output


def test_a_class_missing_on_one_rank_is_fine(tmp_path):
    y = np.zeros(30, dtype=np.int64)
    y[3], y[29] = 1, 7  # ranks 1 has only class 0; class 7 is only on rank 2
    job = run_three_ranks(write_dense(tmp_path / "ok.h5", np.ones((30, 2)), y), "multiclass")
    assert job.returncode == 0, job.output
    assert "loaded 30 rows on 3 ranks; classes [0 1 7]" in job.output
