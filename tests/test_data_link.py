"""``python -m mpiml.data link``: several files as one data set of HDF5 virtual data sets, read
by hyperslab like any other; relative and absolute paths; every refusal in one line; a training
job on a linked file. tests/mpi/test_link_mpi.py reads it at several rank counts."""

import json
import shutil

import h5py
import numpy as np
import pytest
import yaml
from datasets import make_problem, write_csr, write_dense
from launch import run_mpi

from mpiml.cli.data import main
from mpiml.data import DataError, load_shard
from mpiml.data.tools import inspect, link

ERROR = "python -m mpiml.data link: error: "


def parts(directory, sizes=(40, 25, 61), d=4, dtype=np.float32, test=True):
    """Dense files of ``sizes`` rows (binary labels, X_test in each); returns paths, X, y."""
    directory.mkdir(parents=True, exist_ok=True)
    paths, Xs, ys = [], [], []
    for index, n in enumerate(sizes):
        X, y = make_problem("binary", n + 10, d, seed=index)
        X = X.astype(dtype)
        path = directory / f"part{index}.h5"
        write_dense(path, X[:n], y[:n], *((X[n:], y[n:]) if test else ()))
        paths.append(path)
        Xs.append(X[:n])
        ys.append(y[:n])
    return paths, np.concatenate(Xs), np.concatenate(ys)


def refused(capsys, *argv):
    assert main(["link", *map(str, argv)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(ERROR), err
    return err[len(ERROR):].strip()


def test_linked_file_reads_as_the_concatenated_rows(tmp_path):
    paths, X, y = parts(tmp_path / "parts")
    notes = link(tmp_path / "all.h5", paths)
    assert notes == []
    shard = load_shard(tmp_path / "all.h5", task="binary")
    assert shard.X.dtype == np.float32 and np.array_equal(shard.X, X)
    assert np.array_equal(shard.classes[shard.y], y)
    test = load_shard(tmp_path / "all.h5", x="X_test", y="y_test")
    assert test.n_total == 30
    with h5py.File(tmp_path / "all.h5", "r") as handle:
        assert handle["X"].is_virtual and handle["y"].dtype == np.float64
        assert list(handle.attrs["sources"]) == [f"parts/part{i}.h5" for i in range(3)]
    report = inspect(tmp_path / "all.h5")
    assert "X: (126, 4) float32, linked from 3 files, 0 NaN/Inf" in report
    assert tmp_path.stat().st_size and [p.name for p in tmp_path.iterdir()
                                        if p.name.startswith(".")] == []


def test_relative_paths_follow_the_linked_file(tmp_path, monkeypatch):
    paths, X, _ = parts(tmp_path / "data" / "parts")
    (tmp_path / "data" / "out").mkdir()
    monkeypatch.chdir(tmp_path / "data")
    assert main(["link", "out/all.h5", *(f"parts/{p.name}" for p in paths)]) == 0
    monkeypatch.chdir(tmp_path)  # another working directory, a relative name of the file
    assert np.array_equal(load_shard("data/out/all.h5").X, X)
    shutil.move(tmp_path / "data", tmp_path / "moved")  # the tree moves together
    assert np.array_equal(load_shard(tmp_path / "moved" / "out" / "all.h5").X, X)
    assert "MISSING" not in inspect(tmp_path / "moved" / "out" / "all.h5")


def test_file_names_with_percent_signs_and_spaces(tmp_path):
    """HDF5 reads '%' in a virtual source's file name as a format specifier unless escaped."""
    paths, X, _ = parts(tmp_path / "100% data", sizes=(3, 4))
    renamed = [path.rename(path.with_name(f"a%b {index}%%.h5"))
               for index, path in enumerate(paths)]
    link(tmp_path / "all.h5", renamed)
    assert np.array_equal(load_shard(tmp_path / "all.h5").X, X)
    assert "MISSING" not in inspect(tmp_path / "all.h5")
    renamed[0].unlink()
    assert "(MISSING: 100% data/a%b 0%%.h5;" in inspect(tmp_path / "all.h5")


def test_absolute_paths_let_the_linked_file_move_alone(tmp_path):
    paths, X, _ = parts(tmp_path / "parts")
    assert main(["link", "--absolute", str(tmp_path / "a.h5"), *map(str, paths)]) == 0
    assert main(["link", str(tmp_path / "r.h5"), *map(str, paths)]) == 0
    (tmp_path / "elsewhere").mkdir()
    for name in ("a.h5", "r.h5"):
        shutil.move(tmp_path / name, tmp_path / "elsewhere" / name)
    assert np.array_equal(load_shard(tmp_path / "elsewhere" / "a.h5").X, X)
    report = inspect(tmp_path / "elsewhere" / "r.h5")
    assert ("X: (126, 4) float32, linked from 3 files (MISSING: parts/part0.h5, "
            "parts/part1.h5, parts/part2.h5; they read as NaN)") in report


def test_a_missing_input_is_never_read_as_data(tmp_path):
    paths, _, _ = parts(tmp_path / "parts")
    link(tmp_path / "all.h5", paths)
    paths[1].unlink()
    with pytest.raises(DataError, match="'X' is linked to inputs that do not exist: "
                                        "parts/part1.h5"):
        load_shard(tmp_path / "all.h5", task="binary")
    # an input lost after that check reads as NaN, which the loader's value scan refuses
    with h5py.File(tmp_path / "all.h5") as linked:
        assert np.isnan(linked["X"][40:41]).all() and np.isnan(linked["y"][40])


def test_sets_only_some_inputs_hold_are_left_out_with_a_note(tmp_path, capsys):
    paths, _, _ = parts(tmp_path / "a", sizes=(5, 6))
    more, _, _ = parts(tmp_path / "b", sizes=(7,), test=False)
    with h5py.File(paths[0], "a") as handle:
        handle["X_val"] = np.ones((2, 4), np.float32)
    assert main(["link", str(tmp_path / "all.h5"), *map(str, paths + more)]) == 0
    assert capsys.readouterr().err == (
        f"python -m mpiml.data link: note: X_test: not in {more[0]}; not linked\n"
        f"python -m mpiml.data link: note: X_val: not in {paths[1]}; not linked\n")
    with h5py.File(tmp_path / "all.h5", "r") as handle:
        assert sorted(handle) == ["X", "y"] and handle["X"].shape == (18, 4)


def test_text_labels_link_when_their_names_agree(tmp_path, capsys):
    paths, _, _ = parts(tmp_path / "parts", sizes=(5, 6), test=False)
    for path, names in zip(paths, (["cat", "dog"], ["cat", "dog"]), strict=True):
        with h5py.File(path, "a") as handle:
            handle["y"].attrs["label_names"] = names
            handle.attrs["feature_names"] = ["a", "b", "c", "d"]
    link(tmp_path / "ok.h5", paths)
    with h5py.File(tmp_path / "ok.h5", "r") as handle:
        assert list(handle["y"].attrs["label_names"]) == ["cat", "dog"]
        assert list(handle.attrs["feature_names"]) == ["a", "b", "c", "d"]
    with h5py.File(paths[1], "a") as handle:
        handle["y"].attrs["label_names"] = ["dog", "eel"]
    assert refused(capsys, tmp_path / "bad.h5", *paths) == (
        f"{paths[1]}: the text labels of 'y' differ from those of {paths[0]} (attribute "
        "label_names), so their codes would mean different classes")


def test_every_refusal_is_one_line_and_writes_nothing(tmp_path, capsys):
    paths, _, _ = parts(tmp_path / "parts", sizes=(5, 6))
    wide, _, _ = parts(tmp_path / "wide", sizes=(5,), d=5)
    double, _, _ = parts(tmp_path / "double", sizes=(5,), dtype=np.float64)
    X, y = make_problem("binary", 8, 4)
    write_csr(tmp_path / "csr.h5", X, y)
    write_dense(tmp_path / "short_y.h5", X.astype(np.float32), y[:7])
    with h5py.File(tmp_path / "no_x.h5", "w") as handle:
        handle["features"] = X
    (tmp_path / "text.h5").write_text("not HDF5")
    out = tmp_path / "out.h5"
    cases = [
        ((out, paths[0], wide[0]), f"{wide[0]}: 'X' has 5 features but {paths[0]} has 4"),
        ((out, paths[0], double[0]),
         f"{double[0]}: 'X' has dtype float64 but {paths[0]} has float32"),
        ((out, paths[0], tmp_path / "csr.h5"),
         f"{tmp_path}/csr.h5: 'X' is a CSR group; link joins dense data sets only (a virtual "
         "data set cannot offset each input's indptr)"),
        ((out, tmp_path / "short_y.h5"),
         f"{tmp_path}/short_y.h5: 'X' has 8 rows but 'y' has 7 labels"),
        ((out, paths[0], tmp_path / "no_x.h5"),
         f"{tmp_path}/no_x.h5: no data set 'X'; the file holds: features (8, 4) float64"),
        ((out, paths[0], tmp_path / "absent.h5"), f"{tmp_path}/absent.h5: no such file"),
        ((paths[0], paths[0], paths[1]), f"{paths[0]} exists; pass --force to overwrite it"),
        (("--force", paths[0], paths[0], paths[1]),
         f"{paths[0]}: the output is also an input"),
    ]
    for argv, message in cases:
        assert refused(capsys, *argv) == message, argv
    assert refused(capsys, out, tmp_path / "text.h5").startswith(
        f"{tmp_path}/text.h5: cannot open as HDF5 (truncated, corrupt or not an HDF5 file)")
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    with pytest.raises(SystemExit) as info:
        main(["link", str(out)])
    assert info.value.code == 2


def test_training_on_a_linked_file(tmp_path):
    paths, _, _ = parts(tmp_path / "parts", sizes=(300, 251, 202), d=5)
    assert main(["link", str(tmp_path / "all.h5"), *map(str, paths)]) == 0
    config = {"data": {"train": "all.h5", "test": "all.h5"}, "model": {"kind": "logistic"},
              "optimizer": {"name": "sgd", "lr": 0.5},
              "train": {"epochs": 2, "batch_size": 64}, "output": {"dir": "run"}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    job = run_mpi(3, ["-m", "mpiml.train", "c.yaml", "--quiet"], timeout=120, cwd=tmp_path)
    assert job.returncode == 0, job.output
    done = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert done["event"] == "done" and done["test"]["accuracy"] > 0.7, done
