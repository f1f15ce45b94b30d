"""Nothing silently wrong with the caller's inputs (issue 16), in one process: every estimator
leaves read-only arrays untouched and refits them to the same bits; labels of mixed types are
refused as scikit-learn refuses them. The MPI cases (label types that differ between ranks, a
failure on rank 0 only) run tests/mpi/test_estimator_inputs_mpi.py under mpiexec, with a timeout
so that a rank left waiting fails the test instead of hanging it."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from launch import ROOT, run_mpi, single_thread_env
from sklearn.datasets import make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression as SklearnLogisticRegression

import mpiml.estimators as E
from mpiml.comm import Reducer
from mpiml.data.run_rows import from_arrays, merge_classes

#: Short fits: these tests are about inputs, not convergence.
FAST = {"MLPClassifier": {"max_iter": 5, "batch_size": 32},
        "MLPRegressor": {"max_iter": 5, "batch_size": 32},
        "HistGradientBoostingClassifier": {"max_iter": 3},
        "HistGradientBoostingRegressor": {"max_iter": 3}, "KMeans": {"n_clusters": 3}}
CLASSIFIERS = ("LogisticRegression", "SoftmaxRegression", "LinearSVC", "MLPClassifier",
               "HistGradientBoostingClassifier")
REGRESSORS = ("LinearRegression", "Ridge", "Lasso", "ElasticNet", "MLPRegressor",
              "HistGradientBoostingRegressor")


def test_every_estimator_is_covered():
    assert set(E.ESTIMATORS) == set(CLASSIFIERS) | set(REGRESSORS) | {"KMeans"}


def estimator(name):
    """``name`` with short fits, standardising wherever it can (the step that scales rows)."""
    params = dict(FAST.get(name, {}))
    if "standardize" in E.ESTIMATORS[name]().get_params():
        params["standardize"] = True
    return E.ESTIMATORS[name](**params)


def read_only(matrix):
    """``matrix`` (dense or CSR) with every array it owns made read-only."""
    arrays = (matrix.data, matrix.indices, matrix.indptr) if sp.issparse(matrix) else (matrix,)
    for array in arrays:
        array.flags.writeable = False
    return matrix


def owned_arrays(matrix) -> list[np.ndarray]:
    return [matrix.data, matrix.indices, matrix.indptr] if sp.issparse(matrix) else [matrix]


def sparse_problem(name):
    """(X, y) with zeros, unscaled and uncentred columns, and y for ``name``'s task."""
    X, labels = make_classification(n_samples=120, n_features=5, n_informative=3, n_redundant=0,
                                    n_classes=2 if name == "LinearSVC" else 3,
                                    n_clusters_per_class=1, random_state=0)
    X = np.where(X > 0, X, 0.0) * np.arange(1, 6) * 10.0 + np.where(X > 0, 3.0, 0.0)
    if name in CLASSIFIERS:
        return X, labels
    return X, None if name == "KMeans" else X @ np.arange(1.0, 6.0) + 2.0


def fitted_outputs(model, X) -> list[np.ndarray]:
    """Everything a fitted estimator says about ``X``: its fitted arrays and its predictions."""
    outputs = [np.asarray(array) for array in model.model_.arrays.values()]
    for method in ("predict", "predict_proba", "decision_function", "transform"):
        if hasattr(model, method):
            outputs.append(np.asarray(getattr(model, method)(X)))
    return outputs


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("layout", ["dense", "csr", "csr-writeable"])
@pytest.mark.parametrize("name", sorted(E.ESTIMATORS))
def test_inputs_are_never_modified_and_refit_to_the_same_bits(name, layout):
    """Read-only arrays: a write raises. Writeable CSR: a write would change the bits compared
    below, and the second fit (issue 16: scaled in place, refits gave other coefficients)."""
    X, y = sparse_problem(name)
    X = X if layout == "dense" else sp.csr_matrix(X)
    if layout != "csr-writeable":
        X, y = read_only(X), None if y is None else read_only(y)
    before = [array.copy() for array in owned_arrays(X)] + ([] if y is None else [y.copy()])
    runs = []
    for _ in range(2):
        model = estimator(name).fit(X, y)
        runs.append(fitted_outputs(model, X))
        model.score(X, y)
    after = owned_arrays(X) + ([] if y is None else [y])
    assert all(np.array_equal(a, b) and a.dtype == b.dtype
               for a, b in zip(before, after, strict=True)), "the caller's arrays changed"
    assert all(np.array_equal(a, b) for a, b in zip(*runs, strict=True)), "the refit differs"


@pytest.mark.parametrize("labels", [["a", 1, "a", 1, "b", 2], [1, "a", 1, "a", 2, "b"],
                                    ["a", 1, *np.arange(22)]],
                         ids=["text-first", "number-first", "text-first-numpy"])
@pytest.mark.parametrize("name", CLASSIFIERS)
def test_labels_mixing_text_and_numbers_on_one_rank_raise_as_in_scikit_learn(name, labels):
    """The same error and message; numpy's UFuncTypeError (long arrays of numpy numbers) as a
    plain TypeError, which raise_together can rebuild (it became a CollectiveError)."""
    X = np.random.default_rng(0).normal(size=(len(labels), 2))
    y = np.array(labels, dtype=object)
    with pytest.raises((TypeError, ValueError)) as theirs:
        SklearnLogisticRegression().fit(X, y)
    expected = TypeError if issubclass(theirs.type, TypeError) else theirs.type
    with pytest.raises(expected, match=re.escape(str(theirs.value))):
        E.ESTIMATORS[name](**FAST.get(name, {})).fit(X, y)


def test_from_arrays_refuses_labels_mixing_text_and_numbers():
    X = np.zeros((4, 2))
    with pytest.raises(TypeError, match="not supported between"):
        from_arrays(X, np.array(["a", 1, "b", 2], dtype=object), Reducer(), "multiclass")


def test_class_merge_names_the_ranks_and_types_of_mixed_labels():
    with pytest.raises(ValueError, match=r"Mix of label input types \(string and number\)") \
            as raised:
        merge_classes([np.array([0, 1]), np.array(["no", "yes"]), np.array([]),
                       np.array([1, 2])])
    assert "int64 labels on ranks 0, 3" in str(raised.value)
    assert "<U3 labels on rank 1" in str(raised.value)
    assert list(merge_classes([np.array([0, 1]), np.array([1.0, 2.5])])) == [0.0, 1.0, 2.5]


def test_empty_ranks_do_not_change_the_type_of_the_classes():
    classes = merge_classes([np.array(["a", "b"]), np.array([], dtype=np.float64)])
    assert classes.dtype.kind == "U" and list(classes) == ["a", "b"]
    classes = merge_classes([np.array([], dtype=np.float64), np.array([3, 7])])
    assert classes.dtype == np.int64 and list(classes) == [3, 7]


def test_a_convergence_warning_still_warns_once():
    X, y = make_classification(n_samples=60, n_features=4, random_state=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        E.LogisticRegression(max_iter=1).fit(X, y)
    assert [w.category for w in caught] == [ConvergenceWarning]
    assert caught[0].filename == __file__, "the warning points at the caller of fit"


@pytest.mark.parametrize("nprocs", [2, 3])
def test_inputs_and_rank_zero_steps_end_alike_on_every_rank_under_mpiexec(nprocs):
    program = ROOT / "tests" / "mpi" / "test_estimator_inputs_mpi.py"
    job = run_mpi(nprocs, ["-m", "pytest", "--with-mpi", "--fail-on-skip", "-q", "--color=no",
                           "-p", "no:cacheprovider", "-o", "addopts=", str(program)],
                  timeout=300, env=single_thread_env())
    assert not job.timed_out, f"a rank was left waiting ({job.seconds:.0f}s):\n" \
                              f"{job.output[-6000:]}"
    assert job.returncode == 0, job.output[-6000:]
