"""The estimators on p ranks equal the estimators on one rank, inside someone else's program.

Every rank builds the same data set, fits on ITS slice of the rows with ``comm`` and, as the
reference, alone on all rows with ``MPI.COMM_SELF`` in the same job. Shards are uneven (rank r
holds about r + 1 parts). Assertions are collective (``assert_all``), so a rank that fails
cannot leave the others waiting.
"""

import numpy as np
import pytest
from mpi4py import MPI
from mpi_asserts import assert_all
from sklearn.datasets import make_blobs, make_classification, make_regression

import mpiml.estimators as E

pytestmark = pytest.mark.mpi

SELF = MPI.COMM_SELF
TIGHT = dict(tol=1e-12, max_iter=1000)


def uneven_rows(n: int, comm, empty_rank: int | None = None) -> slice:
    """Rank r's rows: about (r + 1) parts of n, in rank order; ``empty_rank`` holds none."""
    weights = np.array([0 if r == empty_rank else r + 1 for r in range(comm.size)], float)
    bounds = np.round(np.concatenate([[0], np.cumsum(weights)]) / weights.sum() * n).astype(int)
    return slice(bounds[comm.rank], bounds[comm.rank + 1])


def classes_data(n_classes=2, n=301, d=6, seed=0):
    X, y = make_classification(n_samples=n, n_features=d, n_informative=4, n_redundant=0,
                               n_classes=n_classes, n_clusters_per_class=1, random_state=seed)
    return X * np.arange(1, d + 1) + 1.0, y


def values_data(n=301, d=6, seed=0):
    return make_regression(n_samples=n, n_features=d, noise=3.0, bias=2.0, random_state=seed)


def both_fits(make, X, y, comm, rows=None):
    """(fitted on this rank's rows with ``comm``, fitted on all rows with COMM_SELF)."""
    rows = uneven_rows(len(X), comm) if rows is None else rows
    local = (X[rows],) if y is None else (X[rows], y[rows])
    every = (X,) if y is None else (X, y)
    return make(comm).fit(*local), make(SELF).fit(*every)


def assert_close(ours, reference, tolerance, what, comm):
    ours, reference = np.asarray(ours, dtype=float), np.asarray(reference, dtype=float)
    scale = max(1.0, float(np.abs(reference).max()))
    error = float(np.abs(ours - reference).max()) / scale if ours.shape == reference.shape \
        else np.inf
    assert_all(error <= tolerance, f"{what}: p ranks vs 1 rank differ by {error:.3g}", comm)


def assert_identical_everywhere(value, what, comm):
    everyone = comm.allgather(np.asarray(value).tobytes())
    assert_all(len(set(everyone)) == 1, f"{what} differs across ranks", comm)


LINEAR_CASES = [
    ("LinearRegression", {}, "values"),
    ("Ridge", {"alpha": 10.0}, "values"),
    ("Lasso", {"alpha": 2.0}, "values"),  # proximal gradient descent (gd)
    ("ElasticNet", {"alpha": 2.0, "l1_ratio": 0.6, "standardize": True}, "values"),
    ("LogisticRegression", {"C": 0.5}, 2),
    ("LogisticRegression", {"C": 0.5, "standardize": True}, 3),
    ("SoftmaxRegression", {"C": 0.5}, 3),
    ("LinearSVC", {"C": 0.05}, 2),
]


@pytest.mark.parametrize("name, params, target", LINEAR_CASES)
def test_linear_models_on_p_ranks_equal_one_rank(comm, name, params, target):
    X, y = values_data() if target == "values" else classes_data(target)
    ours, alone = both_fits(lambda c: E.ESTIMATORS[name](**params, **TIGHT, comm=c), X, y, comm)
    assert_close(ours.coef_, alone.coef_, 1e-8, f"{name} coef_", comm)
    assert_close(ours.intercept_, alone.intercept_, 1e-8, f"{name} intercept_", comm)
    assert_identical_everywhere(ours.coef_, f"{name} coef_", comm)
    rows = uneven_rows(len(X), comm)
    if target == "values":
        assert_close(ours.predict(X), alone.predict(X), 1e-8, f"{name} predictions", comm)
    else:
        assert_all(np.array_equal(ours.predict(X), alone.predict(X)), f"{name} labels", comm)
    score = ours.score(X[rows], y[rows])
    assert_identical_everywhere(score, f"{name} score", comm)
    assert_close(score, alone.score(X, y), 1e-12, f"{name} global score", comm)


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_mlp_on_p_ranks_equals_one_rank(comm, kind):
    X, y = classes_data(3) if kind == "classifier" else values_data()
    estimator = E.MLPClassifier if kind == "classifier" else E.MLPRegressor

    def make(c):
        return estimator(hidden_layer_sizes=(8,), batch_size=64, max_iter=15,
                         n_iter_no_change=None, learning_rate_init=0.01, standardize=True,
                         random_state=3, comm=c)

    ours, alone = both_fits(make, X, y, comm)
    for layer, (weights, reference) in enumerate(zip(ours.coefs_, alone.coefs_, strict=True)):
        assert_close(weights, reference, 1e-8, f"MLP {kind} layer {layer}", comm)
    assert_all(ours.n_iter_ == alone.n_iter_, f"epochs {ours.n_iter_} vs {alone.n_iter_}", comm)


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_boosted_trees_on_p_ranks_are_identical(comm, kind):
    X, y = classes_data(3) if kind == "classifier" else values_data()
    estimator = (E.HistGradientBoostingClassifier if kind == "classifier"
                 else E.HistGradientBoostingRegressor)
    ours, alone = both_fits(lambda c: estimator(max_iter=8, max_depth=4, min_samples_leaf=5,
                                                comm=c), X, y, comm)
    arrays, reference = ours.model_.arrays, alone.model_.arrays
    differ = [name for name in reference if not np.array_equal(arrays[name], reference[name])]
    assert_all(not differ and arrays.keys() == reference.keys(), f"tree arrays differ: {differ}",
               comm)


@pytest.mark.parametrize("batch_size", [None, 40])
def test_kmeans_on_p_ranks_equals_one_rank(comm, batch_size):
    X, _ = make_blobs(n_samples=301, centers=4, n_features=3, random_state=5)
    ours, alone = both_fits(lambda c: E.KMeans(n_clusters=4, batch_size=batch_size,
                                               random_state=2, comm=c), X, None, comm)
    assert_close(ours.cluster_centers_, alone.cluster_centers_, 1e-10, "centres", comm)
    assert_close(ours.inertia_, alone.inertia_, 1e-10, "inertia", comm)
    rows = uneven_rows(len(X), comm)
    assert_all(np.array_equal(ours.labels_, alone.labels_[rows]), "labels_ of this rank", comm)
    assert_close(ours.score(X[rows]), -alone.inertia_, 1e-10, "global score", comm)


def test_a_rank_without_rows_takes_part(comm):
    empty = 1 if comm.size > 1 else None
    X, y = classes_data(2)
    rows = uneven_rows(len(X), comm, empty_rank=empty)
    ours, alone = both_fits(lambda c: E.LogisticRegression(**TIGHT, comm=c), X, y, comm, rows)
    assert_close(ours.coef_, alone.coef_, 1e-8, "coef_ with an empty rank", comm)
    assert_all(np.isfinite(ours.score(X[rows], y[rows])), "score with an empty rank", comm)
    ours, alone = both_fits(lambda c: E.KMeans(n_clusters=3, comm=c), X, None, comm, rows)
    assert_close(ours.cluster_centers_, alone.cluster_centers_, 1e-10, "centres", comm)
    ours, alone = both_fits(lambda c: E.HistGradientBoostingClassifier(max_iter=3, comm=c),
                            X, y, comm, rows)
    assert_all(np.array_equal(ours.model_.arrays["value"], alone.model_.arrays["value"]),
               "trees with an empty rank", comm)


def test_two_groups_fit_different_models_at_once(comm):
    """Split the job in two; each half fits its own model on its own rows at the same time and
    matches its own one-rank reference (a fit that used COMM_WORLD would hang or mix them)."""
    color = comm.rank % 2
    group = comm.Split(color=color, key=comm.rank)
    try:
        if color == 0:
            X, y = classes_data(3, seed=11)
            ours, alone = both_fits(lambda c: E.LogisticRegression(**TIGHT, comm=c), X, y, group)
            ok = np.abs(ours.coef_ - alone.coef_).max() <= 1e-8 * max(1, np.abs(alone.coef_).max())
        else:
            X, _ = make_blobs(n_samples=211, centers=3, n_features=2, random_state=12)
            ours, alone = both_fits(lambda c: E.KMeans(n_clusters=3, comm=c), X, None, group)
            ok = np.allclose(ours.cluster_centers_, alone.cluster_centers_, rtol=1e-10)
        assert_all(ours.comm is group and ok, f"group {color} differs from its reference", comm)
    finally:
        group.Free()


def test_save_and_load_on_every_rank(comm, mpi_tmp_path):
    X, y = classes_data(3)
    rows = uneven_rows(len(X), comm)
    model = E.HistGradientBoostingClassifier(max_iter=5, comm=comm).fit(X[rows], y[rows])
    path = mpi_tmp_path / "model.h5"
    model.save(path)
    assert_all(path.exists(), "the file is complete when save returns", comm)
    loaded = E.load(path, comm=comm)
    assert_all(np.array_equal(loaded.predict_proba(X), model.predict_proba(X))
               and loaded.comm is comm, "loaded model predicts differently", comm)


def expect_error_everywhere(fit, expected: bool, match: str, comm):
    try:
        fit()
        raised = ""
    except ValueError as exc:
        raised = str(exc)
    ok = (match in raised) if expected else raised == ""
    assert_all(ok, f"expected {'an error with ' + repr(match) if expected else 'no error'}; "
                   f"got {raised!r}", comm)


def test_different_feature_counts_raise_on_every_rank(comm):
    X, y = classes_data(2)
    rows = uneven_rows(len(X), comm)
    width = 5 if comm.rank % 2 else 6  # ranks 1, 3 drop a feature
    for estimator in (E.LogisticRegression(comm=comm), E.KMeans(n_clusters=2, comm=comm),
                      E.HistGradientBoostingClassifier(max_iter=2, comm=comm)):
        expect_error_everywhere(lambda e=estimator: e.fit(X[rows, :width], y[rows]),
                                comm.size > 1, "features on rank 1", comm)


def test_bad_rows_on_one_rank_raise_on_every_rank(comm):
    X, y = classes_data(2)
    rows = uneven_rows(len(X), comm)
    X_local = X[rows].copy()
    if comm.rank == comm.size - 1:
        X_local[0, 0] = np.nan
    expect_error_everywhere(lambda: E.LogisticRegression(comm=comm).fit(X_local, y[rows]),
                            True, "NaN", comm)


def test_different_hyperparameters_raise_on_every_rank(comm):
    X, y = classes_data(2)
    rows = uneven_rows(len(X), comm)
    model = E.LogisticRegression(C=1.0 + comm.rank, comm=comm)
    expect_error_everywhere(lambda: model.fit(X[rows], y[rows]), comm.size > 1,
                            "different hyperparameters", comm)


def test_classes_are_agreed_when_a_rank_lacks_one(comm):
    X, y = classes_data(3)
    rows = uneven_rows(len(X), comm)
    X_local, y_local = X[rows], y[rows]
    if comm.size > 1 and comm.rank == 0:
        keep = y_local != 2
        X_local, y_local = X_local[keep], y_local[keep]
    model = E.MLPClassifier(hidden_layer_sizes=(4,), max_iter=3, n_iter_no_change=None,
                            comm=comm).fit(X_local, y_local)
    assert_all(list(model.classes_) == [0, 1, 2] and model.predict_proba(X).shape[1] == 3,
               f"classes_ {model.classes_}", comm)


def test_cross_validation_runs_on_every_rank_with_global_scores(comm):
    """scikit-learn's cross_val_score splits each rank's rows into the same number of folds, so
    every rank makes the same collective fit and score calls; the scores are global."""
    from sklearn.model_selection import cross_val_score

    X, y = classes_data(2)
    rows = uneven_rows(len(X), comm)
    scores = cross_val_score(E.LogisticRegression(comm=comm), X[rows], y[rows], cv=3)
    assert_identical_everywhere(scores, "cross-validation scores", comm)
    assert_all(scores.shape == (3,) and (scores > 0.8).all(), f"scores {scores}", comm)


@pytest.mark.parametrize("make", [
    lambda comm: E.LogisticRegression(reproducible=True, solver="sgd", batch_size=64, max_iter=3,
                                    comm=comm),
    lambda comm: E.MLPClassifier(hidden_layer_sizes=(6,), reproducible=True, batch_size=32,
                               max_iter=2, comm=comm),
    lambda comm: E.KMeans(n_clusters=3, reproducible=True, comm=comm),
], ids=["logistic-sgd", "mlp", "kmeans"])
def test_reproducible_estimators_give_the_same_bits_on_any_rank_count(comm, make):
    from mpiml.data import row_range

    X, y = make_classification(n_samples=1000, n_features=5, random_state=0)
    start, stop = row_range(len(X), comm.rank, comm.size, block_rows=32)
    distributed = make(comm).fit(X[start:stop], y[start:stop])
    alone = make(MPI.COMM_SELF).fit(X, y)
    for name in ("coef_", "cluster_centers_", "coefs_"):
        if hasattr(alone, name):
            got, want = getattr(distributed, name), getattr(alone, name)
            same = (np.asarray(got).tobytes() == np.asarray(want).tobytes()
                    if not isinstance(want, list)
                    else all(a.tobytes() == b.tobytes() for a, b in zip(got, want, strict=True)))
            assert_all(same, f"{name} differs from the 1-rank fit")


@pytest.mark.parametrize("make", [
    lambda comm: E.MLPClassifier(hidden_layer_sizes=(6,), reproducible=True, batch_size=32,
                                 max_iter=40, early_stopping=True, n_iter_no_change=3,
                                 validation_fraction=0.25, comm=comm),
    lambda comm: E.HistGradientBoostingClassifier(max_iter=60, max_depth=3, learning_rate=0.5,
                                                  early_stopping=True, n_iter_no_change=3,
                                                  validation_fraction=0.25, comm=comm),
], ids=["mlp", "boosting"])
def test_early_stopping_holds_out_the_same_rows_on_any_rank_count(comm, make):
    """The validation rows are chosen by global row, so p ranks stop where 1 rank stops and
    end with the same (best) model, to the bit (reproducible mode; trees are always exact)."""
    X, y = make_classification(n_samples=1000, n_features=5, flip_y=0.2, random_state=1)
    rows = uneven_rows(len(X), comm)
    distributed = make(comm).fit(X[rows], y[rows])
    alone = make(MPI.COMM_SELF).fit(X, y)
    assert_all(alone.n_iter_ < alone.max_iter, "the fit did not stop early", comm)
    assert_all(distributed.n_iter_ == alone.n_iter_,
               f"stopped after {distributed.n_iter_}, alone after {alone.n_iter_}", comm)
    probabilities = [fitted.predict_proba(X).tobytes() for fitted in (distributed, alone)]
    assert_all(probabilities[0] == probabilities[1], "the models differ from the 1-rank fit",
               comm)
