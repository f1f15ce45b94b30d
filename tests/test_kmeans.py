"""Serial tests of K-Means (one rank, MPI.COMM_SELF): Lloyd against scikit-learn from the same
initial centres, dense and CSR; k-means++ quality; random and given initial centres, the
best of n_init, centres from a file; empty-cluster reseeding; bit-exact resume (also in the
middle of n_init fits, and of a killed job); the mini-batch variant against Lloyd; the
estimator's init and n_init."""

from __future__ import annotations

import json
import warnings

import h5py
import numpy as np
import pytest
import scipy.sparse as sp
import yaml
from launch import run_mpi, single_thread_env
from mpi4py import MPI
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs

import mpiml.estimators as E
from mpiml.comm import Reducer
from mpiml.fit.kmeans import fit_kmeans
from mpiml.fit.kmeans_init import random_rows, read_init_file
from mpiml.fit.layout import RowLayout

SELF = MPI.COMM_SELF


def blobs(n=601, d=5, k=4, seed=0, sparse_fraction=0.0):
    X, _ = make_blobs(n_samples=n, n_features=d, centers=k, cluster_std=2.0, random_state=seed)
    if sparse_fraction:
        X[np.random.default_rng(seed).random(X.shape) < sparse_fraction] = 0.0
    return X


@pytest.mark.parametrize("layout", ["dense", "csr"])
def test_lloyd_matches_scikit_learn_from_the_same_centres(layout):
    X = blobs(sparse_fraction=0.3 if layout == "csr" else 0.0)
    init = X[[3, 50, 100, 200, 400]]
    data = sp.csr_matrix(X) if layout == "csr" else X
    ours = fit_kmeans(data, 5, SELF, init=init, max_iter=100, tol=1e-6)
    reference = KMeans(n_clusters=5, init=init, n_init=1, algorithm="lloyd", tol=1e-6,
                       max_iter=100).fit(data)
    assert ours.converged and ours.n_iter == reference.n_iter_
    np.testing.assert_allclose(ours.centers, reference.cluster_centers_, rtol=1e-6, atol=1e-9)
    assert ours.inertia == pytest.approx(reference.inertia_, rel=1e-6)
    np.testing.assert_array_equal(ours.labels, reference.labels_)


def test_max_iter_stops_without_convergence_and_warns():
    X = blobs()
    init = X[:6]
    with pytest.warns(RuntimeWarning, match="did not converge"):
        result = fit_kmeans(X, 6, SELF, init=init, max_iter=2, tol=0.0)
    reference = KMeans(n_clusters=6, init=init, n_init=1, algorithm="lloyd", tol=0.0,
                       max_iter=2).fit(X)
    assert result.n_iter == 2 and not result.converged
    np.testing.assert_allclose(result.centers, reference.cluster_centers_, rtol=1e-6)
    assert result.inertia == pytest.approx(reference.inertia_, rel=1e-6)


def test_kmeans_plusplus_is_seeded_and_finds_the_blobs():
    X = blobs(k=4, seed=3)
    first = fit_kmeans(X, 4, SELF, seed=5)
    again = fit_kmeans(X, 4, SELF, seed=5)
    np.testing.assert_array_equal(first.centers, again.centers)
    best = min(KMeans(n_clusters=4, n_init=1, random_state=s).fit(X).inertia_ for s in range(5))
    assert first.inertia <= best * 1.01


def test_kmeans_plusplus_with_fewer_distinct_rows_than_clusters():
    X = np.repeat(np.eye(3), 5, axis=0)  # 3 distinct rows, 4 clusters: one draw has no weight
    result = fit_kmeans(X, 4, SELF, seed=0, max_iter=5)
    assert result.inertia == 0.0 and np.isfinite(result.centers).all()


@pytest.mark.filterwarnings("ignore:K-Means did not converge")
def test_empty_cluster_is_reseeded_on_the_farthest_row():
    X = blobs(n=200)
    init = X[[0, 0, 7]]  # a duplicate centre: cluster 1 gets no rows in the first iteration
    states = []
    result = fit_kmeans(X, 3, SELF, init=init, max_iter=1, tol=0.0, on_iteration=states.append)
    distances = ((X[:, None, :] - init[None, [0, 2], :]) ** 2).sum(axis=2).min(axis=1)
    np.testing.assert_array_equal(states[0]["centers"][1], X[np.argmax(distances)])
    assert len(np.unique(result.labels)) == 3


@pytest.mark.filterwarnings("ignore:K-Means did not converge")
@pytest.mark.parametrize("batch_size", [None, 64])
@pytest.mark.parametrize("layout", ["dense", "csr"])
def test_resume_from_a_captured_state_is_bit_exact(layout, batch_size):
    X = blobs(sparse_fraction=0.2)
    data = sp.csr_matrix(X) if layout == "csr" else X
    options = dict(max_iter=30, tol=1e-8, seed=2, batch_size=batch_size)
    whole = fit_kmeans(data, 5, SELF, **options)
    states = []
    fit_kmeans(data, 5, SELF, **dict(options, max_iter=1 if batch_size else 3),
               on_iteration=states.append)
    resumed = fit_kmeans(data, 5, SELF, start=states[2], **options)
    assert resumed.n_iter == whole.n_iter and resumed.converged == whole.converged
    assert np.array_equal(resumed.centers, whole.centers) and resumed.inertia == whole.inertia
    np.testing.assert_array_equal(resumed.labels, whole.labels)


def test_minibatch_inertia_is_close_to_lloyd():
    X = blobs(n=3001, k=6, seed=4)
    lloyd = fit_kmeans(X, 6, SELF, seed=0)
    minibatch = fit_kmeans(X, 6, SELF, seed=0, batch_size=256, max_iter=50)
    assert minibatch.converged
    assert abs(minibatch.inertia - lloyd.inertia) <= 0.03 * lloyd.inertia, (minibatch.inertia,
                                                                           lloyd.inertia)


def test_float32_rows_are_accepted():
    X = blobs()
    wide = fit_kmeans(X, 3, SELF, init=X[:3])
    narrow = fit_kmeans(X.astype(np.float32), 3, SELF, init=X[:3])
    np.testing.assert_allclose(narrow.centers, wide.centers, rtol=1e-5)


@pytest.mark.parametrize("bad, match", [
    (dict(n_clusters=0), "n_clusters"),
    (dict(n_clusters=1000), "exceeds"),
    (dict(init="farthest"), "init must be 'k-means\\+\\+', 'random'"),
    (dict(init=np.zeros((2, 2))), r"shape \(3, 5\)"),
    (dict(init=np.full((3, 5), np.nan)), "init centres must be finite; row 0 column 0 is nan"),
    (dict(n_init=0), "n_init"),
    (dict(batch_size=0), "batch_size"),
    (dict(tol=-1.0), "tol"),
    (dict(n_total=7), "n_total=7"),
    (dict(row_offset=4), "row_offset"),
])
def test_bad_arguments_are_named(bad, match):
    arguments = {"n_clusters": 3, **bad}
    with pytest.raises(ValueError, match=match):
        fit_kmeans(blobs(n=100), comm=SELF, **arguments)


# -- init and n_init ---------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:K-Means did not converge")
@pytest.mark.parametrize("layout", ["dense", "csr"])
def test_random_init_starts_from_distinct_rows_drawn_by_the_seed(layout):
    X = blobs(n=200, sparse_fraction=0.3 if layout == "csr" else 0.0)
    data = sp.csr_matrix(X) if layout == "csr" else X
    chosen = np.random.default_rng(11).choice(200, size=7, replace=False)
    assert len(set(chosen.tolist())) == 7
    centers = random_rows(data, RowLayout(data, SELF), 7, 11, Reducer(SELF))
    np.testing.assert_array_equal(centers, X[chosen])
    drawn = fit_kmeans(data, 7, SELF, init="random", seed=11, max_iter=2, tol=0.0)
    given = fit_kmeans(data, 7, SELF, init=X[chosen], max_iter=2, tol=0.0)
    assert np.array_equal(drawn.centers, given.centers)


@pytest.mark.parametrize("init", ["k-means++", "random"])
def test_n_init_keeps_the_fit_with_the_lowest_inertia(init):
    X = blobs(k=6)
    singles = [fit_kmeans(X, 6, SELF, init=init, seed=seed) for seed in range(4)]
    inertias = [single.inertia for single in singles]
    assert max(inertias) > 1.1 * min(inertias)  # a seed that ends in a worse local optimum
    assert inertias[0] > min(inertias)  # and the n_init=1 fit is one of them
    kept = int(np.argmin(inertias))
    best = fit_kmeans(X, 6, SELF, init=init, seed=0, n_init=4)
    assert best.initialisation == kept and best.inertia == inertias[kept]
    assert best.n_iter == singles[kept].n_iter and best.converged
    assert np.array_equal(best.centers, singles[kept].centers)
    np.testing.assert_array_equal(best.labels, singles[kept].labels)


def test_given_centres_make_one_fit_and_stay_unmodified():
    X = blobs()
    init = X[[3, 50, 100, 200]]
    init.setflags(write=False)
    once = fit_kmeans(X, 4, SELF, init=init)
    with pytest.warns(RuntimeWarning, match="one fit instead of n_init=3"):
        several = fit_kmeans(X, 4, SELF, init=init, n_init=3)
    assert np.array_equal(several.centers, once.centers) and several.n_iter == once.n_iter
    np.testing.assert_array_equal(init, X[[3, 50, 100, 200]])


@pytest.mark.filterwarnings("ignore:K-Means did not converge")
@pytest.mark.parametrize("batch_size", [None, 64])
@pytest.mark.parametrize("where", ["in the first fit", "at the end of the first fit",
                                   "in the last fit"])
def test_resume_in_the_middle_of_n_init_fits_is_bit_exact(batch_size, where):
    X = blobs(k=6)
    options = dict(init="random", n_init=3, tol=0.0, seed=2, batch_size=batch_size,
                   max_iter=4 if batch_size is None else 1)
    states = []
    whole = fit_kmeans(X, 6, SELF, on_iteration=states.append, **options)
    fit_of = [state["initialisation"] for state in states]
    index = {"in the first fit": 1, "at the end of the first fit": fit_of.index(1) - 1,
             "in the last fit": fit_of.index(2) + 1}[where]
    assert ("best_centers" in states[index]) == (where == "in the last fit")
    resumed = fit_kmeans(X, 6, SELF, start=states[index], **options)
    assert (resumed.initialisation, resumed.n_iter, resumed.converged, resumed.inertia) == (
        whole.initialisation, whole.n_iter, whole.converged, whole.inertia)
    assert np.array_equal(resumed.centers, whole.centers)
    np.testing.assert_array_equal(resumed.labels, whole.labels)


@pytest.mark.filterwarnings("ignore:K-Means did not converge")
def test_a_resume_refuses_other_n_init_or_max_iter_than_its_finished_fits():
    X = blobs(k=6)
    options = dict(init="random", n_init=2, max_iter=3, tol=0.0)
    states = []
    fit_kmeans(X, 6, SELF, on_iteration=states.append, **options)
    second = next(state for state in states if state["initialisation"] == 1)
    with pytest.raises(ValueError, match="the 1 finished fit.* used max_iter=3: resume with "):
        fit_kmeans(X, 6, SELF, start=second, **dict(options, max_iter=5))
    with pytest.raises(ValueError, match="saved by a fit with n_init=2; this one has n_init=3"):
        fit_kmeans(X, 6, SELF, start=second, **dict(options, n_init=3))
    fit_kmeans(X, 6, SELF, start=states[0], **dict(options, max_iter=5))  # no fit finished yet


def write_centers(path, centers, name="centers"):
    with h5py.File(path, "a") as out:
        out[name] = centers


def test_init_file_holds_the_centres_by_data_set_name(tmp_path):
    centers = blobs()[[3, 50, 100, 200]]
    write_centers(tmp_path / "c.h5", centers)
    write_centers(tmp_path / "model.h5", 2 * centers, name="model/centers")
    np.testing.assert_array_equal(read_init_file(str(tmp_path / "c.h5"), 4, 5, SELF), centers)
    np.testing.assert_array_equal(
        read_init_file(f"{tmp_path / 'model.h5'}:model/centers", 4, 5, SELF), 2 * centers)


SHAPE = "(4, 5) (n_clusters x n_features)"
BAD_INIT_FILES = {  # case: (what the file holds, the error's type and text)
    "no file": (None, FileNotFoundError,
                f"no such file (expected a data set 'centers' of shape {SHAPE})"),
    "no data set": ({"other": np.zeros((4, 5))}, ValueError,
                    f"no data set 'centers' (expected a data set 'centers' of shape {SHAPE})"),
    "too few centres": ({"centers": np.zeros((3, 5))}, ValueError,
                        f"data set 'centers' has shape (3, 5); expected {SHAPE}"),
    "transposed": ({"centers": np.zeros((5, 4))}, ValueError,
                   f"data set 'centers' has shape (5, 4); expected {SHAPE}"),
    "not finite": ({"centers": np.where(np.eye(4, 5, k=-2) > 0, np.inf, 0.0)}, ValueError,
                   "data set 'centers' row 2 column 0 is inf; centres must be finite"),
    "text": ({"centers": np.full((4, 5), b"a")}, ValueError, "data set 'centers' holds |S1"),
    "not HDF5": ("text", OSError, "cannot be read as HDF5"),
}


@pytest.mark.parametrize("case", sorted(BAD_INIT_FILES))
def test_a_bad_init_file_is_one_line_naming_the_file(tmp_path, case):
    content, error, expected = BAD_INIT_FILES[case]
    path = tmp_path / "centres.h5"
    if isinstance(content, dict):
        for name, values in content.items():
            write_centers(path, values, name=name)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(error) as raised:
        read_init_file(str(path), 4, 5, SELF)
    message = str(raised.value)
    assert message.startswith(f"kmeans.init_file {path}: ") and expected in message, message
    assert "\n" not in message


# -- through python -m mpiml.train (3 ranks) ------------------------------------------------------


@pytest.fixture(scope="module")
def blob_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("blobs") / "blobs.h5"
    X = blobs(n=1201, d=4, k=6, seed=4)
    with h5py.File(path, "w") as out:
        out["X"] = X
    return path


def train_job(directory, blob_file, kmeans, fault=None, checkpoint=None):
    """Run ``python -m mpiml.train`` on 3 ranks with these ``kmeans`` settings."""
    raw = {"data": {"train": str(blob_file)}, "model": {"kind": "kmeans"}, "kmeans": kmeans,
           "train": {"seed": 3, "log_every": 1},
           "checkpoint": checkpoint or {"every_seconds": None},
           "output": {"dir": str(directory / "run")}}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.yaml").write_text(yaml.safe_dump(raw))
    env = single_thread_env(**({"MPIML_FAULT": fault} if fault else {}))
    return run_mpi(3, ["-m", "mpiml.train", str(directory / "config.yaml"), "--quiet"],
                   timeout=120, env=env)


def saved_centers(directory) -> np.ndarray:
    with h5py.File(directory / "run" / "model.h5") as model:
        return model["model/centers"][()]


def records(directory) -> list[dict]:
    return [json.loads(line)
            for line in (directory / "run" / "metrics.jsonl").read_text().splitlines()]


def test_the_config_keys_start_from_a_file_or_draw_n_init_times(tmp_path, blob_file):
    X = h5py.File(blob_file)["X"][()]
    centers = X[[5, 60, 300, 700, 900, 1100]]
    write_centers(tmp_path / "start.h5", centers, name="picked")
    from_file = train_job(tmp_path / "file", blob_file,
                          {"n_clusters": 6, "init_file": f"{tmp_path / 'start.h5'}:picked"})
    assert from_file.returncode == 0, from_file.output
    expected = fit_kmeans(X, 6, SELF, init=centers)
    np.testing.assert_allclose(saved_centers(tmp_path / "file"), expected.centers, rtol=1e-10)
    drawn = train_job(tmp_path / "random", blob_file,
                      {"n_clusters": 6, "init": "random", "n_init": 3})
    assert drawn.returncode == 0, drawn.output
    expected = fit_kmeans(X, 6, SELF, init="random", n_init=3, seed=3)
    np.testing.assert_allclose(saved_centers(tmp_path / "random"), expected.centers,
                               rtol=1e-10)
    done = [r for r in records(tmp_path / "random") if "converged" in r and "of" not in r][-1]
    assert done["initialisation"] == expected.initialisation
    assert {r["initialisation"] for r in records(tmp_path / "random") if "of" in r} == {0, 1, 2}


def test_a_bad_init_file_ends_the_job_with_one_line(tmp_path, blob_file):
    write_centers(tmp_path / "start.h5", np.zeros((6, 3)))
    job = train_job(tmp_path / "bad", blob_file,
                    {"n_clusters": 6, "init_file": str(tmp_path / "start.h5")})
    assert job.returncode == 1, job.output
    assert job.output.strip() == (
        f"mpiml: error: ValueError: kmeans.init_file {tmp_path / 'start.h5'}: data set "
        "'centers' has shape (6, 3); expected (6, 4) (n_clusters x n_features)"), job.output


def test_a_killed_n_init_job_resumes_bit_identically(tmp_path, blob_file):
    """Killed in the second of two fits, resumed from a checkpoint that holds the first fit's
    result as the best so far: the same model, bit for bit, as the job never killed."""
    kmeans = {"n_clusters": 6, "init": "random", "n_init": 2, "max_iter": 5, "tol": 0.0}
    every_two = {"every_steps": 2, "every_seconds": None}
    reference = train_job(tmp_path / "whole", blob_file, kmeans, checkpoint=every_two)
    assert reference.returncode == 0, reference.output
    fits = [r["initialisation"] for r in records(tmp_path / "whole") if "of" in r]
    assert fits == [0] * 5 + [1] * 5  # the kill below falls in the second fit
    killed = train_job(tmp_path / "resumed", blob_file, kmeans, checkpoint=every_two,
                       fault="rank=1,step=9,at=before_allreduce,action=kill")
    assert killed.returncode != 0
    resumed = train_job(tmp_path / "resumed", blob_file, kmeans, checkpoint=every_two)
    assert resumed.returncode == 0, resumed.output
    assert [r["step"] for r in records(tmp_path / "resumed") if r.get("event") == "resume"] == [8]
    assert saved_centers(tmp_path / "resumed").tobytes() == saved_centers(
        tmp_path / "whole").tobytes()


# -- the estimator ------------------------------------------------------------------------------


def test_estimator_from_given_centres_matches_scikit_learn():
    X = blobs()
    init = X[[3, 50, 100, 200, 400]]
    ours = E.KMeans(n_clusters=5, init=init, tol=1e-6, max_iter=100).fit(X)
    reference = KMeans(n_clusters=5, init=init, n_init=1, algorithm="lloyd", tol=1e-6,
                       max_iter=100).fit(X)
    np.testing.assert_allclose(ours.cluster_centers_, reference.cluster_centers_, rtol=1e-6,
                               atol=1e-9)
    assert ours.inertia_ == pytest.approx(reference.inertia_, rel=1e-6)
    assert ours.n_iter_ == reference.n_iter_
    with pytest.warns(RuntimeWarning, match="n_init=3"):
        E.KMeans(n_clusters=5, init=init, n_init=3).fit(X)


def test_estimator_with_given_centres_saves_and_loads(tmp_path):
    X, _ = make_blobs(n_samples=300, centers=3, n_features=4, random_state=2)
    init = X[[0, 100, 200]]
    fitted = E.KMeans(n_clusters=3, init=init).fit(X)
    fitted.save(tmp_path / "kmeans.h5")
    loaded = E.load(tmp_path / "kmeans.h5")
    np.testing.assert_array_equal(loaded.init, init)
    np.testing.assert_array_equal(loaded.predict(X), fitted.predict(X))


@pytest.mark.parametrize("init, fits", [("random", 10), ("k-means++", 1)])
def test_estimator_n_init_auto_is_ten_random_fits_or_one(init, fits):
    X = blobs(k=6)
    ours = E.KMeans(n_clusters=6, init=init, random_state=4).fit(X)
    expected = fit_kmeans(X, 6, SELF, init=init, n_init=fits, seed=4)
    assert np.array_equal(ours.cluster_centers_, expected.centers)
    assert ours.inertia_ == expected.inertia and ours.n_iter_ == expected.n_iter


@pytest.mark.parametrize("estimator, match", [
    (E.KMeans(n_clusters=3, init="farthest"), r"\(init\)"),
    (E.KMeans(n_clusters=3, n_init=0), r"\(n_init\)"),
    (E.KMeans(n_clusters=3, n_init="many"), r"\(n_init\)"),
    (E.KMeans(n_clusters=3, init=np.zeros((2, 5))), r"init centres must have shape \(3, 5\)"),
    (E.KMeans(n_clusters=3, init=[[0.0] * 5] * 2 + [[np.nan] * 5]), "must be finite"),
])
def test_estimator_bad_init_or_n_init_is_named(estimator, match):
    with warnings.catch_warnings(), pytest.raises(ValueError, match=match):
        warnings.simplefilter("ignore", RuntimeWarning)
        estimator.fit(blobs(n=100))
