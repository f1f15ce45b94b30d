"""``python -m mpiml.data convert`` on malformed input (issue 16, "nothing silently wrong"): one
line on stderr naming the file and the line, exit status 1 and no output file; CSV headers as
pandas writes them; LIBSVM read in chunks that split lines anywhere."""

import io
import subprocess
import sys

import h5py
import numpy as np
import pytest
import scipy.sparse
from launch import ROOT, single_thread_env

from mpiml.data.tools import convert, converters

ERROR = "python -m mpiml.data convert: error: "


def convert_cli(src, *options):
    """Run the command line on ``src``; returns the finished process."""
    return subprocess.run([sys.executable, "-m", "mpiml.data", "convert", str(src),
                           str(src.parent / "out.h5"), *options], capture_output=True,
                          text=True, env=single_thread_env(), cwd=ROOT, timeout=120)


def assert_refused(src, message, *options):
    """Exit 1 with the one line ``<src><message>`` (a prefix of it when ``message`` ends in
    ...), and nothing but ``src`` in its directory: no output, no temporary file."""
    job = convert_cli(src, *options)
    assert job.returncode == 1, job.stderr
    expected = f"{ERROR}{src}{message}"
    if expected.endswith("..."):
        assert job.stderr.startswith(expected[:-3]) and job.stderr.count("\n") == 1, job.stderr
    else:
        assert job.stderr == expected + "\n"
    assert [path.name for path in src.parent.iterdir()] == [src.name]


def converted(src, *options):
    """Convert through the command line, which must succeed; returns X (dense), y and the
    feature names (None without a header)."""
    job = convert_cli(src, *options)
    assert job.returncode == 0 and job.stderr == "", job.stderr
    with h5py.File(src.parent / "out.h5", "r") as handle:
        X = handle["X"]
        X = X[()] if isinstance(X, h5py.Dataset) else scipy.sparse.csr_matrix(
            (X["data"][()], X["indices"][()], X["indptr"][()]),
            shape=tuple(X.attrs["shape"])).toarray()
        names = handle.attrs.get("feature_names")
        return X, handle["y"][()], None if names is None else list(names)


# -- LIBSVM ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "message", "options"), [
    # two malformed lines whose token counts offset each other
    ("1 1:2:3\n0 4 5:6\n", ", line 1: expected index:value, got '1:2:3'", ()),
    ("1 1:2\n0 4 5:6\n", ", line 2: expected index:value, got '4'", ()),
    ("1 1:2:3 4\n", ", line 1: expected index:value, got '1:2:3'", ()),
    ("1 3:1 :2\n", ", line 1: expected index:value, got ':2'", ()),
    ("1 1:nan\n", ", line 1: value 'nan' of feature 1 is not a finite number", ()),
    ("inf 1:2\n", ", line 1: label 'inf' is not a finite number", ()),
    ("1 1:2\n\n1 4:1 2:1\n", ", line 3: feature indices must be sorted and unique (2 after 4)",
     ()),
    ("1 1e1:2\n", ", line 1: feature index '1e1' is not an integer", ()),
    ("1 9007199254740993:1\n", ", line 1: feature index 9007199254740993 is too large", ()),
    ("1 1:1e39\n", ", line 1: value '1e39' of feature 1 is out of the float32 range",
     ("--dtype", "float32")),
], ids=["offsetting-lines", "missing-colon", "offset-in-a-line", "empty-index", "nan-value",
        "inf-label", "decreasing", "index-not-integer", "index-too-large", "float32-overflow"])
def test_libsvm_bad_line_is_named(tmp_path, text, message, options):
    src = tmp_path / "data.svm"
    src.write_text(text)
    assert_refused(src, message, *options)


def test_libsvm_line_number_past_the_first_chunks(tmp_path):
    src = tmp_path / "data.svm"
    lines = ["1 1:0.5 3:0.25"] * 300_000  # 4.5 MB: several chunks
    lines[250_000] = "0 1:0.5 3"
    src.write_text("\n".join(lines) + "\n")
    assert_refused(src, ", line 250001: expected index:value, got '3'")


@pytest.mark.parametrize("write_bytes", [1, 7, 64, 1 << 22])
def test_libsvm_chunks_split_lines_anywhere(tmp_path, monkeypatch, write_bytes):
    from sklearn.datasets import load_svmlight_file

    text = ("# made by hand\r\n1 1:0.5 3:2\r\n\n-1 qid:4 2:1.5  # trailing\n+1\n"
            "2\t1:-3e-2\t4:7 \n  0 2:1\n3 1:1")  # CRLF, tabs, blank, no final newline
    src = tmp_path / "d.svm"
    src.write_bytes(text.encode())
    monkeypatch.setattr(converters, "WRITE_BYTES", write_bytes)
    convert(src, tmp_path / "d.h5")
    X_ref, y_ref = load_svmlight_file(str(src))
    with h5py.File(tmp_path / "d.h5", "r") as handle:
        group = handle["X"]
        X = scipy.sparse.csr_matrix((group["data"][()], group["indices"][()],
                                     group["indptr"][()]), shape=tuple(group.attrs["shape"]))
        y = handle["y"][()]
    assert X.shape == X_ref.shape == (6, 4)
    assert np.array_equal(X.toarray(), X_ref.toarray()) and np.array_equal(y, y_ref)


# -- CSV -------------------------------------------------------------------------------------

def test_csv_pandas_header_with_integer_names_is_a_header(tmp_path):
    src = tmp_path / "d.csv"  # pd.DataFrame(X).assign(y=y).to_csv(index=False)
    src.write_text("0,1,2,y\n0.5,1.5,2.5,0\n1,2,3,1\n")
    X, y, names = converted(src)
    assert np.array_equal(X, [[0.5, 1.5, 2.5], [1, 2, 3]]) and np.array_equal(y, [0, 1])
    assert names == ["0", "1", "2"]


def test_csv_integer_names_above_decimals_are_a_header(tmp_path):
    src = tmp_path / "d.csv"  # pd.DataFrame(np.c_[X, y]).to_csv(index=False)
    src.write_text("0,1,2,3\n0.5,1.5,2.5,1.0\n1.0,2.0,3.0,0.0\n")
    X, y, names = converted(src)
    assert np.array_equal(X, [[0.5, 1.5, 2.5], [1, 2, 3]]) and np.array_equal(y, [1, 0])
    assert names == ["0", "1", "2"]


def test_csv_integer_names_above_integers_are_ambiguous(tmp_path):
    src = tmp_path / "d.csv"
    src.write_text("0,1,2,3\n4,5,6,1\n")
    assert_refused(src, ", line 1: '0,1,2,3' may be column names (as pandas writes them) or "
                        "data; pass --header yes or --header no")
    X, y, names = converted(src, "--header", "no")
    assert np.array_equal(X, [[0, 1, 2], [4, 5, 6]]) and np.array_equal(y, [3, 1])
    assert names is None


def test_csv_text_labels_with_and_without_a_header(tmp_path):
    src = tmp_path / "d.csv"
    src.write_text("5.1,3.5,setosa\n4.9,3.0,versicolor\n")
    X, y, names = converted(src)
    assert np.array_equal(X, [[5.1, 3.5], [4.9, 3.0]]) and np.array_equal(y, [0, 1])
    assert names is None
    (tmp_path / "out.h5").unlink()
    src.write_text("0,1,species\n5.1,3.5,setosa\n4.9,3.0,versicolor\n")
    X, y, names = converted(src)
    assert np.array_equal(X, [[5.1, 3.5], [4.9, 3.0]]) and np.array_equal(y, [0, 1])
    assert names == ["0", "1"]


@pytest.mark.parametrize(("text", "message", "options"), [
    ("a,b,y\n1,2,0\n1,2\n", ", line 3: 2 fields where the header has 3", ()),
    ("0,1,2,y\n1,2,3,0\n1,2,3\n", ", line 3: 3 fields where the header has 4", ()),
    ("0,1,2,y\n1,2,3\n", ", line 2: 3 fields where the first line has 4", ()),
    (",0,1,y\n0,0.5,1.5,1\n", ", line 1, column 1: no name in the header (pandas writes none "
                              "above its index); pass --header yes to read the column as a "
                              "feature", ()),
    ("0,1,2,y\n1,2,3,0\n1,x,3,1\n", ", line 3, column 2: value 'x' is not a number", ()),
    ("1,inf,0\n", ", line 1, column 2: value 'inf' is not a finite number", ()),
    ("1,2,nan\n", ", line 1, column 3: label 'nan' is not a finite number", ()),
    ("1,1e39,0\n", ", line 1, column 2: value '1e39' is out of the float32 range",
     ("--dtype", "float32")),
    ("a,b,y\n1,2,cat\n3,4, \n", ", line 3, column 3: empty label", ()),
    ("1,2,0\n" + "x" * 200_000 + ",1,0\n", ", line 2: field larger than field limit (131072)",
     ()),
], ids=["count-after-header", "count-after-pandas-header", "count-below-pandas-names",
        "pandas-index-column", "text-feature", "inf-value",
        "nan-label", "float32-overflow", "empty-text-label", "csv-module-error"])
def test_csv_bad_line_is_named(tmp_path, text, message, options):
    src = tmp_path / "data.csv"
    src.write_text(text)
    assert_refused(src, message, *options)


# -- .npy and .npz ---------------------------------------------------------------------------

def npy_bytes(array):
    stream = io.BytesIO()
    np.save(stream, array)
    return stream.getvalue()


def corrupt_member(path):
    """Flip bytes inside the first member's data: its CRC no longer matches."""
    data = bytearray(path.read_bytes())
    data[200:210] = bytes(10)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(("name", "make", "message", "options"), [
    ("a.npz", lambda p: p.write_bytes(npy_bytes(np.ones((3, 2)))),
     ": not an .npz file (it is an .npy file: pass --format npy)", ()),
    ("a.npz", lambda p: np.savez(p, X=np.ones((3, 2))),
     ": not an .npy file (it is an .npz file: pass --format npz)", ("--format", "npy")),
    ("a.npy", lambda p: p.write_text("1 2 3\n"), ": not an .npy file", ()),
    ("a.npz", lambda p: p.write_bytes(b"PK\x03\x04cut short"),
     ": not a readable .npz file: File is not a zip file", ()),
    ("a.npz", lambda p: (np.savez(p, X=np.ones((100, 5))), corrupt_member(p)),
     ": array 'X' is not readable: Bad CRC-32 for file 'X.npy'", ()),
    ("a.npz", lambda p: np.savez(p, X=np.array([[1, None]], dtype=object)),
     ": array 'X' is not readable: Object arrays cannot be loaded when allow_pickle=False", ()),
    ("a.npy", lambda p: np.save(p, np.ones((0, 3))), ": no data rows", ()),
    ("a.npz", lambda p: np.savez(p, X=np.full((2, 2), 1e39)),
     ": X row 0 has values out of the float32 range", ("--dtype", "float32")),
    ("a.npz", lambda p: np.savez(p, format=np.array("csr"), shape=np.array([2, 3]),
                                 data=np.ones(2), indices=np.array([0, 5]),
                                 indptr=np.array([0, 1, 2])),
     ": not a valid sparse matrix: ...", ()),
], ids=["npy-as-npz", "npz-as-npy", "text-as-npy", "truncated-zip", "bad-crc", "object-array",
        "no-rows", "float32-overflow", "sparse-index-out-of-range"])
def test_numpy_bad_file_is_named(tmp_path, name, make, message, options):
    src = tmp_path / name
    make(src)
    assert_refused(src, message, *options)
