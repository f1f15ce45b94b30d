"""``convert`` of Parquet: a file or a directory of files, streamed by row group, the label
column chosen as for CSV, and every bad input refused in one line naming the file, row and
column (pyarrow is in the ``test`` extra: these tests must run, never skip)."""

import subprocess
import sys

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from launch import ROOT, single_thread_env

from mpiml.cli.data import main
from mpiml.data import load_shard
from mpiml.data.tools import convert
from mpiml.data.tools.writing import WRITE_BYTES

ERROR = "python -m mpiml.data convert: error: "


def read(path, *names):
    with h5py.File(path, "r") as handle:
        return [handle[name][()] for name in names]


def write(path, columns, row_group_size=None):
    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)
    return path


def refused(capsys, src, *options):
    """The one stderr line of a failed command-line conversion; nothing is left beside src."""
    out = src.parent / "out.h5"
    assert main(["convert", str(src), str(out), *options]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(ERROR), err
    assert not out.exists() and not [p for p in out.parent.iterdir() if p.name.startswith(".")]
    return err[len(ERROR):].strip()


def test_round_trip_over_row_groups_with_mixed_numeric_columns(tmp_path):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(1000), rng.integers(-5, 5, 1000).astype(np.int32)
    flag, target = rng.random(1000) > 0.5, rng.standard_normal(1000)
    src = write(tmp_path / "d.parquet", {"a": a, "target": target, "b": b, "flag": flag},
                row_group_size=128)
    assert pq.ParquetFile(src).num_row_groups == 8
    convert(src, tmp_path / "d.h5", label_column="target")
    X, y = read(tmp_path / "d.h5", "X", "y")
    assert X.dtype == np.float64 and np.array_equal(X, np.c_[a, b, flag])
    assert np.array_equal(y, target)
    with h5py.File(tmp_path / "d.h5", "r") as handle:
        assert list(handle.attrs["feature_names"]) == ["a", "b", "flag"]
        assert handle.attrs["format"] == "parquet"


def test_float32_columns_stay_float32_and_the_last_column_is_the_label(tmp_path):
    X = np.arange(12, dtype=np.float32).reshape(4, 3)
    src = write(tmp_path / "d.pq", {"x0": X[:, 0], "x1": X[:, 1], "x2": X[:, 2],
                                    "y": [0, 1, 1, 0]})
    convert(src, tmp_path / "d.h5")
    got, y = read(tmp_path / "d.h5", "X", "y")
    assert got.dtype == np.float32 and np.array_equal(got, X) and np.array_equal(y, [0, 1, 1, 0])
    convert(src, tmp_path / "n.h5", label_column=None, dtype="float64")
    with h5py.File(tmp_path / "n.h5", "r") as handle:
        assert handle["X"].shape == (4, 4) and handle["X"].dtype == np.float64
        assert "y" not in handle


def test_text_labels_become_sorted_codes_across_row_groups(tmp_path):
    species = ["virginica", "virginica", "setosa", "versicolor", "setosa", "virginica"]
    src = write(tmp_path / "d.parquet", {"x": np.arange(6.0), "species": species},
                row_group_size=2)
    convert(src, tmp_path / "d.h5")
    (y,) = read(tmp_path / "d.h5", "y")
    assert np.array_equal(y, [2, 2, 0, 1, 0, 2])
    encoded = pa.array(species).dictionary_encode()
    write(tmp_path / "e.parquet", {"x": np.arange(6.0), "species": encoded}, row_group_size=4)
    convert(tmp_path / "e.parquet", tmp_path / "e.h5")
    with h5py.File(tmp_path / "e.h5", "r") as handle:
        assert np.array_equal(handle["y"][()], y)
        assert list(handle["y"].attrs["label_names"]) == ["setosa", "versicolor", "virginica"]


def test_a_directory_is_one_table_in_name_order(tmp_path):
    parts = tmp_path / "parts"
    parts.mkdir()
    for index in (2, 0, 1):
        write(parts / f"part-{index}.parquet", {"x": np.full(3, float(index)),
                                                "y": np.full(3, index)})
    (parts / "_SUCCESS").write_text("")
    (parts / "notes.txt").write_text("not data")
    assert main(["convert", str(parts), str(tmp_path / "d.h5"), "--test-fraction", "0.3"]) == 0
    X, X_test = read(tmp_path / "d.h5", "X", "X_test")
    assert len(X) == 6 and len(X_test) == 3
    assert load_shard(tmp_path / "d.h5", x="X_test", y="y_test").n_total == 3
    convert(parts, tmp_path / "all.h5")
    assert np.array_equal(read(tmp_path / "all.h5", "X")[0][:, 0], np.repeat([0.0, 1, 2], 3))


def test_memory_is_bounded_by_a_row_group(tmp_path):
    """40 row groups of 1 MB, 40 MB in all: Arrow's pool holds a few row groups, numpy a few
    writes (WRITE_BYTES) and row groups. Measured in a fresh process, whose Arrow pool peak
    starts at zero."""
    src = tmp_path / "big.parquet"
    schema = pa.schema([(f"f{i}", pa.float64()) for i in range(50)] + [("y", pa.int64())])
    rng = np.random.default_rng(0)
    with pq.ParquetWriter(src, schema) as writer:
        for _ in range(40):
            columns = {f"f{i}": rng.standard_normal(2500) for i in range(50)}
            writer.write_table(pa.table({**columns, "y": np.arange(2500)}, schema=schema))
    program = (
        "import sys, tracemalloc, pyarrow as pa\n"
        "from mpiml.data.tools import convert\n"
        "tracemalloc.start()\n"
        "convert(sys.argv[1], sys.argv[2])\n"
        "print(pa.default_memory_pool().max_memory(), tracemalloc.get_traced_memory()[1])\n")
    job = subprocess.run([sys.executable, "-c", program, str(src), str(tmp_path / "big.h5")],
                         capture_output=True, text=True, env=single_thread_env(), cwd=ROOT,
                         timeout=120)
    assert job.returncode == 0, job.stderr
    arrow_peak, numpy_peak = (int(value) for value in job.stdout.split())
    row_group = 2500 * 51 * 8
    assert arrow_peak < 4 * row_group, f"Arrow peak {arrow_peak / 2**20:.1f} MB"
    assert numpy_peak < 3 * WRITE_BYTES + 4 * row_group, f"numpy peak {numpy_peak / 2**20:.1f} MB"
    with h5py.File(tmp_path / "big.h5", "r") as handle:
        assert handle["X"].shape == (100_000, 50)


@pytest.mark.parametrize(("columns", "options", "message"), [
    ({"a": [1.0, 2.0], "city": ["x", "y"], "y": [0, 1]}, (),
     "d.parquet: column 'city' has type string; feature columns must be numeric (integer, "
     "floating point or boolean)"),
    ({"a": pa.array([1.0, None, 3.0]), "y": [0, 1, 0]}, (),
     "d.parquet, row 1, column 'a': missing value (null)"),
    ({"a": [1.0, float("nan")], "y": [0, 1]}, (),
     "d.parquet, row 1, column 'a': value nan is not a finite number"),
    ({"a": [1.0, 1e39], "y": [0, 1]}, ("--dtype", "float32"),
     "d.parquet, row 1, column 'a': value 1e+39 is out of the float32 range"),
    ({"a": [1.0, 2.0], "y": pa.array([0, None])}, (),
     "d.parquet, row 1, column 'y': missing label (null)"),
    ({"a": [1.0, 2.0], "y": ["cat", " "]}, (), "d.parquet, row 1, column 'y': empty label"),
    ({"a": [1.0, 2.0], "y": [0, 1]}, ("--label-column", "target"),
     "d.parquet: no column named 'target' in the header (a, y)"),
    ({"a": [1.0, 2.0], "y": [0, 1]}, ("--label-column", "5"),
     "d.parquet: label column 5 is out of range: the file has 2 columns"),
    ({"y": [0, 1]}, (), "d.parquet: no feature columns: the only column is the label 'y'"),
    ({"a": [1.0], "y": pa.array([b"\x00"], pa.binary())}, (),
     "d.parquet: label column 'y' has type binary; labels must be numbers or text"),
], ids=["text-feature", "null-feature", "nan-feature", "float32-overflow", "null-label",
        "empty-label", "no-such-label", "label-out-of-range", "no-features", "list-label"])
def test_bad_parquet_is_refused_in_one_line(tmp_path, capsys, columns, options, message):
    src = write(tmp_path / "d.parquet", columns)
    assert refused(capsys, src, *options) == f"{tmp_path}/{message}"


def test_files_that_are_not_parquet_and_mismatched_directories(tmp_path, capsys):
    (tmp_path / "text.parquet").write_text("a,b\n1,2\n")
    assert refused(capsys, tmp_path / "text.parquet").startswith(
        f"{tmp_path}/text.parquet: not a readable Parquet file: ")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert refused(capsys, empty) == f"{empty}: no .parquet or .pq files in the directory"
    parts = tmp_path / "parts"
    parts.mkdir()
    write(parts / "a.parquet", {"x": [1.0], "y": [0]})
    write(parts / "b.parquet", {"x": pa.array([1], pa.int32()), "y": [0]})
    assert refused(capsys, parts) == (f"{parts}/b.parquet: column 1 is 'x' int32 but in "
                                      "a.parquet it is 'x' double: every file must have the "
                                      "same columns")
    csv_dir = tmp_path / "csvs"
    csv_dir.mkdir()
    assert refused(capsys, csv_dir, "--format", "csv") == (
        f"{csv_dir} is a directory; only a directory of Parquet files converts")


def test_module_entry_point_refuses_without_traceback(tmp_path):
    src = write(tmp_path / "d.parquet", {"a": [1.0, 2.0], "city": ["x", "y"], "y": [0, 1]})
    job = subprocess.run([sys.executable, "-m", "mpiml.data", "convert", str(src),
                          str(tmp_path / "o.h5")], capture_output=True, text=True,
                         env=single_thread_env(), cwd=ROOT, timeout=120)
    assert job.returncode == 1 and job.stderr == (
        f"{ERROR}{src}: column 'city' has type string; feature columns must be numeric "
        "(integer, floating point or boolean)\n")


def test_missing_pyarrow_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    src = write(tmp_path / "d.parquet", {"a": [1.0, 2.0], "y": [0, 1]})
    for name in ("pyarrow", "pyarrow.parquet", "pyarrow.compute"):
        monkeypatch.setitem(sys.modules, name, None)
    assert main(["convert", str(src), str(tmp_path / "d.h5")]) == 1
    assert capsys.readouterr().err == (
        f"{ERROR}converting Parquet needs pyarrow, which is not installed "
        "(pip install -e '.[parquet]')\n")
    assert not (tmp_path / "d.h5").exists()


def test_importing_the_tools_does_not_import_pyarrow():
    job = subprocess.run([sys.executable, "-c", "import sys, mpiml.cli.data, mpiml.data.tools; "
                          "print('pyarrow' in sys.modules)"], capture_output=True, text=True,
                         env=single_thread_env(), cwd=ROOT, timeout=60)
    assert job.stdout.strip() == "False", job.stderr
